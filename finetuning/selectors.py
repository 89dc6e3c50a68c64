from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from . import conf
from .models import DatasetBuild, ModelVersion, Promotion, TrainingRun


def version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("-promoted_at").first()


def version_for_replies() -> ModelVersion | None:
    """What a new reply is generated with: the active version, or the bare base model while the
    active one is marked unservable (a worker could not load its adapter). Customers keep getting
    answers instead of one failure each, until an admin rolls back or promotes it again."""
    active = version_active()
    return None if active is not None and active.serve_error else active


def run_payload(run: TrainingRun) -> dict[str, Any]:
    """What the run page polls: everything the progress bar and the loss curve draw."""
    return {
        "id": run.id,
        "status": run.status,
        "phase": run.phase,
        "phase_text": run_phase_text(run),
        "step": run.step,
        "total_steps": run.total_steps,
        "progress": round(run.progress, 4),
        "loss_history": run.loss_history,
        "tokens_per_s": run.tokens_per_s,
        "eta_s": run.eta_s,
        "resumed_from_step": run.resumed_from_step,
        "attempts": run.attempts,
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "snapshot": run.snapshot_id,
        "version": run.version.name if run.version_id and run.version else None,
        "finished": run.status not in TrainingRun.ACTIVE_STATUSES,
    }


def run_phase_text(run: TrainingRun) -> str:
    """What a run is doing, in words: the overview's table and the run page say this rather than
    "step 0 of 0" while its dataset is built or its version evaluated."""
    steps = f"step {run.step} of {run.total_steps}" if run.total_steps else ""
    if run.status == TrainingRun.Status.QUEUED:
        return "Queued: waiting for a training worker"
    if run.status != TrainingRun.Status.RUNNING:
        return run.get_status_display().capitalize() + (f" after {steps}" if steps else "")
    if run.cancel_requested:
        return "Cancelling…"
    if run.phase == "building":
        return "Building the dataset…"
    if run.phase == "training":
        return f"Training: {steps}" if steps else "Training: starting…"
    if run.phase == "evaluating":
        return "Evaluating…"
    return "Starting…"


def promotion_stack() -> list[ModelVersion | None]:
    """The versions that served in turn: a promote pushes, a rollback pops."""
    stack: list[ModelVersion | None] = []
    for event in Promotion.objects.select_related("version"):
        if event.kind == Promotion.Kind.PROMOTE:
            stack.append(event.version)
        elif stack:
            stack.pop()
    return stack


@dataclass(frozen=True)
class Rollback:
    """Where a rollback would go now: ``version`` (None: the base model) when ``possible``, else
    ``reason`` says why there is nothing to roll back to."""

    possible: bool
    version: ModelVersion | None = None
    reason: str = ""

    @property
    def label(self) -> str:
        return self.version.name if self.version is not None else "the base model"


def rollback_target() -> Rollback:
    """What services.version_rollback would do now; the pages offer "Roll back" from this."""
    stack = promotion_stack()
    if version_active() is None and not stack:
        return Rollback(False, reason="the base model is serving and nothing served before it")
    if stack:
        stack.pop()
    return Rollback(True, stack[-1] if stack else None)


# A build's error once its worker is taken for lost (services.builds_fail_stale writes it; the
# payload shows it before that): here, so services import selectors and never the other way.
LOST_BUILD = "its worker stopped answering (no progress for {minutes} minutes): start another build"


def build_stale_before() -> datetime:
    """A build unchanged since before this lost its worker (services.builds_fail_stale)."""
    return timezone.now() - timedelta(seconds=conf.build_stale_seconds())


def build_latest() -> DatasetBuild | None:
    return DatasetBuild.objects.select_related("snapshot").first()


def build_payload(build: DatasetBuild) -> dict[str, Any]:
    """What the overview polls while a dataset is built: its status, phase and, once ready, its link.
    A build nobody has written for too long reads as failed already (its worker was lost)."""
    status, error = build.status, build.error
    if status in DatasetBuild.ACTIVE_STATUSES and build.updated_at < build_stale_before():
        status, error = DatasetBuild.Status.FAILED, LOST_BUILD.format(minutes=round(conf.build_stale_seconds() / 60))
    phases = len(DatasetBuild.PHASES)
    snapshot = build.snapshot if status == DatasetBuild.Status.READY else None
    return {
        "id": build.id,
        "status": status,
        "phase": build.phase,
        "phase_text": _build_phase_text(status, build.phase),
        "phases_done": build.phases_done,
        "phases_total": phases,
        "progress": round(build.phases_done / phases, 4),
        "error": error,
        "finished": status not in DatasetBuild.ACTIVE_STATUSES,
        "snapshot": None
        if snapshot is None
        else {
            "id": snapshot.id,
            "name": snapshot.content_hash[:10],
            "examples": (snapshot.counts or {}).get("examples", 0),
            "url": reverse("finetuning:snapshot_detail", args=[snapshot.id]),
        },
        "status_url": reverse("finetuning:build_status", args=[build.id]),
    }


def _build_phase_text(status: str, phase: str) -> str:
    if status == DatasetBuild.Status.QUEUED:
        return "Queued: waiting for a worker on the finetuning queue"
    if status == DatasetBuild.Status.BUILDING:
        return DatasetBuild.PHASES.get(phase, "Starting") + "…"
    if status == DatasetBuild.Status.READY:
        return "Built."
    return "It stopped with this error:"


def version_live_results(version: ModelVersion) -> dict[str, Any]:
    """How the version has done in service: its replies, their thumbs, the conversations handed to a person."""
    from conversations.models import Conversation, Feedback, Message

    replies = Message.objects.filter(model_version=version, role=Message.Role.BOT)
    thumbs = Feedback.objects.filter(message__model_version=version).aggregate(
        up=Count("id", filter=Q(positive=True)), down=Count("id", filter=Q(positive=False))
    )
    conversations = Conversation.objects.filter(messages__model_version=version).distinct()
    handoffs = conversations.filter(
        Q(status__in=[Conversation.Status.WAITING, Conversation.Status.AGENT]) | Q(messages__role=Message.Role.AGENT)
    ).distinct()
    return {
        "replies": replies.count(),
        "conversations": conversations.count(),
        "thumbs_up": thumbs["up"],
        "thumbs_down": thumbs["down"],
        "handoffs": handoffs.count(),
        "latest": list(replies.order_by("-created_at").prefetch_related("feedback")[:20]),
    }


def version_checks(version: ModelVersion) -> list[dict[str, Any]]:
    """The version page's checks: each one passed, failed or "not enough data", with its count."""
    metrics = version.metrics or {}
    counts = metrics.get("check_examples", {})
    thin = set(metrics.get("not_enough_data", []))
    rows = []
    for name, passed in metrics.get("checks", {}).items():
        state = "not enough data" if name in thin else "passed" if passed is True else "failed"
        rows.append({"name": name, "state": state, "examples": counts.get(name)})
    return rows


def run_cancel_requested(run_id: int) -> bool:
    return bool(TrainingRun.objects.filter(id=run_id).values_list("cancel_requested", flat=True).first())
