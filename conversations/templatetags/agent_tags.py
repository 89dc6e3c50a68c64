from __future__ import annotations

from typing import Any

from django import template

from conversations import roles

register = template.Library()


@register.filter
def agent_name(user: Any) -> str:
    """The name customers see for an agent; empty when there is none."""
    return roles.display_name(user)
