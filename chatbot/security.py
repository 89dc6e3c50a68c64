"""The secret key and the proxy header, checked when the settings load (docs/settings.md).

Imported by chatbot/settings.py: nothing here may read Django's settings.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# The value earlier releases shipped as the default: public, so never a key.
KNOWN_INSECURE_KEYS = frozenset({"insecure-local-only-change-me"})
MIN_KEY_LENGTH = 50
MIN_KEY_CHARACTERS = 5
HOW_TO_SET = (
    "set SECRET_KEY to 50 or more random characters, e.g. "
    "SECRET_KEY=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')\", "
    "or leave it unset to use a key generated once into SECRET_KEY_FILE"
)


def secret_key_problem(key: str) -> str | None:
    """Why Django would not accept ``key`` outside debug mode (the rules of its security.W009)."""
    if key in KNOWN_INSECURE_KEYS or key.startswith("django-insecure-"):
        return "a publicly known value"
    if len(key) < MIN_KEY_LENGTH:
        return f"{len(key)} characters long (fewer than {MIN_KEY_LENGTH})"
    if len(set(key)) < MIN_KEY_CHARACTERS:
        return f"made of fewer than {MIN_KEY_CHARACTERS} different characters"
    return None


def secret_key_generate(*, path: Path) -> None:
    """Write a fresh random key to ``path`` (0600) unless one is there; safe against a race with
    other processes starting at the same moment: the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(MIN_KEY_LENGTH) + "\n")
        os.link(draft, path)
    except FileExistsError:  # another process was first: its key stands
        pass
    finally:
        draft.unlink(missing_ok=True)


def secret_key_load(*, configured: str | None, path: Path, debug: bool) -> str:
    """SECRET_KEY from the environment when set, else the key in ``path`` (made on first start).
    Outside debug mode a weak or well-known key refuses to start."""
    if configured is not None:
        key, origin = configured, "SECRET_KEY"
    else:
        try:
            if not path.exists():
                secret_key_generate(path=path)
            key, origin = path.read_text().strip(), f"the key in {path}"
        except OSError as error:
            problem = f"SECRET_KEY is not set and {path} cannot be used ({error})"
            raise ImproperlyConfigured(f"{problem}: {HOW_TO_SET}") from error
    problem = None if debug else secret_key_problem(key)
    if problem:
        raise ImproperlyConfigured(f"{origin} is {problem}, refused with DEBUG off: {HOW_TO_SET}")
    return key


def proxy_ssl_header_parse(value: str) -> tuple[str, str] | None:
    """``HTTP_X_FORWARDED_PROTO,https`` -> Django's (header, value) pair; empty -> None."""
    if not value.strip():
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 2 or not parts[0].startswith("HTTP_") or not parts[1]:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={value!r}: expected the request.META name of the header and the value "
            "that means https, e.g. HTTP_X_FORWARDED_PROTO,https"
        )
    return parts[0], parts[1]
