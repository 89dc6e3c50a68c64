"""events.for_customer: the second lock between agent-only data and a customer's socket."""

from __future__ import annotations

from conversations import events


def test_it_passes_the_customer_frames_unchanged() -> None:
    message = events.message_event({"id": 1, "role": "agent", "text": "Hi", "author": "Dana", "status": "complete"})
    assert events.for_customer(message) == message
    delta = events.delta_event(1, 0, "Hel")
    assert events.for_customer(delta) == delta


def test_it_drops_frames_of_any_other_type() -> None:
    for frame in (
        {"type": "review", "note": "secret"},
        {"type": "inbox", "conversation": {"id": "x"}, "alert": True},
        {"type": "hello", "agent": "Dana"},
        {"no": "type"},
    ):
        assert events.for_customer(frame) is None


def test_it_strips_unknown_keys_at_every_level() -> None:
    frame = events.status_event({"id": "c", "status": "agent", "agent": "Dana", "note": "secret", "tags": ["vip"]})
    frame["correction"] = "secret"
    assert events.for_customer(frame) == {
        "type": "status",
        "conversation": {"id": "c", "status": "agent", "agent": "Dana"},
    }
    message = events.message_event({"id": 1, "role": "bot", "text": "Hi", "correction": "secret", "feedback": []})
    assert events.for_customer(message) == {"type": "message", "message": {"id": 1, "role": "bot", "text": "Hi"}}


def test_it_passes_the_system_lines_that_say_who_joined_or_left() -> None:
    line = {"id": 1, "role": "system", "text": "Dana joined the conversation.", "model_version": "v-secret"}
    assert events.for_customer(events.message_event(line)) == {
        "type": "message",
        "message": {"id": 1, "role": "system", "text": "Dana joined the conversation."},
    }
