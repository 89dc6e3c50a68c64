"""Transcripts in and out: JSONL (one conversation a line) and CSV (one message a row).

The format is documented in docs/transcript-format.md. Export and import are each other's inverse:
export, import into an empty database, export again, and the two files are the same.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, transaction
from django.utils.dateparse import parse_datetime

from .models import Conversation, Correction, Customer, Feedback, Message

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


class RecordError(ValueError):
    pass


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)


def import_jsonl(lines: Iterable[str]) -> ImportReport:
    """Load each line as one conversation, in a transaction of its own: a bad line imports nothing."""
    report = ImportReport()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = validate_record(_parse(line))
            with transaction.atomic():
                _create(record)
            report.imported += 1
        except RecordError as error:
            report.errors.append((number, str(error)))
        except DatabaseError as error:  # a constraint the checks above missed: nothing of it stays
            report.errors.append((number, f"the database refused it: {error}"))
    return report


def _parse(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as error:
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
    moment = parse_datetime(value) if isinstance(value, str) else None
    _check(moment is not None and moment.tzinfo is not None, f"{where} must be an ISO 8601 time with a UTC offset")
    return moment


def _text(value: Any, where: str, *, default: str = "") -> str:
    if value is None:
        return default
    _check(isinstance(value, str), f"{where} must be a string")
    return value


def validate_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record checked field by field, times parsed; raises RecordError naming the first problem."""
    _check(record.get("format", FORMAT) == FORMAT, f'format must be "{FORMAT}"')
    try:
        conversation_id = uuid.UUID(str(record.get("id")))
    except ValueError:
        raise RecordError("id must be a UUID") from None
    _check(
        not Conversation.objects.filter(id=conversation_id).exists(), f"conversation {conversation_id} already exists"
    )
    customer = record.get("customer") or {}
    _check(isinstance(customer, dict), "customer must be an object")
    try:
        customer_id = uuid.UUID(str(customer["id"])) if customer.get("id") else uuid.uuid4()
    except ValueError:
        raise RecordError("customer.id must be a UUID") from None
    status = record.get("status", Conversation.Status.CLOSED)
    _check(status in Conversation.Status.values, f"status must be one of {', '.join(Conversation.Status.values)}")
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
        "agent": _text(record.get("agent"), "agent"),
        "created_at": _when(record.get("created_at"), "created_at", required=True),
        "reviewed": record.get("reviewed", False),
        "exclude_from_training": record.get("exclude_from_training", False),
        "tags": tags,
        "note": _text(record.get("note"), "note"),
        "satisfaction": satisfaction,
        "messages": [_validate_message(m, i) for i, m in enumerate(messages)],
    }


def _validate_message(message: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    _check(isinstance(message, dict), f"{where} must be an object")
    role = message.get("role")
    _check(role in Message.Role.values, f"{where}.role must be one of {', '.join(Message.Role.values)}")
    _check(isinstance(message.get("text"), str), f"{where}.text must be a string")
    status = message.get("status", Message.Status.COMPLETE)
    _check(
        status in (Message.Status.COMPLETE, Message.Status.CANCELLED, Message.Status.FAILED),
        f"{where}.status must be complete, cancelled or failed",
    )
    token_count = message.get("token_count", 0)
    _check(type(token_count) is int and token_count >= 0, f"{where}.token_count must be a whole number")
    feedback = message.get("feedback", [])
    _check(isinstance(feedback, list), f"{where}.feedback must be a list")
    sources = [f.get("source") if isinstance(f, dict) else None for f in feedback]
    _check(len(set(sources)) == len(sources), f"{where}.feedback has two ratings from the same source")
    correction = message.get("correction")
    _check(correction is None or isinstance(correction, dict), f"{where}.correction must be an object or null")
    if (feedback or correction) and role != Message.Role.BOT:
        raise RecordError(f"{where}: only bot replies carry feedback or a correction")
    return {
        "role": role,
        "text": message["text"],
        "status": status,
        "author": _text(message.get("author"), f"{where}.author"),
        "created_at": _when(message.get("created_at"), f"{where}.created_at", required=True),
        "first_token_at": _when(message.get("first_token_at"), f"{where}.first_token_at"),
        "finished_at": _when(message.get("finished_at"), f"{where}.finished_at"),
        "token_count": token_count,
        "model_name": _text(message.get("model_name"), f"{where}.model_name")[:200],
        "model_version": _text(message.get("model_version"), f"{where}.model_version"),
        "error": _text(message.get("error"), f"{where}.error")[:200],
        "feedback": [_validate_feedback(f, f"{where}.feedback[{i}]") for i, f in enumerate(feedback)],
        "correction": _validate_correction(correction, f"{where}.correction") if correction else None,
    }


def _validate_feedback(feedback: Any, where: str) -> dict[str, Any]:
    _check(isinstance(feedback, dict), f"{where} must be an object")
    _check(feedback.get("source") in Feedback.Source.values, f"{where}.source must be customer or agent")
    _check(isinstance(feedback.get("positive"), bool), f"{where}.positive must be true or false")
    reason = feedback.get("reason") or ""
    _check(reason in Feedback.Reason.values or reason == "", f"{where}.reason is not a known reason")
    return {
        "source": feedback["source"],
        "positive": feedback["positive"],
        "reason": reason,
        "comment": _text(feedback.get("comment"), f"{where}.comment"),
        "author": _text(feedback.get("author"), f"{where}.author"),
        "created_at": _when(feedback.get("created_at"), f"{where}.created_at"),
    }


def _validate_correction(correction: dict[str, Any], where: str) -> dict[str, Any]:
    text = _text(correction.get("text"), f"{where}.text")
    _check(bool(text.strip()), f"{where}.text must not be empty")
    return {
        "text": text,
        "author": _text(correction.get("author"), f"{where}.author"),
        "created_at": _when(correction.get("created_at"), f"{where}.created_at"),
    }


def _user(username: str) -> Any:
    """Authors are matched by username; one unknown here is left empty rather than invented."""
    return get_user_model().objects.filter(username=username).first() if username else None


def _create(record: dict[str, Any]) -> Conversation:
    from finetuning.models import ModelVersion

    customer, _ = Customer.objects.get_or_create(
        id=record["customer_id"], defaults={"display_name": record["customer_name"]}
    )
    conversation = Conversation.objects.create(
        id=record["id"],
        customer=customer,
        status=record["status"],
        agent=_user(record["agent"]),
        reviewed=record["reviewed"],
        exclude_from_training=record["exclude_from_training"],
        tags=record["tags"],
        note=record["note"],
        satisfaction=record["satisfaction"],
    )
    # auto_now_add ignores a given time: historical times are written after the insert.
    Conversation.objects.filter(id=conversation.id).update(created_at=record["created_at"])
    versions = {
        v.name: v for v in ModelVersion.objects.filter(name__in={m["model_version"] for m in record["messages"]})
    }
    for item in record["messages"]:
        message = Message.objects.create(
            conversation=conversation,
            role=item["role"],
            text=item["text"],
            status=item["status"],
            author=_user(item["author"]),
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
                author=_user(rating["author"]),
            )
            if rating["created_at"]:
                Feedback.objects.filter(id=feedback.id).update(created_at=rating["created_at"])
        if item["correction"]:
            correction = Correction.objects.create(
                message=message, text=item["correction"]["text"], author=_user(item["correction"]["author"])
            )
            if item["correction"]["created_at"]:
                Correction.objects.filter(id=correction.id).update(created_at=item["correction"]["created_at"])
    return conversation
