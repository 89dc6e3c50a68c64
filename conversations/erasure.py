"""A customer's right to be forgotten, and stored text that does not outlive its use.

``customer_erase`` removes everything a customer said and everything made from it (conversations,
messages, feedback, corrections, dataset examples, the replays of them in evaluation results) and
marks the model versions trained on it, whose adapters still hold what they learnt. The customer
row stays as an anonymised stub (no name, no address, no e-mail or host user id, a new token nonce
that revokes its widget tokens, nothing attached): a second erasure finds it
and has nothing left to do, and the browser's cookie, should it come back, starts an empty chat.

``conversations_redact_old`` passes old text through ``finetuning.redaction.redact`` in place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from finetuning.models import DatasetSnapshot, Example, ModelVersion, TrainingSettings
from finetuning.redaction import redact

from . import events
from .models import Conversation, Correction, Customer, Feedback, Message, token_nonce_new

log = logging.getLogger(__name__)


class UnknownCustomer(Exception):
    def __init__(self, customer_id: Any) -> None:
        super().__init__(f"no customer with id {customer_id!r}")


@dataclass
class Erasure:
    """What an erasure removes (or, before it runs, would remove), for the confirmation and the log."""

    customer_id: str
    conversations: int = 0
    messages: int = 0
    feedback: int = 0
    corrections: int = 0
    examples: int = 0
    versions: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.conversations or self.messages or self.feedback or self.corrections or self.examples)

    def describe(self) -> str:
        counts = (
            f"{self.conversations} conversations, {self.messages} messages, {self.feedback} ratings, "
            f"{self.corrections} corrections, {self.examples} dataset examples"
        )
        marked = ", ".join(self.versions) if self.versions else "none"
        return f"{counts}; versions trained on them: {marked}"


def customer_get(*, customer_id: Any) -> Customer:
    """The customer, or UnknownCustomer for an id that is not one (malformed ids included)."""
    try:
        key = uuid.UUID(str(customer_id))
    except ValueError:
        raise UnknownCustomer(customer_id) from None
    customer = Customer.objects.filter(id=key).first()
    if customer is None:
        raise UnknownCustomer(customer_id)
    return customer


def _examples_of(customer: Customer, conversation_ids: list[str]) -> models.QuerySet[Example]:
    return Example.objects.filter(Q(customer_id=str(customer.id)) | Q(conversation_id__in=conversation_ids))


def customer_erasure_preview(*, customer: Customer) -> Erasure:
    conversation_ids = [str(i) for i in Conversation.objects.filter(customer=customer).values_list("id", flat=True)]
    messages = Message.objects.filter(conversation__customer=customer)
    examples = _examples_of(customer, conversation_ids)
    snapshots = set(examples.values_list("snapshot_id", flat=True))
    return Erasure(
        customer_id=str(customer.id),
        conversations=len(conversation_ids),
        messages=messages.count(),
        feedback=Feedback.objects.filter(message__in=messages).count(),
        corrections=Correction.objects.filter(message__in=messages).count(),
        examples=examples.count(),
        versions=sorted(ModelVersion.objects.filter(snapshot_id__in=snapshots).values_list("name", flat=True)),
    )


def _question(chat: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")


def _version_mark(version: ModelVersion, *, at: str, examples: int, erased: set[tuple[str, str]]) -> None:
    """Note the erasure on the version, and drop the evaluation's replays of the erased examples:
    they quote the customer's question and the agent's answer to it."""
    metrics = dict(version.metrics or {})
    replays = metrics.get("replays") or []
    kept = [row for row in replays if (row.get("question"), row.get("correction")) not in erased]
    if len(kept) != len(replays):
        metrics["replays"] = kept
    note = {"at": at, "examples": examples, "snapshot": version.snapshot_id}
    version.trained_on_erased_data = [*version.trained_on_erased_data, note]
    version.metrics = metrics
    version.save(update_fields=["trained_on_erased_data", "metrics"])


def _examples_erase(examples: models.QuerySet[Example], at: str) -> list[str]:
    """Delete the examples; mark their snapshots and the versions trained on those. The marked names."""
    rows = list(examples.values_list("snapshot_id", "chat", "reply"))
    per_snapshot: dict[int, int] = {}
    erased: dict[int, set[tuple[str, str]]] = {}
    for snapshot_id, chat, reply in rows:
        per_snapshot[snapshot_id] = per_snapshot.get(snapshot_id, 0) + 1
        erased.setdefault(snapshot_id, set()).add((_question(chat), reply))
    examples.delete()
    marked = []
    for snapshot in DatasetSnapshot.objects.select_for_update().filter(id__in=per_snapshot):
        snapshot.erasures = [*snapshot.erasures, {"at": at, "examples": per_snapshot[snapshot.id]}]
        snapshot.save(update_fields=["erasures"])
    for version in ModelVersion.objects.select_for_update().filter(snapshot_id__in=per_snapshot):
        assert version.snapshot_id is not None
        snapshot_id = version.snapshot_id
        _version_mark(version, at=at, examples=per_snapshot[snapshot_id], erased=erased[snapshot_id])
        marked.append(version.name)
    return sorted(marked)


def customer_erase(*, customer_id: Any) -> Erasure:
    """Remove the customer's conversations and all made from them; idempotent (a second call
    removes nothing and says so). UnknownCustomer for an id that never was a customer."""
    with transaction.atomic():
        # Locked, so two erasures of one customer (a double click) run one after the other.
        customer = Customer.objects.select_for_update().get(id=customer_get(customer_id=customer_id).id)
        erasure = customer_erasure_preview(customer=customer)
        conversations = Conversation.objects.filter(customer=customer)
        conversation_ids = [str(i) for i in conversations.values_list("id", flat=True)]
        erasure.versions = _examples_erase(_examples_of(customer, conversation_ids), timezone.now().isoformat())
        # Feedback and corrections go with their messages, messages with their conversations (CASCADE).
        conversations.delete()
        # A new token nonce: the widget's tokens for this customer stop working (docs/widget.md).
        Customer.objects.filter(id=customer.id).update(
            display_name="", address=None, email="", external_id="", token_nonce=token_nonce_new()
        )
        events.send_on_commit(events.customer_signed_out(customer.id))  # its widget sockets close now
    log.info("erased customer %s: %s", erasure.customer_id, erasure.describe())
    return erasure


@dataclass
class Redaction:
    """How many stored texts a retention pass changed, by kind."""

    cutoff: datetime
    changed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.changed.values())


# What retention redacts: (what to call it, the model, its text fields); a row's age is its created_at.
RETAINED_TEXT: list[tuple[str, type[models.Model], tuple[str, ...]]] = [
    ("messages", Message, ("text",)),
    ("corrections", Correction, ("text",)),
    ("feedback comments", Feedback, ("comment",)),
    ("notes", Conversation, ("note",)),
]


def _batches(rows: models.QuerySet[Any], size: int) -> Iterator[list[Any]]:
    """The rows in primary-key order, a batch at a time, each batch a query of its own: no cursor
    stays open while the batch before it is written."""
    last: Any = None
    while True:
        page = rows if last is None else rows.filter(pk__gt=last)
        batch = list(page.order_by("pk")[:size])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def _redact_rows(model: type[models.Model], fields: tuple[str, ...], cutoff: datetime) -> int:
    """Redact one model's old text; only rows whose text changes are written, so a second pass
    writes nothing (redact is idempotent)."""
    old = model._default_manager.filter(created_at__lt=cutoff).exclude(**{f: "" for f in fields})
    changed = 0
    for batch in _batches(old.only("pk", *fields), 500):
        dirty = []
        for row in batch:
            cleaned = {f: redact(getattr(row, f)) for f in fields}
            if any(cleaned[f] != getattr(row, f) for f in fields):
                for name, value in cleaned.items():
                    setattr(row, name, value)
                dirty.append(row)
        if dirty:
            # A bulk update touches only these columns: auto_now timestamps and live rows stay as they are.
            model._default_manager.bulk_update(dirty, list(fields))
            changed += len(dirty)
    return changed


def conversations_redact_old(*, days: int, now: datetime | None = None) -> Redaction:
    """Pass the text of everything stored more than ``days`` days ago through redact, in place."""
    if days <= 0:
        raise ValueError("days must be at least 1 (0 keeps everything)")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    report = Redaction(cutoff=cutoff)
    for kind, model, fields in RETAINED_TEXT:
        report.changed[kind] = _redact_rows(model, fields, cutoff)
    return report


def retention_apply() -> Redaction | None:
    """The retention pass the admin set (``TrainingSettings.redact_conversations_after_days``);
    None when it is 0 (keep)."""
    days = TrainingSettings.load().redact_conversations_after_days
    if days == 0:
        return None
    started = time.monotonic()
    report = conversations_redact_old(days=days)
    log.info(
        "retention: redacted %s texts older than %s days in %.1f s", report.total, days, time.monotonic() - started
    )
    return report
