"""Export as JSONL and CSV; import_conversations; the round trip between them."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from conversations import transcripts
from conversations.models import Conversation, Correction, Customer, Feedback, Message
from conversations.roles import AGENT_GROUP
from finetuning import services as learning
from finetuning.models import ModelVersion

from .conftest import add_messages, user_client

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


def empty_the_database() -> None:
    """Every table an export's data lives in, emptied: a fresh installation, as far as it matters."""
    Customer.objects.all().delete()  # conversations, messages, feedback and corrections go with them
    User.objects.all().delete()
    Group.objects.all().delete()
    ModelVersion.objects.all().delete()
    for model in (Customer, Conversation, Message, Feedback, Correction, User, Group, ModelVersion):
        assert not model.objects.exists(), model.__name__


def export_as_a_new_admin(fmt: str = "jsonl") -> str:
    """The agent who exported is gone with the emptied database: someone not in any export reads it back."""
    return export(user_client(User.objects.create_user("auditor", password="x", is_staff=True)), fmt)


def test_export_then_import_into_an_empty_database_gives_the_same_data(
    agent_client: Client, rich: Conversation, second_customer: Customer, second_agent: Any, tmp_path: Path
) -> None:
    held = Conversation.objects.create(customer=second_customer, status="agent", agent=second_agent)
    add_messages(held, ("customer", "A person, please"), ("system", "Eli joined"))
    add_messages(held, ("agent", "Eli here."), author=second_agent)
    before = export(agent_client, "jsonl")
    csv_before = export(agent_client, "csv")
    (tmp_path / "all.jsonl").write_text(before)
    empty_the_database()

    call_command("import_conversations", str(tmp_path / "all.jsonl"))

    assert export_as_a_new_admin() == before
    assert export(user_client(User.objects.get(username="auditor")), "csv") == csv_before
    # The agents and the model version the file names exist again, and none of them can act.
    agents = Group.objects.get(name=AGENT_GROUP)
    for username in ("dana", "eli"):
        user = User.objects.get(username=username)
        assert not user.is_active and not user.has_usable_password() and agents in user.groups.all()
    version = ModelVersion.objects.get(name="tuned-1")
    assert version.status == ModelVersion.Status.RETIRED and version.base_model == "base"
    with pytest.raises(learning.LearningLoopError, match="adapter of tuned-1 is missing"):
        learning.version_promote(version=version)  # it would serve the base model under a tuned name


def test_import_matches_existing_users_and_versions_by_name(agent_user: Any, tmp_path: Path) -> None:
    version = ModelVersion.objects.create(name="tuned-1", base_model="base", adapter_path="/adapters/tuned-1")
    record = good_record(agent="dana")
    record["messages"][1].update(model_version="tuned-1", model_name="base+tuned-1")
    record["messages"][1]["correction"] = {"text": "Hello there", "author": "zoe"}
    call_command("import_conversations", str(write_lines(tmp_path, record)))
    conversation = Conversation.objects.get()
    assert conversation.agent == agent_user and User.objects.get(username="dana").is_active
    assert conversation.messages.get(role="bot").model_version == version
    assert ModelVersion.objects.count() == 1 and User.objects.count() == 2
    assert not Correction.objects.get().author.is_active  # zoe, unknown here: created inactive


def test_a_live_conversation_reimports_with_its_replies_in_flight_cancelled(
    agent_client: Client, conversation: Conversation, second_customer: Customer, tmp_path: Path
) -> None:
    add_messages(conversation, ("customer", "Where is my order?"))
    (streaming,) = add_messages(conversation, ("bot", "It ships"), status="streaming", token_count=2)
    Message.objects.filter(id=streaming.id).update(first_token_at=streaming.created_at + timedelta(seconds=0.1))
    other = Conversation.objects.create(customer=second_customer)
    add_messages(other, ("customer", "Hello?"))
    add_messages(other, ("bot", ""), status="pending")
    before = export(agent_client, "jsonl")
    (tmp_path / "live.jsonl").write_text(before)
    empty_the_database()

    call_command("import_conversations", str(tmp_path / "live.jsonl"))

    assert set(Message.objects.filter(role="bot").values_list("text", "status", "token_count")) == {
        ("It ships", "cancelled", 2),
        ("", "cancelled", 0),
    }
    assert Conversation.objects.filter(status="bot").count() == 2  # nothing else changes
    expected = [json.loads(line) for line in before.splitlines()]
    for record in expected:
        for message in record["messages"]:
            if message["status"] in ("pending", "streaming"):
                message["status"] = "cancelled"
    assert [json.loads(line) for line in export_as_a_new_admin().splitlines()] == expected


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
    record = good_record(agent="zoe")
    record["messages"][1]["model_version"] = "tuned-9"
    with pytest.raises(CommandError):
        call_command("import_conversations", str(write_lines(tmp_path, record)))
    monkeypatch.setattr(Feedback.objects, "create", original)
    assert "the database refused it" in capsys.readouterr().err
    assert not Conversation.objects.exists() and not Message.objects.exists() and not Customer.objects.exists()
    assert not User.objects.exists() and not ModelVersion.objects.exists()  # created for it, gone with it


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


