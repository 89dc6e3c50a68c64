"""Transcripts in and out: JSONL (one conversation a line) and CSV (one message a row).

The format is documented in docs/transcript-format.md. Export and import are each other's inverse:
export, import into an empty database, export again, and the two files are the same. Users and
model versions the target database lacks are created (inactive, retired) so no name is lost; a
reply still in flight when exported comes back ``cancelled``, the one field that differs.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils.dateparse import parse_datetime

from .models import Conversation, Correction, Customer, Feedback, Message
from .roles import AGENT_GROUP

FORMAT = "chatbot.transcript/1"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


# Export.


def export_queryset(conversations: Any) -> Any:
    return conversations.select_related("customer", "agent").prefetch_related(
        "messages__author", "messages__model_version", "messages__feedback__author", "messages__correction__author"
    )


def conversation_record(conversation: Conversation) -> dict[str, Any]:
    """One conversation with its messages, feedback, corrections, tags: one JSONL line."""
    return {
        "format": FORMAT,
        "id": str(conversation.id),
        "customer": {"id": str(conversation.customer.id), "display_name": conversation.customer.display_name},
        "status": conversation.status,
        "agent": _username(conversation.agent),
        "created_at": _iso(conversation.created_at),
        "reviewed": conversation.reviewed,
        "exclude_from_training": conversation.exclude_from_training,
        "tags": list(conversation.tags),
        "note": conversation.note,
        "satisfaction": conversation.satisfaction,
        "messages": [
            _message_record(m) for m in sorted(conversation.messages.all(), key=lambda m: (m.created_at, m.id))
        ],
    }


def _message_record(message: Message) -> dict[str, Any]:
    correction = getattr(message, "correction", None) if hasattr(message, "correction") else None
    return {
        "role": message.role,
        "text": message.text,
        "status": message.status,
        "author": _username(message.author),
        "created_at": _iso(message.created_at),
        "first_token_at": _iso(message.first_token_at),
        "finished_at": _iso(message.finished_at),
        "token_count": message.token_count,
        "model_name": message.model_name,
        "model_version": message.model_version.name if message.model_version else None,
        "error": message.error,
        "feedback": [
            {
                "source": f.source,
                "positive": f.positive,
                "reason": f.reason,
                "comment": f.comment,
                "author": _username(f.author),
                "created_at": _iso(f.created_at),
            }
            for f in sorted(message.feedback.all(), key=lambda f: f.source)
        ],
        "correction": (
            {"text": correction.text, "author": _username(correction.author), "created_at": _iso(correction.created_at)}
            if correction is not None
            else None
        ),
    }


def export_jsonl(conversations: Iterable[Conversation]) -> Iterator[str]:
    for conversation in conversations:
        yield json.dumps(conversation_record(conversation), ensure_ascii=False) + "\n"


CSV_COLUMNS = [
    "conversation_id", "conversation_status", "conversation_created_at", "tags", "reviewed",
    "exclude_from_training", "satisfaction", "position", "role", "author", "created_at", "status",
    "model_name", "model_version", "text", "customer_feedback", "customer_reason", "agent_feedback",
    "agent_reason", "correction",
]  # fmt: skip


def export_csv(conversations: Iterable[Conversation]) -> Iterator[str]:
    """One row per message; cells a spreadsheet would run as a formula are prefixed with a quote."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for conversation in conversations:
        record = conversation_record(conversation)
        for position, message in enumerate(record["messages"]):
            rating = {f["source"]: f for f in message["feedback"]}
            row = [
                record["id"], record["status"], record["created_at"], ";".join(record["tags"]), record["reviewed"],
                record["exclude_from_training"], record["satisfaction"] or "", position, message["role"],
                message["author"] or "", message["created_at"], message["status"], message["model_name"],
                message["model_version"] or "", message["text"],
                _rating(rating.get("customer")), rating.get("customer", {}).get("reason", ""),
                _rating(rating.get("agent")), rating.get("agent", {}).get("reason", ""),
                (message["correction"] or {}).get("text", ""),
            ]  # fmt: skip
            writer.writerow([_cell(value) for value in row])
            yield flush()


