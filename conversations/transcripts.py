"""Transcripts in and out: JSONL (one conversation a line) and CSV (one message a row).

The format is documented in docs/transcript-format.md. Export and import are each other's inverse:
export, import into an empty database, export again, and the two files are the same. Users and
model versions the target database lacks are created (inactive, retired) so no name is lost; a
reply still in flight when exported comes back ``cancelled``, the one field that differs.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils.dateparse import parse_datetime
from pydantic import AfterValidator, BaseModel, Field, PlainValidator, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

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


def csv_stream(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """CSV text a row at a time, for a streaming response: the header, then each row as it comes
    (the caller makes its cells safe: ``_cell`` here, ``reports.export`` for its figures)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in itertools.chain([header], rows):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def export_csv(conversations: Iterable[Conversation]) -> Iterator[str]:
    """One row per message; cells a spreadsheet would run as a formula are prefixed with a quote."""
    return csv_stream(CSV_COLUMNS, _export_rows(conversations))


def _export_rows(conversations: Iterable[Conversation]) -> Iterator[list[Any]]:
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
            yield [_cell(value) for value in row]


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

# Pydantic error types of our own: a field's value is wrong ("tags[0] must not contain ..."), or an
# object's fields disagree with each other ("messages[0]: only bot replies ...").
FIELD = "transcript_field"
RULE = "transcript_rule"


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


def validate_record(record: dict[str, Any]) -> ConversationIn:
    """A record checked field by field, times parsed; raises RecordError naming the first problem."""
    try:
        conversation = ConversationIn.model_validate(record)
    except PydanticValidationError as error:
        raise RecordError(_problem(error.errors()[0])) from None
    if Conversation.objects.filter(id=conversation.id).exists():
        raise RecordError(f"conversation {conversation.id} already exists")
    return conversation


