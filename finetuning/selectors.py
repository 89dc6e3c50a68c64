from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from .models import ModelVersion, TrainingRun


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