def _rating(feedback: dict[str, Any] | None) -> str:
    return "" if feedback is None else ("good" if feedback["positive"] else "bad")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# Import.

# The adapter path of a model version created by an import. No such folder exists, so promoting
# that version is refused ("the adapter ... is missing") instead of serving the base model under
# the name of a tuned one.
IMPORTED_ADAPTER = "(imported with transcripts: no adapter in this system)"
MAX_TOKEN_COUNT = 2_147_483_647  # the most a PositiveIntegerField holds on every database


class RecordError(ValueError):
    pass


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)


def import_jsonl(lines: Iterable[str | bytes]) -> ImportReport:
    """Load each line as one conversation, in a transaction of its own: a bad line imports nothing.

    Lines may be bytes (a file read in binary), so a line that is not UTF-8 is one more bad line.
    """
    report = ImportReport()
    for number, line in enumerate(lines, start=1):
        try:
            text = _decode(line, first=number == 1)
            if not text.strip():
                continue
            record = validate_record(_parse(text))
            with transaction.atomic():
                _create(record)
            report.imported += 1
        except RecordError as error:
            report.errors.append((number, str(error)))
        except DatabaseError as error:  # a constraint the checks above missed: nothing of it stays
            report.errors.append((number, f"the database refused it: {error}"))
        except (TypeError, ValueError, ArithmeticError) as error:  # a shape the checks missed: still one bad line
            report.errors.append((number, f"cannot be imported: {type(error).__name__}: {error}"))
    return report


def _decode(line: str | bytes, *, first: bool) -> str:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RecordError(f"not UTF-8 text: {error}") from None
    return line.removeprefix("\ufeff") if first else line  # a byte order mark some editors write