def _problem(error: ErrorDetails) -> str:
    """One pydantic error in the words of the format: the field's path, then what is wrong."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] == FIELD:
        return f"{where} {error['msg']}"
    if error["type"] == "model_type":
        return f"{where} must be an object"
    return f"{where}: {error['msg']}"  # RULE, or a check of pydantic's own that no field here names


def _refuse(problem: str, kind: str = FIELD) -> PydanticCustomError:
    # The problem goes in as context: a value quoted in it may hold braces the template would read.
    return PydanticCustomError(kind, "{problem}", {"problem": problem})


# The checks of one value each, as pydantic validators: they see the value as parsed from JSON,
# so nothing is coerced ("5" is not a number, 1 is not true).


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    problem = "must be an ISO 8601 time with a UTC offset"
    if not isinstance(value, str):
        raise _refuse(problem)
    try:
        moment = parse_datetime(value)
    except ValueError as error:  # well formed but impossible, e.g. month 13
        raise _refuse(f"{problem}: {error}") from None
    if moment is None or moment.tzinfo is None:
        raise _refuse(problem)
    try:
        moment.astimezone(UTC)  # stored in UTC: a time at either end of the calendar may not fit
    except OverflowError:
        raise _refuse("is out of range") from None
    return moment


def _required_when(value: Any) -> datetime:
    moment = _when(value)
    if moment is None:
        raise _refuse("must be an ISO 8601 time with a UTC offset")
    return moment


def _required_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _refuse("must be a string")
    if "\x00" in value:
        raise _refuse("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse("is not valid Unicode (a lone surrogate)") from None
    return value


def _text(value: Any) -> str:
    return "" if value is None else _required_text(value)


def _cut(length: int) -> AfterValidator:
    return AfterValidator(lambda text: text[:length])


def _choice(choices: list[str]) -> PlainValidator:
    def check(value: Any) -> str:
        if not (isinstance(value, str) and value in choices):
            raise _refuse(f"must be one of {', '.join(choices)}")
        return value

    return PlainValidator(check)


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _refuse("must be a UUID")


def _customer_id(value: Any) -> uuid.UUID:
    """A customer without an id is a new one."""
    return uuid.uuid4() if value in (None, "") else _uuid(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _refuse("must be true or false")
    return value


def _satisfaction(value: Any) -> int | None:
    if value is None or (type(value) is int and 1 <= value <= 5):
        return value
    raise _refuse("must be 1 to 5 or null")


def _token_count(value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    raise _refuse(f"must be a whole number from 0 to {MAX_TOKEN_COUNT}")


def _named(name_field: Callable[[], Any]) -> PlainValidator:
    """A user or a model version, referred to by name: a string that field would accept, or empty."""

    def check(value: Any) -> str:
        name = _text(value)
        if name:
            try:
                name_field().run_validators(name)
            except ValidationError as error:
                raise _refuse(f"{name!r} is not a valid name: {' '.join(error.messages)}") from None
        return name

    return PlainValidator(check)


def _username_field() -> Any:
    return get_user_model()._meta.get_field("username")


def _version_name_field() -> Any:
    from finetuning.models import ModelVersion

    return ModelVersion._meta.get_field("name")


When = Annotated[datetime | None, PlainValidator(_when)]
RequiredWhen = Annotated[datetime, PlainValidator(_required_when)]
Text = Annotated[str, PlainValidator(_text)]
RequiredText = Annotated[str, PlainValidator(_required_text)]
Flag = Annotated[bool, PlainValidator(_flag)]
UserName = Annotated[str, _named(_username_field)]


class Record(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _absent_is_null(cls, data: Any) -> Any:
        """A required key left out is checked like an explicit null, and refused in the same words."""
        if not isinstance(data, dict):
            return data
        return {name: None for name, info in cls.model_fields.items() if info.is_required()} | data


class FeedbackIn(Record):
    source: Annotated[str, _choice(Feedback.Source.values)]
    positive: Flag
    reason: str = ""
    comment: Text = ""
    author: UserName = ""
    created_at: When = None

    @field_validator("reason", mode="plain")
    @classmethod
    def _reason(cls, value: Any) -> str:
        reason = "" if value is None else value
        if not (isinstance(reason, str) and (reason in Feedback.Reason.values or reason == "")):
            raise _refuse(f"must be empty or one of {', '.join(Feedback.Reason.values)}")
        return reason


class CorrectionIn(Record):
    text: Text  # required: absent or null, it is empty, and refused as such
    author: UserName = ""
    created_at: When = None

    @field_validator("text")
    @classmethod
    def _not_empty(cls, text: str) -> str:
        if not text.strip():
            raise _refuse("must not be empty")
        return text


class MessageIn(Record):
    role: Annotated[str, _choice(Message.Role.values)]
    text: RequiredText
    status: Annotated[str, _choice(Message.Status.values)] = Message.Status.COMPLETE
    author: UserName = ""
    created_at: RequiredWhen
    first_token_at: When = None
    finished_at: When = None
    token_count: Annotated[int, PlainValidator(_token_count)] = 0
    model_name: Annotated[str, PlainValidator(_text), _cut(200)] = ""
    model_version: Annotated[str, _named(_version_name_field)] = ""
    error: Annotated[str, PlainValidator(_text), _cut(200)] = ""
    feedback: list[FeedbackIn] = []
    correction: CorrectionIn | None = None

    @field_validator("status")
    @classmethod
    def _in_flight_is_cancelled(cls, status: str) -> str:
        # In flight when exported: nothing here will ever finish it.
        return Message.Status.CANCELLED if status in Message.ACTIVE_STATUSES else status

    @field_validator("feedback", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise _refuse("must be a list")
        return value

    @field_validator("feedback")
    @classmethod
    def _one_per_source(cls, ratings: list[FeedbackIn]) -> list[FeedbackIn]:
        sources = [rating.source for rating in ratings]
        if len(set(sources)) != len(sources):
            raise _refuse("has two ratings from the same source")
        return ratings

    @field_validator("correction", mode="before")
    @classmethod
    def _an_object_or_null(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise _refuse("must be an object or null")
        return value

    @model_validator(mode="after")
    def _only_bot_replies_are_rated(self) -> MessageIn:
        if (self.feedback or self.correction is not None) and self.role != Message.Role.BOT:
            raise _refuse("only bot replies carry feedback or a correction", RULE)
        return self


class CustomerIn(Record):
    id: Annotated[uuid.UUID, PlainValidator(_customer_id)]
    display_name: Annotated[str, PlainValidator(_text), _cut(120)] = ""


class ConversationIn(Record):
    format: str = FORMAT
    id: Annotated[uuid.UUID, PlainValidator(_uuid)]
    customer: CustomerIn = Field(default_factory=CustomerIn)
    status: Annotated[str, _choice(Conversation.Status.values)] = Conversation.Status.CLOSED
    agent: UserName = ""
    created_at: RequiredWhen
    reviewed: Flag = False
    exclude_from_training: Flag = False
    tags: list[Text] = []
    note: Text = ""
    satisfaction: Annotated[int | None, PlainValidator(_satisfaction)] = None
    messages: list[MessageIn]

    @field_validator("format", mode="plain")
    @classmethod
    def _this_format(cls, value: Any) -> str:
        if value != FORMAT:
            raise _refuse(f'must be "{FORMAT}"')
        return FORMAT

    @field_validator("customer", mode="before")
    @classmethod
    def _anonymous(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("tags", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if not (isinstance(value, list) and all(isinstance(tag, str) for tag in value)):
            raise _refuse("must be a list of strings")
        return value

    @field_validator("messages", mode="before")
    @classmethod
    def _some(cls, value: Any) -> Any:
        if not (isinstance(value, list) and value):
            raise _refuse("must be a non-empty list")
        return value


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


def _versions(messages: list[MessageIn]) -> dict[str, Any]:
    """The model versions the messages name; one this database lacks is created, retired, without
    an adapter (see IMPORTED_ADAPTER), so the replies keep the version that wrote them."""
    from finetuning.models import ModelVersion

    named = {m.model_version: m.model_name for m in messages if m.model_version}
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


# The fields a row takes as they are; names and times are looked up or written apart.
CONVERSATION_COLUMNS = {"status", "reviewed", "exclude_from_training", "tags", "note", "satisfaction"}
MESSAGE_COLUMNS = {"role", "text", "status", "first_token_at", "finished_at", "token_count", "model_name", "error"}
FEEDBACK_COLUMNS = {"source", "positive", "reason", "comment"}


def _create(record: ConversationIn) -> Conversation:
    users: dict[str, Any] = {}
    customer, _ = Customer.objects.get_or_create(
        id=record.customer.id, defaults={"display_name": record.customer.display_name}
    )
    conversation = Conversation.objects.create(
        id=record.id,
        customer=customer,
        agent=_user(record.agent, users),
        **record.model_dump(include=CONVERSATION_COLUMNS),
    )
    # auto_now_add ignores a given time: historical times are written after the insert.
    Conversation.objects.filter(id=conversation.id).update(created_at=record.created_at)
    versions = _versions(record.messages)
    for item in record.messages:
        message = Message.objects.create(
            conversation=conversation,
            author=_user(item.author, users),
            model_version=versions.get(item.model_version),
            **item.model_dump(include=MESSAGE_COLUMNS),
        )
        Message.objects.filter(id=message.id).update(created_at=item.created_at)
        for rating in item.feedback:
            _feedback_create(message, rating, users)
        if item.correction is not None:
            _correction_create(message, item.correction, users)
    said = [m.created_at for m in record.messages if m.role != Message.Role.SYSTEM]
    Conversation.objects.filter(id=conversation.id).update(last_activity_at=max(said, default=record.created_at))
    return conversation


def _feedback_create(message: Message, rating: FeedbackIn, users: dict[str, Any]) -> None:
    feedback = Feedback.objects.create(
        message=message, author=_user(rating.author, users), **rating.model_dump(include=FEEDBACK_COLUMNS)
    )
    if rating.created_at:
        Feedback.objects.filter(id=feedback.id).update(created_at=rating.created_at)


def _correction_create(message: Message, given: CorrectionIn, users: dict[str, Any]) -> None:
    correction = Correction.objects.create(message=message, text=given.text, author=_user(given.author, users))
    if given.created_at:
        Correction.objects.filter(id=correction.id).update(created_at=given.created_at)
