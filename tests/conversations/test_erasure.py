"""Erasing a customer (command and button) and redacting conversations past the retention."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Correction, Customer, Feedback, Message
from finetuning.models import DatasetSnapshot, Example, ModelVersion, TrainingSettings

pytestmark = pytest.mark.django_db
ADDRESS = "203.0.113.7"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def talk(customer: Customer, *turns: tuple[str, str]) -> list[Message]:
    conversation = Conversation.objects.create(customer=customer, reviewed=True, note="called back")
    return [Message.objects.create(conversation=conversation, role=role, text=text) for role, text in turns]


def rated_and_corrected(customer: Customer) -> list[Message]:
    question, reply = talk(customer, ("customer", "Where is my parcel?"), ("bot", "It is lost."))
    Feedback.objects.create(message=reply, source="customer", positive=False, comment="not helpful")
    Feedback.objects.create(message=reply, source="agent", positive=False)
    Correction.objects.create(message=reply, text="It arrives on Friday.")
    return [question, reply]


def example_of(snapshot: DatasetSnapshot, messages: list[Message], question: str, reply: str) -> Example:
    conversation = messages[0].conversation
    return Example.objects.create(
        snapshot=snapshot,
        source="correction",
        split="heldout",
        chat=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": question}],
        prompt=question,
        completion=reply,
        reply=reply,
        conversation_id=str(conversation.id),
        customer_id=str(conversation.customer_id),
        message_ids=[m.id for m in messages],
    )


@pytest.fixture
def trained(customer: Customer, second_customer: Customer) -> dict[str, Any]:
    """Both customers' corrected conversations in one dataset, a version trained on it (its
    evaluation replays one of each), and a version trained on an older dataset without them."""
    customer.address = ADDRESS
    customer.save()
    snapshot = DatasetSnapshot.objects.create(content_hash="a" * 64)
    example_of(snapshot, rated_and_corrected(customer), "Where is my parcel?", "It arrives on Friday.")
    example_of(snapshot, rated_and_corrected(second_customer), "Gift wrap?", "It costs $4.50.")
    replays = [
        {"question": "Where is my parcel?", "correction": "It arrives on Friday.", "candidate": "Friday."},
        {"question": "Gift wrap?", "correction": "It costs $4.50.", "candidate": "$4.50."},
    ]
    version = ModelVersion.objects.create(
        name="run-2", base_model="base", snapshot=snapshot, metrics={"replays": replays}
    )
    older = ModelVersion.objects.create(
        name="run-1", base_model="base", snapshot=DatasetSnapshot.objects.create(content_hash="b" * 64)
    )
    return {"snapshot": snapshot, "version": version, "older": older}


def left_of(customer: Customer) -> dict[str, int]:
    return {
        "conversations": Conversation.objects.filter(customer=customer).count(),
        "messages": Message.objects.filter(conversation__customer=customer).count(),
        "feedback": Feedback.objects.filter(message__conversation__customer=customer).count(),
        "corrections": Correction.objects.filter(message__conversation__customer=customer).count(),
        "examples": Example.objects.filter(customer_id=str(customer.id)).count(),
    }


NOTHING = {"conversations": 0, "messages": 0, "feedback": 0, "corrections": 0, "examples": 0}
ONE_CONVERSATION = {"conversations": 1, "messages": 2, "feedback": 2, "corrections": 1, "examples": 1}


def test_the_command_removes_a_customers_messages_feedback_and_corrections(
    customer: Customer, second_customer: Customer, trained: dict[str, Any]
) -> None:
    output = run("erase_customer", str(customer.id))
    assert "1 conversations, 2 messages, 2 ratings, 1 corrections, 1 dataset examples" in output
    assert left_of(customer) == NOTHING
    assert left_of(second_customer) == ONE_CONVERSATION
    stub = Customer.objects.get(id=customer.id)
    assert (stub.display_name, stub.address) == ("", None)


def test_it_marks_the_versions_trained_on_the_erased_data(customer: Customer, trained: dict[str, Any]) -> None:
    output = run("erase_customer", str(customer.id))
    assert "retrain to leave their data out of the adapters of run-2" in output
    version = ModelVersion.objects.get(id=trained["version"].id)
    [note] = version.trained_on_erased_data
    assert (note["examples"], note["snapshot"]) == (1, trained["snapshot"].id)
    assert [row["question"] for row in version.metrics["replays"]] == ["Gift wrap?"]
    assert ModelVersion.objects.get(id=trained["older"].id).trained_on_erased_data == []
    assert [n["examples"] for n in DatasetSnapshot.objects.get(id=trained["snapshot"].id).erasures] == [1]


def test_the_version_page_says_it_was_trained_on_erased_data(
    customer: Customer, admin_user: User, trained: dict[str, Any]
) -> None:
    run("erase_customer", str(customer.id))
    client = Client()
    client.force_login(admin_user)
    page = client.get("/training/versions/run-2/").content.decode()
    assert "Trained on data since erased." in page
    assert f"1 example of dataset {trained['snapshot'].id} erased at" in page
    assert "Trained on data since erased." not in client.get("/training/versions/run-1/").content.decode()


def test_erasure_is_idempotent(customer: Customer, trained: dict[str, Any]) -> None:
    run("erase_customer", str(customer.id))
    assert "nothing left to erase" in run("erase_customer", str(customer.id))
    assert len(ModelVersion.objects.get(id=trained["version"].id).trained_on_erased_data) == 1


def test_erasing_an_unknown_customer_is_a_clear_error(customer: Customer) -> None:
    for unknown in ("7d5c8a52-0000-4000-8000-000000000000", "not-an-id"):
        with pytest.raises(CommandError, match=f"no customer with id '{unknown}'"):
            run("erase_customer", unknown)


def test_a_dry_run_says_what_would_go_and_removes_nothing(customer: Customer, trained: dict[str, Any]) -> None:
    output = run("erase_customer", str(customer.id), "--dry-run")
    assert "would erase" in output and "versions trained on them: run-2" in output
    assert left_of(customer) == ONE_CONVERSATION


def test_a_run_under_way_at_an_erasure_makes_a_marked_version(trained: dict[str, Any]) -> None:
    from finetuning.services import _erasures_since

    snapshot, started = trained["snapshot"], timezone.now()
    before, after = (started - timedelta(minutes=5)).isoformat(), (started + timedelta(minutes=5)).isoformat()
    snapshot.erasures = [{"at": before, "examples": 3}, {"at": after, "examples": 1}]
    snapshot.save()
    assert _erasures_since(snapshot, started) == [{"at": after, "examples": 1, "snapshot": snapshot.id}]


def staff_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def erase_url(customer: Customer) -> str:
    return f"/agent/customers/{customer.id}/erase"


def test_the_transcript_offers_the_erase_button_to_staff_only(
    customer: Customer, admin_user: User, agent_user: User
) -> None:
    [question, _] = rated_and_corrected(customer)
    transcript = f"/agent/conversations/{question.conversation_id}/"
    assert erase_url(customer) in staff_client(admin_user).get(transcript).content.decode()
    assert erase_url(customer) not in staff_client(agent_user).get(transcript).content.decode()


def test_an_agent_who_is_not_staff_cannot_erase(customer: Customer, agent_user: User) -> None:
    rated_and_corrected(customer)
    client = staff_client(agent_user)
    assert client.get(erase_url(customer)).status_code == 403
    assert client.post(erase_url(customer), {"confirm": str(customer.id)}).status_code == 403
    assert left_of(customer) == {**ONE_CONVERSATION, "examples": 0}


def test_the_confirmation_names_what_will_be_removed(
    customer: Customer, admin_user: User, trained: dict[str, Any]
) -> None:
    page = staff_client(admin_user).get(erase_url(customer)).content.decode()
    for named in ("1 conversation:", "2 messages", "2 ratings and 1 correction", "1 training dataset example", "run-2"):
        assert named in page
    assert f'name="confirm" value="{customer.id}"' in page
    assert left_of(customer) == ONE_CONVERSATION


def test_the_button_erases_only_once_confirmed(
    customer: Customer, second_customer: Customer, admin_user: User, trained: dict[str, Any]
) -> None:
    client = staff_client(admin_user)
    unconfirmed = client.post(erase_url(customer))
    assert unconfirmed.status_code == 400 and "Nothing was erased" in unconfirmed.content.decode()
    assert left_of(customer) == ONE_CONVERSATION
    done = client.post(erase_url(customer), {"confirm": str(customer.id)}).content.decode()
    assert "Removed 1 conversations, 2 messages, 2 ratings, 1 corrections and 1 dataset examples." in done
    assert left_of(customer) == NOTHING and left_of(second_customer) == ONE_CONVERSATION
    assert (
        "Nothing was left to erase" in client.post(erase_url(customer), {"confirm": str(customer.id)}).content.decode()
    )


def test_erasing_an_unknown_customer_from_the_workspace_is_a_404(admin_user: User) -> None:
    assert (
        staff_client(admin_user).get("/agent/customers/7d5c8a52-0000-4000-8000-000000000000/erase").status_code == 404
    )


def aged(messages: list[Message], days: int) -> None:
    """Everything of these messages' conversation stored ``days`` days ago."""
    when = timezone.now() - timedelta(days=days)
    conversation = messages[0].conversation
    Conversation.objects.filter(id=conversation.id).update(created_at=when)
    Message.objects.filter(conversation=conversation).update(created_at=when)
    Feedback.objects.filter(message__conversation=conversation).update(created_at=when)
    Correction.objects.filter(message__conversation=conversation).update(created_at=when)