def _parse(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:
        raise RecordError(f"not JSON: {error}") from None
    if not isinstance(record, dict):
        raise RecordError("a line must be a JSON object")
    return record


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise RecordError(problem)


def _when(value: Any, where: str, *, required: bool = False) -> datetime | None:
    if value is None and not required:
        return None
    problem = f"{where} must be an ISO 8601 time with a UTC offset"
    _check(isinstance(value, str), problem)
    try:
        moment = parse_datetime(value)
    except ValueError as error:  # well formed but impossible, e.g. month 13
        raise RecordError(f"{problem}: {error}") from None
    _check(moment is not None and moment.tzinfo is not None, problem)
    try:
        moment.astimezone(UTC)  # stored in UTC: a time at either end of the calendar may not fit
    except OverflowError:
        raise RecordError(f"{where} is out of range") from None
    return moment


def _text(value: Any, where: str, *, default: str = "", required: bool = False) -> str:
    if value is None and not required:
        return default
    _check(isinstance(value, str), f"{where} must be a string")
    _check("\x00" not in value, f"{where} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{where} is not valid Unicode (a lone surrogate)") from None
    return value


def _choice(value: Any, choices: list[str], where: str) -> str:
    _check(isinstance(value, str) and value in choices, f"{where} must be one of {', '.join(choices)}")
    return value


def _uuid(value: Any, where: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise RecordError(f"{where} must be a UUID")


def _name(value: Any, where: str, name_field: Any) -> str:
    """A user or a model version, referred to by name: a string that field would accept, or empty."""
    name = _text(value, where)
    if name:
        try:
            name_field.run_validators(name)
        except ValidationError as error:
            raise RecordError(f"{where} {name!r} is not a valid name: {' '.join(error.messages)}") from None
    return name


def _username_field() -> Any:
    return get_user_model()._meta.get_field("username")


def validate_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record checked field by field, times parsed; raises RecordError naming the first problem."""
    _check(record.get("format", FORMAT) == FORMAT, f'format must be "{FORMAT}"')
    conversation_id = _uuid(record.get("id"), "id")
    _check(
        not Conversation.objects.filter(id=conversation_id).exists(), f"conversation {conversation_id} already exists"
    )
    customer = record.get("customer")
    customer = {} if customer is None else customer
    _check(isinstance(customer, dict), "customer must be an object")
    customer_id = _uuid(customer["id"], "customer.id") if customer.get("id") not in (None, "") else uuid.uuid4()
    status = _choice(record.get("status", Conversation.Status.CLOSED), Conversation.Status.values, "status")
    tags = record.get("tags", [])
    _check(isinstance(tags, list) and all(isinstance(t, str) for t in tags), "tags must be a list of strings")
    satisfaction = record.get("satisfaction")
    _check(
        satisfaction is None or (type(satisfaction) is int and 1 <= satisfaction <= 5),
        "satisfaction must be 1 to 5 or null",
    )
    for flag in ("reviewed", "exclude_from_training"):
        _check(isinstance(record.get(flag, False), bool), f"{flag} must be true or false")
    messages = record.get("messages")
    _check(isinstance(messages, list) and len(messages) > 0, "messages must be a non-empty list")
    return {
        "id": conversation_id,
        "customer_id": customer_id,
        "customer_name": _text(customer.get("display_name"), "customer.display_name")[:120],
        "status": status,
        "agent": _name(record.get("agent"), "agent", _username_field()),
        "created_at": _when(record.get("created_at"), "created_at", required=True),
        "reviewed": record.get("reviewed", False),
        "exclude_from_training": record.get("exclude_from_training", False),
        "tags": [_text(tag, f"tags[{i}]") for i, tag in enumerate(tags)],
        "note": _text(record.get("note"), "note"),
        "satisfaction": satisfaction,
        "messages": [_validate_message(m, i) for i, m in enumerate(messages)],
    }


def _validate_message(message: Any, index: int) -> dict[str, Any]:
    from finetuning.models import ModelVersion

    where = f"messages[{index}]"
    _check(isinstance(message, dict), f"{where} must be an object")
    role = _choice(message.get("role"), Message.Role.values, f"{where}.role")
    status = _choice(message.get("status", Message.Status.COMPLETE), Message.Status.values, f"{where}.status")
    if status in Message.ACTIVE_STATUSES:  # in flight when exported: nothing here will ever finish it
        status = Message.Status.CANCELLED
    token_count = message.get("token_count", 0)
    _check(
        type(token_count) is int and 0 <= token_count <= MAX_TOKEN_COUNT,
        f"{where}.token_count must be a whole number from 0 to {MAX_TOKEN_COUNT}",
    )
    feedback = message.get("feedback", [])
    _check(isinstance(feedback, list), f"{where}.feedback must be a list")
    ratings = [_validate_feedback(f, f"{where}.feedback[{i}]") for i, f in enumerate(feedback)]
    sources = [rating["source"] for rating in ratings]
    _check(len(set(sources)) == len(sources), f"{where}.feedback has two ratings from the same source")
    correction = message.get("correction")
    _check(correction is None or isinstance(correction, dict), f"{where}.correction must be an object or null")
    if (ratings or correction is not None) and role != Message.Role.BOT:
        raise RecordError(f"{where}: only bot replies carry feedback or a correction")
    return {
        "role": role,
        "text": _text(message.get("text"), f"{where}.text", required=True),
        "status": status,
        "author": _name(message.get("author"), f"{where}.author", _username_field()),
        "created_at": _when(message.get("created_at"), f"{where}.created_at", required=True),
        "first_token_at": _when(message.get("first_token_at"), f"{where}.first_token_at"),
        "finished_at": _when(message.get("finished_at"), f"{where}.finished_at"),
        "token_count": token_count,
        "model_name": _text(message.get("model_name"), f"{where}.model_name")[:200],
        "model_version": _name(
            message.get("model_version"), f"{where}.model_version", ModelVersion._meta.get_field("name")
        ),
        "error": _text(message.get("error"), f"{where}.error")[:200],
        "feedback": ratings,
        "correction": _validate_correction(correction, f"{where}.correction") if correction is not None else None,
    }


def _validate_feedback(feedback: Any, where: str) -> dict[str, Any]:
    _check(isinstance(feedback, dict), f"{where} must be an object")
    source = _choice(feedback.get("source"), Feedback.Source.values, f"{where}.source")
    _check(isinstance(feedback.get("positive"), bool), f"{where}.positive must be true or false")
    reason = feedback.get("reason")
    reason = "" if reason is None else reason
    _check(
        isinstance(reason, str) and (reason in Feedback.Reason.values or reason == ""),
        f"{where}.reason must be empty or one of {', '.join(Feedback.Reason.values)}",
    )
    return {
        "source": source,
        "positive": feedback["positive"],
        "reason": reason,
        "comment": _text(feedback.get("comment"), f"{where}.comment"),
        "author": _name(feedback.get("author"), f"{where}.author", _username_field()),
        "created_at": _when(feedback.get("created_at"), f"{where}.created_at"),
    }


def _validate_correction(correction: dict[str, Any], where: str) -> dict[str, Any]:
    text = _text(correction.get("text"), f"{where}.text")
    _check(bool(text.strip()), f"{where}.text must not be empty")
    return {
        "text": text,
        "author": _name(correction.get("author"), f"{where}.author", _username_field()),
        "created_at": _when(correction.get("created_at"), f"{where}.created_at"),
    }


def _user(username: str, known: dict[str, Any]) -> Any:
    """The user of that username; one this database lacks is created, so no author is lost.

    Created users are former agents of the other system: in the ``agents`` group, but inactive and
    without a usable password, so they cannot sign in until an admin activates them on purpose.
    """
    if not username:
        return None
    if username not in known:
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, password=None, is_active=False)
            user.groups.add(Group.objects.get_or_create(name=AGENT_GROUP)[0])
        known[username] = user
    return known[username]


def _versions(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The model versions the messages name; one this database lacks is created, retired, without
    an adapter (see IMPORTED_ADAPTER), so the replies keep the version that wrote them."""
    from finetuning.models import ModelVersion

    named = {m["model_version"]: m["model_name"] for m in messages if m["model_version"]}
    versions = {v.name: v for v in ModelVersion.objects.filter(name__in=named)}
    for name, model_name in named.items():
        if name not in versions:
            versions[name] = ModelVersion.objects.create(
                name=name,
                base_model=model_name.partition("+")[0],
                adapter_path=IMPORTED_ADAPTER,
                status=ModelVersion.Status.RETIRED,
            )
    return versions


def _create(record: dict[str, Any]) -> Conversation:
    users: dict[str, Any] = {}
    customer, _ = Customer.objects.get_or_create(
        id=record["customer_id"], defaults={"display_name": record["customer_name"]}
    )
    conversation = Conversation.objects.create(
        id=record["id"],
        customer=customer,
        status=record["status"],
        agent=_user(record["agent"], users),
        reviewed=record["reviewed"],
        exclude_from_training=record["exclude_from_training"],
        tags=record["tags"],
        note=record["note"],
        satisfaction=record["satisfaction"],
    )
    # auto_now_add ignores a given time: historical times are written after the insert.
    Conversation.objects.filter(id=conversation.id).update(created_at=record["created_at"])
    versions = _versions(record["messages"])
    for item in record["messages"]:
        message = Message.objects.create(
            conversation=conversation,
            role=item["role"],
            text=item["text"],
            status=item["status"],
            author=_user(item["author"], users),
            first_token_at=item["first_token_at"],
            finished_at=item["finished_at"],
            token_count=item["token_count"],
            model_name=item["model_name"],
            model_version=versions.get(item["model_version"]),
            error=item["error"],
        )
        Message.objects.filter(id=message.id).update(created_at=item["created_at"])
        for rating in item["feedback"]:
            feedback = Feedback.objects.create(
                message=message,
                source=rating["source"],
                positive=rating["positive"],
                reason=rating["reason"],
                comment=rating["comment"],
                author=_user(rating["author"], users),
            )
            if rating["created_at"]:
                Feedback.objects.filter(id=feedback.id).update(created_at=rating["created_at"])
        if item["correction"]:
            correction = Correction.objects.create(
                message=message, text=item["correction"]["text"], author=_user(item["correction"]["author"], users)
            )
            if item["correction"]["created_at"]:
                Correction.objects.filter(id=correction.id).update(created_at=item["correction"]["created_at"])
    return conversation
