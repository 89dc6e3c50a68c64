"""Export as JSONL and CSV; import_conversations; the round trip between them."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from conversations.models import Conversation, Correction, Customer, Feedback, Message
from finetuning.models import ModelVersion

from .conftest import add_messages

pytestmark = pytest.mark.django_db


def export(client: Client, fmt: str, query: str = "") -> str:
    response = client.get(f"/agent/export.{fmt}" + (f"?{query}" if query else ""))
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def rich(conversation: Conversation, agent_user: Any) -> Conversation:
    """A conversation using every field the format carries."""
    version = ModelVersion.objects.create(name="tuned-1", base_model="base")
    question, reply, human = add_messages(
        conversation,
        ("customer", "Hi, =SUM(A1) ünïcode 🙂"),
        ("bot", "Hello!\nHow can I help?"),
        ("agent", "Dana here."),
    )
    Message.objects.filter(id=reply.id).update(
        model_version=version,
        model_name="base+tuned-1",
        token_count=5,
        first_token_at=reply.created_at + timedelta(seconds=0.2),
        finished_at=reply.created_at + timedelta(seconds=1),
    )
    Message.objects.filter(id=human.id).update(author=agent_user)
    Feedback.objects.create(message=reply, source="customer", positive=False, reason="unhelpful", comment="meh")
    Feedback.objects.create(message=reply, source="agent", positive=False, reason="wrong", author=agent_user)
    Correction.objects.create(message=reply, text="Hello! What is your order number?", author=agent_user)
    Conversation.objects.filter(id=conversation.id).update(
        tags=["greeting", "order"],
        note="Follow up",
        reviewed=True,
        exclude_from_training=True,
        status="closed",
        agent=agent_user,
        satisfaction=4,
    )
    return conversation


def test_the_jsonl_export_holds_messages_feedback_corrections_and_tags(
    agent_client: Client, rich: Conversation
) -> None:
    (line,) = export(agent_client, "jsonl").splitlines()
    record = json.loads(line)
    assert record["id"] == str(rich.id) and record["tags"] == ["greeting", "order"] and record["agent"] == "dana"
    bot = record["messages"][1]
    assert bot["model_version"] == "tuned-1"
    assert {f["source"]: f["reason"] for f in bot["feedback"]} == {"agent": "wrong", "customer": "unhelpful"}
    assert bot["correction"]["text"] == "Hello! What is your order number?"
    assert record["messages"][2]["author"] == "dana"


def test_export_takes_the_selection_or_else_the_filters(
    agent_client: Client, rich: Conversation, second_customer: Customer
) -> None:
    other = Conversation.objects.create(customer=second_customer)
    add_messages(other, ("customer", "my parcel is late"))
    assert len(export(agent_client, "jsonl", f"id={other.id}").splitlines()) == 1
    assert len(export(agent_client, "jsonl", f"id={other.id}&id={rich.id}").splitlines()) == 2
    assert [json.loads(x)["id"] for x in export(agent_client, "jsonl", "status=closed").splitlines()] == [str(rich.id)]
    assert len(export(agent_client, "jsonl", "q=parcel").splitlines()) == 1
    assert agent_client.get("/agent/export.jsonl?id=nope").status_code == 404


def test_the_csv_export_has_a_row_per_message_and_defuses_formulas(agent_client: Client, rich: Conversation) -> None:
    rows = list(csv.DictReader(io.StringIO(export(agent_client, "csv"))))
    assert [r["role"] for r in rows] == ["customer", "bot", "agent"]
    assert rows[0]["text"].startswith("Hi, =SUM")
    assert rows[1]["customer_feedback"] == "bad" and rows[1]["agent_reason"] == "wrong"
    assert rows[1]["correction"] == "Hello! What is your order number?" and rows[1]["tags"] == "greeting;order"


def test_a_cell_starting_with_a_formula_sign_is_quoted(agent_client: Client, conversation: Conversation) -> None:
    add_messages(conversation, ("customer", '=HYPERLINK("http://evil")'))
    (row,) = csv.DictReader(io.StringIO(export(agent_client, "csv")))
    assert row["text"] == '\'=HYPERLINK("http://evil")'


def test_export_then_import_into_an_empty_database_gives_the_same_data(
    agent_client: Client, rich: Conversation, tmp_path: Path
) -> None:
    before = export(agent_client, "jsonl")
    (tmp_path / "all.jsonl").write_text(before)
    Customer.objects.all().delete()  # conversations, messages, feedback and corrections go with them
    assert not Message.objects.exists()
    call_command("import_conversations", str(tmp_path / "all.jsonl"))
    assert export(agent_client, "jsonl") == before


def write_lines(tmp_path: Path, *records: Any) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def good_record(**overrides: Any) -> dict[str, Any]:
    import uuid

    record = {
        "id": str(uuid.uuid4()),
        "created_at": "2025-01-02T03:04:05+00:00",
        "messages": [
            {"role": "customer", "text": "Hi", "created_at": "2025-01-02T03:04:05+00:00"},
            {
                "role": "bot",
                "text": "Hello",
                "created_at": "2025-01-02T03:04:06+00:00",
                "feedback": [{"source": "customer", "positive": True}],
            },
        ],
    }
    record.update(overrides)
    return record


def test_import_reports_bad_lines_by_number_and_keeps_the_good_ones(tmp_path: Path, capsys: Any) -> None:
    bad_message = good_record()
    bad_message["messages"][1]["feedback"][0]["positive"] = "yes"
    path = write_lines(
        tmp_path,
        good_record(),
        "{not json",
        good_record(status="sleeping"),
        bad_message,
        good_record(messages=[]),
        good_record(created_at="yesterday"),
        good_record(tags=["ok"]),
    )
    with pytest.raises(CommandError):
        call_command("import_conversations", str(path))
    errors = capsys.readouterr().err
    for number, problem in [
        (2, "not JSON"),
        (3, "status"),
        (4, "feedback[0].positive"),
        (5, "messages"),
        (6, "created_at"),
    ]:
        assert f"in.jsonl:{number}: " in errors and problem in errors
    assert "in.jsonl:1:" not in errors and "in.jsonl:7:" not in errors
    assert Conversation.objects.count() == 2
    assert Message.objects.count() == 4  # no half conversation from the refused lines


def test_import_never_leaves_half_a_conversation(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import IntegrityError

    original = Feedback.objects.create

    def failing(**kwargs: Any) -> Any:
        raise IntegrityError("feedback refused")

    monkeypatch.setattr(Feedback.objects, "create", failing)
    with pytest.raises(CommandError):
        call_command("import_conversations", str(write_lines(tmp_path, good_record())))
    monkeypatch.setattr(Feedback.objects, "create", original)
    assert "the database refused it" in capsys.readouterr().err
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_import_refuses_a_conversation_that_already_exists(tmp_path: Path, capsys: Any) -> None:
    record = good_record()
    call_command("import_conversations", str(write_lines(tmp_path, record)))
    with pytest.raises(CommandError):
        call_command("import_conversations", str(write_lines(tmp_path, record)))
    assert "already exists" in capsys.readouterr().err
    assert Conversation.objects.count() == 1


def test_imported_times_are_the_historical_ones(tmp_path: Path) -> None:
    call_command("import_conversations", str(write_lines(tmp_path, good_record())))
    conversation = Conversation.objects.get()
    assert conversation.created_at.isoformat() == "2025-01-02T03:04:05+00:00"
    assert [m.created_at.second for m in conversation.messages.all()] == [5, 6]
    assert conversation.status == "closed"


def test_import_of_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_conversations", str(tmp_path / "missing.jsonl"))