def personal(customer: Customer) -> list[Message]:
    messages = talk(customer, ("customer", "I am ann@example.com"), ("bot", "Thanks, ann@example.com."))
    Feedback.objects.create(message=messages[1], source="customer", positive=True, comment="mail ann@example.com")
    Correction.objects.create(message=messages[1], text="We will write to ann@example.com.")
    Conversation.objects.filter(id=messages[0].conversation_id).update(note="she is ann@example.com")
    return messages


def stored_text(messages: list[Message]) -> list[str]:
    conversation = Conversation.objects.get(id=messages[0].conversation_id)
    return [
        *Message.objects.filter(conversation=conversation).values_list("text", flat=True),
        *Feedback.objects.filter(message__conversation=conversation).values_list("comment", flat=True),
        *Correction.objects.filter(message__conversation=conversation).values_list("text", flat=True),
        conversation.note,
    ]


def test_retention_redacts_old_text_and_leaves_new_text_alone(customer: Customer) -> None:
    old, new = personal(customer), personal(customer)
    aged(old, days=31)
    output = run("redact_old_conversations", "--days", "30")
    assert "2 messages, 1 corrections, 1 feedback comments, 1 notes" in output
    assert all("ann@example.com" not in text and "[email]" in text for text in stored_text(old))
    assert all("ann@example.com" in text for text in stored_text(new))
    redacted = stored_text(old)
    assert "0 messages, 0 corrections, 0 feedback comments, 0 notes" in run("redact_old_conversations", "--days", "30")
    assert stored_text(old) == redacted


