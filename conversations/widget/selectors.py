"""The widget's reads: which origins may embed a site, the chat page's config, suggested questions."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.cache import cache

from ..knowledge.models import KnowledgeEntry
from ..knowledge.selectors import grounding_entry_ids
from ..models import Conversation, Customer, Message, WidgetSite
from .origins import origin_or_none

log = logging.getLogger(__name__)

DEFAULT_TITLE = "Support"
DEFAULT_BRAND = "#2563eb"
SUGGESTIONS_MAX = 4
SUGGESTIONS_RECENT_REPLIES = 2000  # the bot replies counted: the newest this many with a grounding
# Every chat page and widget frame shows them: counted once a minute per process, not per view.
SUGGESTIONS_CACHE_S = 60
SUGGESTIONS_CACHE_KEY = "chat:suggested-questions"


def site_by_key(key: str) -> WidgetSite | None:
    return WidgetSite.objects.filter(key=key).first()


def deployment_origins() -> list[str]:
    """WIDGET_ALLOWED_ORIGINS, normalised; an entry that is no origin is left out, with a warning."""
    found = []
    for item in settings.WIDGET_ALLOWED_ORIGINS:
        origin = origin_or_none(item)
        if origin is None:
            log.warning("WIDGET_ALLOWED_ORIGINS: %r is not an origin (scheme://host[:port]); ignored", item)
        elif origin not in found:
            found.append(origin)
    return found


def site_origins(site: WidgetSite) -> list[str]:
    """The origins allowed to frame the site's chat: its own list and the deployment's."""
    return list(dict.fromkeys([*site.allowed_origins, *deployment_origins()]))


def suggested_questions(limit: int = SUGGESTIONS_MAX) -> list[str]:
    """The questions of the approved, unconflicted knowledge entries the newest grounded bot
    replies rested on most, most used first."""
    groundings = (
        Message.objects.filter(role=Message.Role.BOT)
        .exclude(grounding=[])
        .order_by("-id")
        .values_list("grounding", flat=True)[:SUGGESTIONS_RECENT_REPLIES]
    )
    uses: Counter[int] = Counter()
    for grounding in groundings:
        uses.update(grounding_entry_ids(grounding))
    if not uses:
        return []
    servable = dict(
        KnowledgeEntry.objects.filter(id__in=uses, status=KnowledgeEntry.Status.APPROVED, conflict=False).values_list(
            "id", "question"
        )
    )
    ranked = sorted(servable, key=lambda entry_id: (-uses[entry_id], entry_id))
    return [servable[entry_id] for entry_id in ranked[:limit]]


def suggestions_shown() -> list[str]:
    """``suggested_questions`` as the pages show them: from this process's cache, at most a minute old."""
    shown = cache.get_or_set(SUGGESTIONS_CACHE_KEY, suggested_questions, SUGGESTIONS_CACHE_S)
    return list(shown or [])


def chat_config(site: WidgetSite | None) -> dict[str, Any]:
    """What the chat page renders as #chat-config (docs/widget.md): the site's look and behaviour,
    or the standalone page's defaults for ``None``."""
    if site is None:
        return {
            "title": DEFAULT_TITLE,
            "greeting": "",
            "brand_colour": DEFAULT_BRAND,
            "position": WidgetSite.Position.RIGHT.value,
            "prechat": False,
            "prechat_required": False,
            "suggestions": suggestions_shown() if settings.CHAT_SUGGESTIONS else [],
            "widget": False,
        }
    return {
        "title": site.title or DEFAULT_TITLE,
        "greeting": site.greeting,
        "brand_colour": site.brand_colour,
        "position": site.position,
        "prechat": site.prechat != WidgetSite.Prechat.OFF,
        "prechat_required": site.prechat == WidgetSite.Prechat.REQUIRED,
        "suggestions": suggestions_shown() if site.suggestions else [],
        "widget": True,
    }


def loader_config(site: WidgetSite, *, own_origin: str) -> dict[str, Any]:
    """What /widget/<key>/config gives the loader and the frame: the launcher's look and the
    origins the frame may talk to (the site's, the deployment's, and ours for the preview)."""
    return {
        "title": site.title or DEFAULT_TITLE,
        "brand_colour": site.brand_colour,
        "position": site.position,
        "origins": [*site_origins(site), own_origin],
    }


def customer_profile(customer_id: Any) -> dict[str, str]:
    """The customer's name and e-mail as the history frame carries them (the pre-chat form is
    not shown again once they are known)."""
    row = Customer.objects.filter(id=customer_id).values_list("display_name", "email").first()
    name, email = row if row is not None else ("", "")
    return {"name": name, "email": email}


BROWSERS = [  # (what the User-Agent says, what to call it); the first match wins, order matters
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
]
SYSTEMS = [
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
]


def browser_summary(user_agent: str) -> str:
    """ "Chrome on Android" from a User-Agent; the raw string's start when nothing is recognised."""
    if not user_agent:
        return ""
    browser = next((name for mark, name in BROWSERS if mark in user_agent), "")
    system = next((name for mark, name in SYSTEMS if mark in user_agent), "")
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or user_agent[:80]


def conversation_origin(conversation: Conversation) -> dict[str, str]:
    """Where a conversation is held from, for the agents: the host page and the browser."""
    return {
        "page_url": conversation.page_url,
        "browser": browser_summary(conversation.user_agent),
        "user_agent": conversation.user_agent,
    }
