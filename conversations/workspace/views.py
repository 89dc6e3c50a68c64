"""The agents' workspace pages: the inbox, a transcript and its review, ratings, corrections,
export, erasure. Every view is for agents (and staff) only; the writes send their own frames."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from finetuning.models import ModelVersion

from .. import erasure, selectors, transcripts
from ..chat import services as chat_services
from ..errors import ChatError
from ..knowledge import selectors as knowledge_selectors
from ..models import Conversation, Feedback, Message
from ..roles import agent_required
from . import selectors as workspace_selectors
from . import services, thread


@agent_required
@ensure_csrf_cookie
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    filters = workspace_selectors.inbox_filters(request.GET)
    conversations = workspace_selectors.inbox(filters, request.user)  # type: ignore[arg-type]
    page = Paginator(conversations, settings.AGENT_INBOX_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    in_view = query.copy()
    in_view.pop("view", None)  # the tabs keep the filters and change the view
    counts = workspace_selectors.view_counts(request.user)  # type: ignore[arg-type]
    tabs = [
        {"view": view, "label": workspace_selectors.VIEW_LABELS[view], **counts[view]}
        for view in workspace_selectors.VIEWS
    ]
    return render(
        request,
        "agent/inbox.html",
        {
            "page": page,
            "filters": filters,
            "query": query.urlencode(),
            "carried": [(k, v) for k, values in query.lists() for v in values],  # the export form's filters
            "filter_query": in_view.urlencode(),
            "tabs": tabs,
            "counts": counts,
            "title_count": workspace_selectors.title_count(counts),
            "statuses": Conversation.Status.choices,
            "versions": ModelVersion.objects.order_by("-created_at"),
            "waiting": counts["waiting"]["count"],
            "agents": workspace_selectors.agents_to_assign(),
        },
    )


@agent_required
@require_GET
def inbox_counts(request: HttpRequest) -> JsonResponse:
    """The tabs' counts and the title's number for the signed-in agent (pages refresh them live)."""
    counts = workspace_selectors.view_counts(request.user)  # type: ignore[arg-type]
    answer: dict[str, Any] = {"ok": True, "views": counts, "title_count": workspace_selectors.title_count(counts)}
    if "view" in request.GET:  # the inbox page asks with its own query: how many it lists now
        filters = workspace_selectors.inbox_filters(request.GET)
        shown = Paginator(workspace_selectors.inbox(filters, request.user), settings.AGENT_INBOX_PAGE_SIZE)  # type: ignore[arg-type]
        answer["shown"] = {"count": shown.count, "pages": shown.num_pages}
    return JsonResponse(answer)


@agent_required
@require_POST
def conversation_assign(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """Assign to an agent (``assignee``: their id, or "me"), or unassign (empty)."""
    conversation = get_object_or_404(Conversation, id=conversation_id)
    raw = request.POST.get("assignee", "")
    try:
        assignee = request.user if raw == "me" else services.assignee_of(raw)
        conversation = services.conversation_assign(
            conversation=conversation,
            actor=request.user,  # type: ignore[arg-type]
            assignee=assignee,  # type: ignore[arg-type]
        )
    except ChatError as error:
        return _refused(error)
    return _answer(request, conversation, {"assignee_id": conversation.assignee_id})


@agent_required
@require_POST
def conversations_bulk(request: HttpRequest) -> JsonResponse:
    """One action on the selected conversations (``id`` repeated): close, tag, reviewed, exclude,
    assign; each through its single service. Says which were done, and which skipped and why."""
    try:
        ids = [uuid.UUID(i) for i in request.POST.getlist("id")]
    except ValueError:
        return _refused(ChatError("invalid_id", "Unknown conversation id."))
    if not ids:
        return _refused(ChatError("nothing_selected", "Select at least one conversation."))
    conversations = Conversation.objects.select_related("customer", "agent").filter(id__in=ids).order_by("id")
    try:
        result = services.conversations_bulk(
            conversations=conversations,
            action=request.POST.get("action", ""),
            agent=request.user,  # type: ignore[arg-type]
            tag=request.POST.get("tag"),
            assignee=request.POST.get("assignee"),
        )
    except ChatError as error:
        return _refused(error)
    return JsonResponse({"ok": True, "done": result.done, "skipped": result.skipped})


@agent_required
@ensure_csrf_cookie
@require_GET
def transcript(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = get_object_or_404(Conversation.objects.select_related("customer", "agent"), id=conversation_id)
    messages = workspace_selectors.transcript(conversation)
    grounding = knowledge_selectors.grounding_rows(m.grounding for m in messages)
    rows = [{**_transcript_row(m), "grounding": g} for m, g in zip(messages, grounding, strict=True)]
    notes, activity = thread.thread_extras(conversation)
    return render(
        request,
        "agent/transcript.html",
        {
            "conversation": conversation,
            "rows": rows,
            "thread": thread.thread(rows, notes, activity),
            "context": thread.customer_context(conversation),
            "reasons": Feedback.Reason.choices,
            "tags": ", ".join(conversation.tags),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "note_max_chars": thread.note_max_chars(),
        },
    )


def _transcript_row(message: Message) -> dict[str, Any]:
    ratings = {f.source: f for f in message.feedback.all()}
    return {
        "message": message,
        "customer_feedback": ratings.get(Feedback.Source.CUSTOMER),
        "agent_feedback": ratings.get(Feedback.Source.AGENT),
        "correction": getattr(message, "correction", None),
        "first_token_s": _seconds(message.first_token_at - message.created_at) if message.first_token_at else None,
        "total_s": _seconds(message.finished_at - message.created_at) if message.finished_at else None,
    }


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 2)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _answer(request: HttpRequest, conversation: Conversation, payload: dict[str, Any]) -> HttpResponse:
    """JSON for the page's script; a redirect back to the transcript for a plain form post."""
    if _wants_json(request):
        return JsonResponse({"ok": True, **payload})
    return HttpResponseRedirect(reverse("agent-transcript", args=[conversation.id]))