# Every malformed value is one bad line, reported with its number; the lines around it still load.
# (where in good_record(), the value put there, what the report says)
MALFORMED: list[tuple[tuple[Any, ...], Any, str]] = [
    (("format",), 1, 'format must be "chatbot.transcript/1"'),
    (("id",), None, "id must be a UUID"),
    (("id",), 12345678123456781234567812345678, "id must be a UUID"),
    (("customer",), 5, "customer must be an object"),
    (("customer",), ["Alice"], "customer must be an object"),
    (("customer",), {"id": 123}, "customer.id must be a UUID"),
    (("customer",), {"id": ["0b5c"]}, "customer.id must be a UUID"),
    (("customer",), {"display_name": {"first": "Al"}}, "customer.display_name must be a string"),
    (("status",), ["closed"], "status must be one of bot, waiting, agent, closed"),
    (("agent",), ["dana"], "agent must be a string"),
    (("agent",), "dana smith!", "agent 'dana smith!' is not a valid name"),
    (("agent",), "d" * 151, "is not a valid name"),
    (("created_at",), "2025-13-45T00:00:00+00:00", "created_at must be an ISO 8601 time with a UTC offset: month"),
    (("created_at",), "2025-01-02T03:04:05", "created_at must be an ISO 8601 time with a UTC offset"),
    (("created_at",), 20250102, "created_at must be an ISO 8601 time with a UTC offset"),
    (("created_at",), "9999-12-31T23:59:59-12:00", "created_at is out of range"),
    (("reviewed",), "yes", "reviewed must be true or false"),
    (("tags",), "billing", "tags must be a list of strings"),
    (("tags",), ["ok", 5], "tags must be a list of strings"),
    (("tags",), ["a\u0000b"], "tags[0] must not contain a NUL character"),
    (("note",), {"text": "call back"}, "note must be a string"),
    (("satisfaction",), "4", "satisfaction must be 1 to 5 or null"),
    (("satisfaction",), 4.5, "satisfaction must be 1 to 5 or null"),
    (("satisfaction",), True, "satisfaction must be 1 to 5 or null"),
    (("messages",), {"0": {"role": "customer"}}, "messages must be a non-empty list"),
    (("messages", 0), "Hi", "messages[0] must be an object"),
    (("messages", 0, "role"), {"customer": True}, "messages[0].role must be one of"),
    (("messages", 0, "text"), ["Hi"], "messages[0].text must be a string"),
    (("messages", 0, "text"), None, "messages[0].text must be a string"),
    (("messages", 0, "text"), "Hi\u0000", "messages[0].text must not contain a NUL character"),
    (("messages", 0, "text"), "\ud800", "messages[0].text is not valid Unicode"),
    (("messages", 0, "status"), ["complete"], "messages[0].status must be one of"),
    (("messages", 0, "created_at"), "2025-02-30T00:00:00+00:00", "messages[0].created_at must be an ISO 8601"),
    (("messages", 0, "author"), 7, "messages[0].author must be a string"),
    (("messages", 0, "feedback"), [{"source": "customer", "positive": True}], "only bot replies carry feedback"),
    (("messages", 1, "first_token_at"), "2025-01-02T03:04:05+99:00", "messages[1].first_token_at must be an ISO"),
    (("messages", 1, "finished_at"), ["2025-01-02T03:04:05+00:00"], "messages[1].finished_at must be an ISO"),
    (("messages", 1, "token_count"), "5", "messages[1].token_count must be a whole number"),
    (("messages", 1, "token_count"), -1, "messages[1].token_count must be a whole number"),
    (("messages", 1, "token_count"), 10**20, "messages[1].token_count must be a whole number"),
    (("messages", 1, "model_name"), ["base"], "messages[1].model_name must be a string"),
    (("messages", 1, "model_version"), 3, "messages[1].model_version must be a string"),
    (("messages", 1, "model_version"), "Tuned 1", "messages[1].model_version 'Tuned 1' is not a valid name"),
    (("messages", 1, "error"), {"code": 500}, "messages[1].error must be a string"),
    (("messages", 1, "feedback"), {"source": "customer"}, "messages[1].feedback must be a list"),
    (("messages", 1, "feedback", 0), 7, "messages[1].feedback[0] must be an object"),
    (("messages", 1, "feedback", 0, "source"), ["customer"], "messages[1].feedback[0].source must be one of"),
    (("messages", 1, "feedback", 0, "source"), {"kind": "customer"}, "messages[1].feedback[0].source must be one"),
    (("messages", 1, "feedback", 0, "positive"), 1, "messages[1].feedback[0].positive must be true or false"),
    (("messages", 1, "feedback", 0, "reason"), ["wrong"], "messages[1].feedback[0].reason must be empty or one of"),
    (("messages", 1, "feedback", 0, "comment"), 5, "messages[1].feedback[0].comment must be a string"),
    (("messages", 1, "feedback", 0, "author"), {"username": "dana"}, "messages[1].feedback[0].author must be a"),
    (("messages", 1, "feedback", 0, "created_at"), "2025-01-02T25:00:00+00:00", "feedback[0].created_at must be"),
    (
        ("messages", 1, "feedback"),
        [{"source": "customer", "positive": True}, {"source": "customer", "positive": False}],
        "messages[1].feedback has two ratings from the same source",
    ),
    (("messages", 1, "correction"), "It ships today.", "messages[1].correction must be an object or null"),
    (("messages", 1, "correction"), {}, "messages[1].correction.text must not be empty"),
    (("messages", 1, "correction"), {"text": ["It ships"]}, "messages[1].correction.text must be a string"),
    (("messages", 1, "correction"), {"text": "Today", "author": 1}, "messages[1].correction.author must be a"),
    (("messages", 1, "correction"), {"text": "Today", "created_at": 1}, "messages[1].correction.created_at must"),
]

