"""The events a write sends, captured after its commit (zulip's ``capture_send_event_calls``).

``capture_events`` runs the write's on-commit callbacks when the block ends, and records what
they hand to the channel layer instead of sending it, so a test asserts the exact recipients of
each frame: the conversation's group (its customer and the agents watching it) or the agents'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from conversations import events


@dataclass
class Sent:
    events: list[events.Event] = field(default_factory=list)

    def frames(self) -> list[tuple[str, str]]:
        """(recipient, frame type) of each event, in order; the recipient is ``agents`` or
        ``conversation`` (the conversation's group)."""
        return [(_recipient(e), e.payload["type"]) for e in self.events]

    def to_conversation(self) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.group != events.AGENTS_GROUP]

    def to_agents(self) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.group == events.AGENTS_GROUP]

    def groups(self) -> set[str]:
        return {e.group for e in self.events}


def _recipient(event: events.Event) -> str:
    return "agents" if event.group == events.AGENTS_GROUP else "conversation"


CaptureEvents = Callable[[], AbstractContextManager[Sent]]


@pytest.fixture
def capture_events(monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any) -> CaptureEvents:
    @contextmanager
    def capture() -> Iterator[Sent]:
        sent = Sent()

        def record(batch: Sequence[events.Event]) -> None:
            sent.events.extend(events.as_sent(batch))

        monkeypatch.setattr(events, "deliver", record)
        with django_capture_on_commit_callbacks(execute=True):
            yield sent
            assert sent.events == [], "an event was sent before its write committed"

    return capture
