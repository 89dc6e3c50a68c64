from __future__ import annotations

from typing import Any

from django import template

from conversations import roles

register = template.Library()


@register.filter
def agent_name(user: Any) -> str:
    """The name customers see for an agent; empty when there is none."""
    return roles.display_name(user)


@register.simple_tag
def assign_agents() -> list[Any]:
    """The agents a conversation can be assigned to (the transcript header's select)."""
    from conversations.workspace import selectors

    return selectors.agents_to_assign()
