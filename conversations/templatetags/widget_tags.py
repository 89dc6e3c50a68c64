"""What the agents' pages show of where a customer chats from (the widget's host page, the browser)."""

from __future__ import annotations

from typing import Any

from django import template

from ..widget import selectors

register = template.Library()


@register.filter
def chat_origin(conversation: Any) -> dict[str, str]:
    return selectors.conversation_origin(conversation)
