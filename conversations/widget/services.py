"""The widget's writes: sites and their secrets, the signed token of a widget's customer, the
customer a host page vouches for (identity verification), and what a customer says about themselves."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from .. import events
from ..errors import ChatError
from ..models import Conversation, Customer, WidgetSite, token_nonce_new
from .models import identity_secret_new

TOKEN_SALT = "widget-customer"
NAME_MAX = 120
EXTERNAL_ID_MAX = 200
PAGE_URL_MAX = 2000
USER_AGENT_MAX = 400


class IdentityRefused(Exception):
    """The host page's user id and hash do not match: nothing is created."""


def site_delete(*, site: WidgetSite) -> None:
    """The site gone: its snippet stops loading and its tokens stop opening sockets (a token names
    its site). Its customers and their conversations stay, for the inbox and for training."""
    site.delete()


def site_secret_regenerate(*, site: WidgetSite) -> WidgetSite:
    """A new identity secret: hashes made with the old one no longer verify (the host's server
    must sign with the new one); tokens already given out stay valid."""
    site.identity_secret = identity_secret_new()
    site.save(update_fields=["identity_secret", "updated_at"])
    return site


def customer_token(*, customer: Customer) -> str:
    """The widget's proof of being ``customer``: signed with SECRET_KEY, naming the customer, its
    site and its current nonce (so ``customer_tokens_revoke`` ends every token at once)."""
    payload = {"c": str(customer.id), "s": customer.site_id, "n": customer.token_nonce}
    return signing.dumps(payload, salt=TOKEN_SALT, compress=False)


def customer_of_token(token: str) -> Customer | None:
    """The customer a token names, or None for a forged, malformed or revoked one, a deleted
    customer, or a site that is gone."""
    try:
        payload = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("n"), str) or not isinstance(payload.get("c"), str):
        return None
    if not isinstance(payload.get("s"), int):
        return None
    try:
        customer = Customer.objects.filter(id=payload["c"], site_id=payload["s"]).first()
    except (ValidationError, ValueError, TypeError):
        return None
    if customer is None or not hmac.compare_digest(customer.token_nonce, payload["n"]):
        return None
    return customer


def customer_tokens_revoke(*, customer_id: Any) -> int:
    """Every token given out for the customer stops working, and their open widget sockets close
    (4401) once this commits: a stolen token gets nothing more. An anonymous customer's next visit
    starts afresh; a verified one (identity verification) gets a new token for the same customer.
    Returns how many customers it changed (0: unknown)."""
    changed = Customer.objects.filter(id=customer_id).update(token_nonce=token_nonce_new())
    if changed:
        events.send_on_commit(events.customer_signed_out(customer_id))
    return changed


def identity_hash(*, secret: str, user_id: str) -> str:
    """What the host's server computes: hex HMAC-SHA256 of the user id under the site's secret."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def identity_check(*, site: WidgetSite, user_id: str, user_hash: str) -> None:
    if not user_id or len(user_id) > EXTERNAL_ID_MAX:
        raise IdentityRefused(f"data-user-id must be 1 to {EXTERNAL_ID_MAX} characters.")
    expected = identity_hash(secret=site.identity_secret, user_id=user_id)
    if not hmac.compare_digest(expected, user_hash.strip().lower()):
        raise IdentityRefused(
            "data-user-hash does not match data-user-id: sign the user id with this site's identity "
            "secret (hex HMAC-SHA256; docs/widget.md)."
        )


def widget_customer_create(*, site: WidgetSite, address: str | None) -> Customer:
    """A new anonymous customer of ``site``."""
    return Customer.objects.create(site=site, address=address)


def verified_customer_get_or_create(
    *, site: WidgetSite, user_id: str, user_hash: str, name: str = "", email: str = "", address: str | None
) -> tuple[Customer, bool]:
    """The customer the host page vouches for (created once per site and user id), with the name
    and e-mail it passed when they are valid. IdentityRefused, creating nothing, on a wrong hash."""
    identity_check(site=site, user_id=user_id, user_hash=user_hash)
    profile = _valid_profile(name, email)
    customer = Customer.objects.filter(site=site, external_id=user_id).first()
    created = False
    if customer is None:
        try:
            with transaction.atomic():
                customer = Customer.objects.create(site=site, external_id=user_id, address=address, **profile)
                created = True
        except IntegrityError:  # two first visits at once: the other one made it
            customer = Customer.objects.get(site=site, external_id=user_id)
    if not created and profile:
        for field, value in profile.items():
            setattr(customer, field, value)
        customer.save(update_fields=list(profile))
    return customer, created


def _valid_profile(name: str, email: str) -> dict[str, str]:
    """The host page's name and e-mail, each kept only when valid (a bad one is dropped, not fatal)."""
    profile = {}
    if isinstance(name, str) and name.strip():
        profile["display_name"] = name.strip()[:NAME_MAX]
    if isinstance(email, str) and email.strip():
        try:
            validate_email(email.strip())
            profile["email"] = email.strip()
        except ValidationError:
            pass
    return profile


def customer_profile_set(*, customer: Customer, name: object, email: object) -> Customer:
    """What the customer typed in the pre-chat form. ChatError on a name too long or a bad e-mail."""
    if not isinstance(name, str) or not isinstance(email, str):
        raise ChatError("invalid_profile", "A profile frame carries a name and an e-mail, both strings.")
    name, email = name.strip(), email.strip()
    if len(name) > NAME_MAX:
        raise ChatError("invalid_name", f"A name can be at most {NAME_MAX} characters.")
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ChatError("invalid_email", "That e-mail address does not look right.") from None
    Customer.objects.filter(id=customer.id).update(display_name=name, email=email)
    customer.display_name, customer.email = name, email
    return customer


def page_url_clean(value: object) -> str:
    """An http(s) URL of at most PAGE_URL_MAX characters, else empty: it is shown to agents as a link."""
    if not isinstance(value, str) or not value or len(value) > PAGE_URL_MAX:
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return value


def conversation_context_set(*, conversation: Conversation, page_url: str, user_agent: str) -> None:
    """Where the customer chats from, as they open or start the conversation (written when it changed)."""
    fields = {"page_url": page_url_clean(page_url), "user_agent": user_agent[:USER_AGENT_MAX]}
    if not fields["page_url"]:
        del fields["page_url"]  # a socket without a page (the page at /) keeps what the widget said
    changed = {k: v for k, v in fields.items() if getattr(conversation, k) != v}
    if changed:
        Conversation.objects.filter(id=conversation.id).update(**changed)
        for field, value in changed.items():
            setattr(conversation, field, value)


def verified_customer_exists(*, site: WidgetSite, user_id: str) -> bool:
    return Customer.objects.filter(site=site, external_id=user_id).exists()
