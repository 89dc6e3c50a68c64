"""Origins as the browser sends them (``scheme://host[:port]``): parsed, checked, normalised."""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidOrigin(ValueError):
    pass


def origin_normalise(text: str) -> str:
    """``text`` as a browser's Origin header spells it: lower case, no default port, no path.
    InvalidOrigin, saying why, for anything that is not an http(s) origin."""
    value = text.strip()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidOrigin(f"{value!r} is not an origin: write scheme://host[:port].") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidOrigin(f"{value!r}: an origin starts with http:// or https://.")
    if not parts.hostname or "*" in parts.netloc:
        raise InvalidOrigin(f"{value!r} names no host (wildcards are not allowed).")
    if parts.username or parts.password:
        raise InvalidOrigin(f"{value!r}: an origin carries no user name or password.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidOrigin(f"{value!r}: an origin has no path, query or fragment: write scheme://host[:port].")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origins_parse(text: str) -> list[str]:
    """One origin a line (or comma-separated), normalised, duplicates dropped, order kept."""
    found: list[str] = []
    for item in text.replace(",", "\n").splitlines():
        if item.strip():
            origin = origin_normalise(item)
            if origin not in found:
                found.append(origin)
    return found


def origin_or_none(text: str) -> str | None:
    try:
        return origin_normalise(text)
    except InvalidOrigin:
        return None