def test_retention_follows_the_admin_setting(customer: Customer) -> None:
    old = personal(customer)
    aged(old, days=8)
    assert "retention is off" in run("redact_old_conversations")
    assert any("ann@example.com" in text for text in stored_text(old))
    TrainingSettings.objects.update_or_create(pk=1, defaults={"redact_conversations_after_days": 7})
    run("redact_old_conversations")
    assert not any("ann@example.com" in text for text in stored_text(old))


def test_the_celery_sweeper_redacts_at_most_once_an_interval(transactional_db: Any, customer: Customer) -> None:
    from finetuning.tasks import Sweeper

    TrainingSettings.objects.update_or_create(pk=1, defaults={"redact_conversations_after_days": 7})
    first, second = personal(customer), personal(customer)
    aged(first, days=8)
    sweeper = Sweeper()
    sweeper.sweep()
    assert not any("ann@example.com" in text for text in stored_text(first))
    aged(second, days=8)
    sweeper.sweep()  # within the hour: no second pass
    assert all("ann@example.com" in text for text in stored_text(second))
    sweeper.retention_due = 0.0  # an hour later
    sweeper.sweep()
    assert not any("ann@example.com" in text for text in stored_text(second))


@pytest.mark.django_db(transaction=True)
async def test_a_chat_open_while_its_customer_is_erased_is_closed_so_the_page_starts_afresh(
    customer: Customer,
) -> None:
    from channels.db import database_sync_to_async

    from tests.sockets import chat_socket

    socket = await chat_socket(customer)
    connected, _ = await socket.connect()
    assert connected
    await socket.receive_json_from()  # history
    await database_sync_to_async(run)("erase_customer", str(customer.id))
    await socket.send_json_to({"type": "message", "text": "still there?"})
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4404}
    assert not await database_sync_to_async(Message.objects.filter(text="still there?").exists)()