RAW_MALFORMED = [
    ("{not json", "not JSON"),
    ("[1, 2]", "a line must be a JSON object"),
    ('"a string"', "a line must be a JSON object"),
    ("[" * 100_000, "not JSON"),  # nested past the parser's depth
]


def put(record: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target: Any = record
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    return record


def refused(tmp_path: Path, capsys: Any, bad: Any) -> str:
    """``bad`` between two good lines: the one problem reported for line 2; the good lines imported."""
    path = write_lines(tmp_path, good_record(), bad, good_record())
    with pytest.raises(CommandError):
        call_command("import_conversations", str(path))
    (problem,) = capsys.readouterr().err.strip().splitlines()
    assert problem.startswith(f"{path}:2: "), problem
    assert Conversation.objects.count() == 2 and Message.objects.count() == 4 and Feedback.objects.count() == 2
    assert not User.objects.exists() and not ModelVersion.objects.exists()
    return problem


@pytest.mark.parametrize(
    "where, value, problem", MALFORMED, ids=[f"{'.'.join(map(str, w))}={v!r}"[:50] for w, v, _ in MALFORMED]
)
def test_a_malformed_value_is_one_bad_line(where: Any, value: Any, problem: str, tmp_path: Path, capsys: Any) -> None:
    assert problem in refused(tmp_path, capsys, put(good_record(), where, value))


@pytest.mark.parametrize("line, problem", RAW_MALFORMED, ids=lambda x: x[:12])
def test_a_line_that_is_no_record_is_one_bad_line(line: str, problem: str, tmp_path: Path, capsys: Any) -> None:
    assert problem in refused(tmp_path, capsys, line)


def test_a_line_that_is_not_utf8_is_one_bad_line_and_a_byte_order_mark_is_skipped(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "in.jsonl"
    good = [json.dumps(good_record()).encode() for _ in range(2)]
    path.write_bytes(b"\xef\xbb\xbf" + good[0] + b"\n" + b'{"id": "\xff"}\n' + good[1] + b"\n")
    with pytest.raises(CommandError):
        call_command("import_conversations", str(path))
    (problem,) = capsys.readouterr().err.strip().splitlines()
    assert problem.startswith(f"{path}:2: not UTF-8 text")
    assert Conversation.objects.count() == 2


def test_an_error_the_checks_did_not_foresee_is_still_one_bad_line(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    validate = transcripts.validate_record

    def unforeseen(record: dict[str, Any]) -> dict[str, Any]:
        if record.get("note") == "trap":
            raise TypeError("unhashable type: 'list'")
        return validate(record)

    monkeypatch.setattr(transcripts, "validate_record", unforeseen)
    problem = refused(tmp_path, capsys, good_record(note="trap"))
    assert problem.endswith("cannot be imported: TypeError: unhashable type: 'list'")


ABSENT = [
    (("id",), "id must be a UUID"),
    (("created_at",), "created_at must be an ISO 8601 time with a UTC offset"),
    (("messages",), "messages must be a non-empty list"),
    (("messages", 0, "role"), "messages[0].role must be one of"),
    (("messages", 0, "text"), "messages[0].text must be a string"),
    (("messages", 1, "feedback", 0, "positive"), "messages[1].feedback[0].positive must be true or false"),
]


@pytest.mark.parametrize("where, problem", ABSENT, ids=[".".join(map(str, w)) for w, _ in ABSENT])
def test_a_required_key_left_out_is_refused_in_the_words_of_a_null(
    where: tuple[Any, ...], problem: str, tmp_path: Path, capsys: Any
) -> None:
    record = good_record()
    target: Any = record
    for key in where[:-1]:
        target = target[key]
    del target[where[-1]]
    assert problem in refused(tmp_path, capsys, record)