def _refused(error: ChatError) -> JsonResponse:
    return JsonResponse({"ok": False, "code": error.code, "detail": error.detail}, status=400)


def _flag(request: HttpRequest, name: str) -> bool | None:
    if name not in request.POST:
        return None
    return request.POST[name] in ("1", "on", "true")


@agent_required
@require_POST
def conversation_review(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """Tags, note, reviewed, exclude-from-training: only the fields posted change."""
    conversation = get_object_or_404(Conversation, id=conversation_id)
    try:
        services.conversation_review(
            conversation=conversation,
            tags=request.POST.get("tags"),
            note=request.POST.get("note"),
            reviewed=_flag(request, "reviewed"),
            exclude_from_training=_flag(request, "exclude_from_training"),
        )
    except ChatError as error:
        return _refused(error)
    return _answer(
        request,
        conversation,
        {
            "tags": conversation.tags,
            "note": conversation.note,
            "reviewed": conversation.reviewed,
            "exclude_from_training": conversation.exclude_from_training,
        },
    )


@agent_required
@require_POST
def message_feedback(request: HttpRequest, message_id: int) -> HttpResponse:
    """An agent rates a bot reply good or bad (with a reason); ``positive`` empty clears the rating."""
    message = get_object_or_404(Message.objects.select_related("conversation"), id=message_id)
    positive = {"1": True, "true": True, "0": False, "false": False}.get(request.POST.get("positive", ""))
    try:
        feedback = chat_services.feedback_set(
            message=message,
            source=Feedback.Source.AGENT,
            positive=positive,
            reason=request.POST.get("reason", ""),
            comment=request.POST.get("comment", ""),
            author=request.user,
        )
    except ChatError as error:
        return _refused(error)
    return _answer(
        request,
        message.conversation,
        {"message_id": message.id, "agent_feedback": selectors.feedback_payload(feedback) if feedback else None},
    )


@agent_required
@require_POST
def message_correction(request: HttpRequest, message_id: int) -> HttpResponse:
    message = get_object_or_404(Message.objects.select_related("conversation"), id=message_id)
    try:
        correction = services.correction_set(message=message, text=request.POST.get("text", ""), author=request.user)
    except ChatError as error:
        return _refused(error)
    return _answer(
        request, message.conversation, {"message_id": message.id, "correction": correction.text if correction else ""}
    )


@agent_required
@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The selected conversations (``id=`` repeated), or else exactly those the inbox view and its
    filters list (``view=`` and the filters, as the inbox page's export form carries them)."""
    ids = request.GET.getlist("id")
    if ids:
        try:
            conversations = Conversation.objects.filter(id__in=[uuid.UUID(i) for i in ids]).order_by("-created_at")
        except ValueError:
            raise Http404("Unknown conversation id.") from None
    else:
        filters = workspace_selectors.inbox_filters(request.GET)
        conversations = workspace_selectors.inbox(filters, request.user)  # type: ignore[arg-type]
    rows = transcripts.export_queryset(conversations).iterator(chunk_size=200)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        response = StreamingHttpResponse(transcripts.export_csv(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(transcripts.export_jsonl(rows), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.{fmt}"'
    return response


@agent_required
@require_http_methods(["GET", "POST"])
def customer_erase(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Staff only. GET names everything erasing the customer removes and asks to confirm; the POST
    from that page (it carries the customer's id as the confirmation) removes it."""
    if not (request.user.is_staff or request.user.is_superuser):
        return HttpResponseForbidden("Only staff can erase a customer's data.")
    try:
        customer = erasure.customer_get(customer_id=customer_id)
    except erasure.UnknownCustomer:
        raise Http404("Unknown customer.") from None
    context: dict[str, Any] = {"customer": customer}
    if request.method == "POST" and request.POST.get("confirm") == str(customer.id):
        context["erased"] = erasure.customer_erase(customer_id=customer.id)
        return render(request, "agent/erase.html", context)
    context["erasure"] = erasure.customer_erasure_preview(customer=customer)
    context["conversations"] = customer.conversations.order_by("-created_at")
    unconfirmed = request.method == "POST"
    context["unconfirmed"] = unconfirmed
    return render(request, "agent/erase.html", context, status=400 if unconfirmed else 200)
