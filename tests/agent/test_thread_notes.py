"""Private notes between agents and the activity lines of the thread: who may write a note, where
its frame goes (the agents' group, never a customer's socket), that nothing which learns or
answers ever reads one, and the order the transcript shows them in with the messages."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from django.utils import timezone

from conversations import events, transcripts
from conversations.chat import services as chat_services
from conversations.errors import ChatError
from conversations.inference.fake import WordTokenizer
from conversations.models import Conversation, ConversationEvent, ConversationNote, Message
from conversations.prompts import prompt_for
from conversations.workspace import services as workspace_services
from conversations.workspace import thread
from finetuning.datasets import BuildOptions, collect_candidates
from tests.capture import CaptureEvents
from tests.sockets import open_agent, open_chat, receive_until

from .conftest import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]

SECRET = "Customer is a known chargeback abuser, check ID 4471"


def note_url(conversation: Conversation) -> str:
    return f"/agent/conversations/{conversation.id}/notes"


def test_it_stores_a_note_with_its_author_and_tells_only_the_agents(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        note = thread.note_add(conversation=conversation, author=agent_user, text=f"  {SECRET}\n")
    assert (note.text, note.author, note.conversation) == (SECRET, agent_user, conversation)
    assert sent.frames() == [("agents", "note")]
    assert sent.groups() == {events.AGENTS_GROUP}
    [frame] = sent.to_agents()
    assert frame == {
        "type": "note",
        "conversation_id": str(conversation.id),
        "note": {"id": note.id, "author": "Dana", "text": SECRET, "created_at": note.created_at.isoformat()},
    }


def test_a_customers_socket_would_drop_a_note_frame_even_sent_the_wrong_way(
    conversation: Conversation, agent_user: Any
) -> None:
    note = thread.note_add(conversation=conversation, author=agent_user, text=SECRET)
    assert events.for_customer(thread.note_event(note)) is None
    disguised = events.for_customer({**thread.note_event(note), "type": "message"})
    assert "chargeback" not in json.dumps(disguised)  # a note's keys are not a customer's


@pytest.mark.django_db(transaction=True)
async def test_a_note_reaches_the_agents_sockets_and_never_the_customers(
    customer: Any, agent_user: Any, second_agent: Any
) -> None:
    chat, history = await open_chat(customer)
    conversation_id = history["conversation"]["id"]
    watching, elsewhere = await open_agent(agent_user), await open_agent(second_agent)
    await watching.send_json_to({"type": "watch", "conversation_id": conversation_id})
    await receive_until(watching, "history")
    conversation = await database_sync_to_async(Conversation.objects.get)(id=conversation_id)
    await database_sync_to_async(thread.note_add)(conversation=conversation, author=agent_user, text=SECRET)
    for agent in (watching, elsewhere):  # the inbox page's socket hears it too: the agents' group
        [*_, frame] = await receive_until(agent, "note")
        assert (frame["conversation_id"], frame["note"]["text"]) == (conversation_id, SECRET)
    # Something the customer does hear, sent after the note: everything before it is on their socket.
    await watching.send_json_to({"type": "takeover", "conversation_id": conversation_id})
    heard = await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "system")
    assert all(f["type"] != "note" for f in heard)
    assert "chargeback" not in json.dumps(heard)
    for socket in (chat, watching, elsewhere):
        await socket.disconnect()


def test_it_refuses_an_empty_note(conversation: Conversation, agent_user: Any) -> None:
    for text in ("", "   \n", None, 42):
        with pytest.raises(ChatError) as refused:
            thread.note_add(conversation=conversation, author=agent_user, text=text)
        assert refused.value.code == "empty_note"
    assert not ConversationNote.objects.exists()


def test_it_refuses_a_note_over_four_times_the_message_limit(conversation: Conversation, agent_user: Any) -> None:
    limit = settings.CHAT_MAX_MESSAGE_CHARS * 4
    thread.note_add(conversation=conversation, author=agent_user, text="x" * limit)
    with pytest.raises(ChatError) as refused:
        thread.note_add(conversation=conversation, author=agent_user, text="x" * (limit + 1))
    assert refused.value.code == "note_too_long"
    assert str(limit) in refused.value.detail
    assert ConversationNote.objects.count() == 1


def test_the_endpoint_answers_the_note_as_json(
    agent_client: Client, conversation: Conversation, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        response = agent_client.post(note_url(conversation), {"text": SECRET}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    answer = response.json()
    assert answer["ok"] is True
    assert (answer["note"]["text"], answer["note"]["author"]) == (SECRET, "Dana")
    assert sent.frames() == [("agents", "note")]


def test_the_endpoint_refuses_an_empty_note_with_a_reason(agent_client: Client, conversation: Conversation) -> None:
    response = agent_client.post(note_url(conversation), {"text": " "}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response.json() == {"ok": False, "code": "empty_note", "detail": "Write the note first."}


def test_a_plain_form_post_goes_back_to_the_note_in_the_transcript(
    agent_client: Client, conversation: Conversation
) -> None:
    response = agent_client.post(note_url(conversation), {"text": SECRET})
    note = ConversationNote.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/agent/conversations/{conversation.id}/#note-{note.id}"


def test_the_endpoint_gives_the_threads_notes_and_shown_activity_for_a_page_that_was_offline(
    agent_client: Client, conversation: Conversation, agent_user: Any
) -> None:
    asked = ConversationEvent.objects.create(conversation=conversation, kind="handoff_requested")
    ConversationEvent.objects.create(conversation=conversation, kind="taken_over", actor=agent_user)  # a system line
    note = thread.note_add(conversation=conversation, author=agent_user, text=SECRET)
    answer = agent_client.get(note_url(conversation)).json()
    assert answer["ok"] is True
    assert answer["notes"] == [thread.note_payload(note)]
    assert [(e["id"], e["kind"]) for e in answer["activity"]] == [(asked.id, "handoff_requested")]


def test_a_non_agent_cannot_write_a_note(plain_user: Any, conversation: Conversation) -> None:
    client = Client()
    client.force_login(plain_user)
    assert client.post(note_url(conversation), {"text": SECRET}).status_code == 403
    assert Client().post(note_url(conversation), {"text": SECRET}).status_code == 302  # to the login
    assert not ConversationNote.objects.exists()


def test_a_note_never_reaches_a_prompt(conversation: Conversation, agent_user: Any) -> None:
    add_messages(conversation, ("customer", "Can I return this?"), ("bot", "Yes, within 30 days."), status="complete")
    thread.note_add(conversation=conversation, author=agent_user, text=SECRET)
    question = Message.objects.create(conversation=conversation, role="customer", text="And shipping?")
    pending = Message.objects.create(conversation=conversation, role="bot", status="pending")
    tokenizer = WordTokenizer()
    ids = prompt_for(pending, tokenizer, max_new_tokens=16)
    chat = tokenizer.chats[tuple(ids)]
    said = json.dumps(chat)
    assert question.text in said and "within 30 days" in said  # the prompt does read the history
    assert "chargeback" not in said


def test_a_note_never_reaches_a_dataset(customer: Any, agent_user: Any) -> None:
    conversation = Conversation.objects.create(customer=customer, reviewed=True)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    add_messages(conversation, ("customer", "Where is my parcel?"), status="complete")
    thread.note_add(conversation=conversation, author=agent_user, text=SECRET)
    workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="It left today.")
    candidates, _, used = collect_candidates(BuildOptions(system_prompt="You help."))
    assert used == 1 and [c.reply for c in candidates] == ["It left today."]  # the agent's reply is learnt
    learnt = json.dumps([[c.reply, [t.text for t in c.history]] for c in candidates])
    assert "chargeback" not in learnt


def test_a_note_is_not_in_a_transcript_export(conversation: Conversation, agent_user: Any) -> None:
    add_messages(conversation, ("customer", "hello"), ("bot", "Hi!"), status="complete")
    thread.note_add(conversation=conversation, author=agent_user, text=SECRET)
    queryset = transcripts.export_queryset(Conversation.objects.filter(id=conversation.id))
    exported = "".join(transcripts.export_jsonl(queryset)) + "".join(transcripts.export_csv(queryset))
    assert "hello" in exported
    assert "chargeback" not in exported


def test_the_thread_puts_notes_and_activity_in_time_order_with_the_messages(
    conversation: Conversation, agent_user: Any, second_agent: Any
) -> None:
    start = timezone.now() - timedelta(minutes=10)
    at = [start + timedelta(minutes=i) for i in range(6)]
    question, reply = add_messages(conversation, ("customer", "q"), ("bot", "a"))
    note = ConversationNote.objects.create(conversation=conversation, author=agent_user, text="looks odd")
    asked = ConversationEvent.objects.create(conversation=conversation, kind="handoff_requested")
    taken = ConversationEvent.objects.create(conversation=conversation, kind="taken_over", actor=agent_user)
    assigned = ConversationEvent.objects.create(
        conversation=conversation, kind="assigned", actor=agent_user, assignee=second_agent
    )
    Message.objects.filter(id=question.id).update(created_at=at[0])
    Message.objects.filter(id=reply.id).update(created_at=at[1])
    ConversationEvent.objects.filter(id=asked.id).update(created_at=at[2])
    ConversationEvent.objects.filter(id=taken.id).update(created_at=at[2])
    ConversationNote.objects.filter(id=note.id).update(created_at=at[3])
    ConversationEvent.objects.filter(id=assigned.id).update(created_at=at[4])
    rows = [{"message": m} for m in conversation.messages.order_by("created_at", "id")]
    notes, activity = thread.thread_extras(conversation)
    items = thread.thread(rows, notes, activity)
    shown = [(i.kind, i.text or (i.note.text if i.note else i.message["message"].text)) for i in items]  # type: ignore[index]
    assert shown == [
        ("message", "q"),
        ("message", "a"),
        ("activity", "Customer asked for a person"),  # the takeover has its own system line
        ("note", "looks odd"),
        ("activity", "Dana assigned this to Eli"),
    ]


def test_at_the_same_instant_an_event_comes_before_its_message_and_a_note_after(
    conversation: Conversation, agent_user: Any
) -> None:
    now = timezone.now()
    [message] = add_messages(conversation, ("customer", "a person please"))
    note = ConversationNote.objects.create(conversation=conversation, author=agent_user, text="on it")
    event = ConversationEvent.objects.create(conversation=conversation, kind="handoff_requested")
    Message.objects.filter(id=message.id).update(created_at=now)
    ConversationNote.objects.filter(id=note.id).update(created_at=now)
    ConversationEvent.objects.filter(id=event.id).update(created_at=now)
    notes, activity = thread.thread_extras(conversation)
    items = thread.thread([{"message": Message.objects.get(id=message.id)}], notes, activity)
    assert [i.kind for i in items] == ["activity", "message", "note"]


@pytest.mark.parametrize(
    ("kind", "actor", "assignee", "text"),
    [
        ("handoff_requested", "", "", "Customer asked for a person"),
        ("assigned", "Dana", "Dana", "Dana took this"),
        ("assigned", "Dana", "Eli", "Dana assigned this to Eli"),
        ("assigned", "", "Eli", "Assigned to Eli"),
        ("unassigned", "Dana", "Eli", "Dana unassigned Eli"),
        ("unassigned", "Dana", "Dana", "Dana unassigned this"),
        ("unassigned", "", "", "Unassigned"),
    ],
)
def test_it_words_each_activity_line(kind: str, actor: str, assignee: str, text: str) -> None:
    assert thread.activity_text(kind=kind, actor=actor, assignee=assignee) == text


def test_a_handoff_shows_as_an_activity_line_in_the_transcript_page(
    agent_client: Client, conversation: Conversation, agent_user: Any
) -> None:
    add_messages(conversation, ("customer", "I want a person"))
    chat_services.handoff_request(conversation=conversation)
    thread.note_add(conversation=conversation, author=agent_user, text="<b>bold</b> claim")
    page = agent_client.get(f"/agent/conversations/{conversation.id}/").content.decode()
    assert 'data-kind="handoff_requested"' in page and "Customer asked for a person" in page
    assert "&lt;b&gt;bold&lt;/b&gt; claim" in page and "<b>bold</b>" not in page  # a note is text
    assert "only agents see this" in page
    assert page.index("I want a person") < page.index("&lt;b&gt;bold")
