"""The thread's endpoints: adding a note, the canned replies page, the composer's snippets. Agents
(and staff) only, like every workspace page."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from ..errors import ChatError
from ..models import Conversation
from ..roles import agent_required
from . import thread
from .models import CannedReply


def _agent(request: HttpRequest) -> User:
    """The signed-in agent: ``agent_required`` let only them through."""
    return cast(User, request.user)


@agent_required
@require_http_methods(["GET", "POST"])
def notes(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """GET: the thread's notes and activity lines, for a page that was offline a while. POST: a new
    note; JSON for the page's script (``{"ok", "note"}`` or a refusal), a redirect for a plain post."""
    conversation = get_object_or_404(Conversation, id=conversation_id)
    if request.method == "GET":
        return JsonResponse({"ok": True, **thread.thread_payload(conversation)})
    wants_json = "application/json" in request.headers.get("Accept", "")
    try:
        note = thread.note_add(conversation=conversation, author=_agent(request), text=request.POST.get("text"))
    except ChatError as error:
        if wants_json:
            return JsonResponse({"ok": False, "code": error.code, "detail": error.detail}, status=400)
        return HttpResponse(error.detail, status=400, content_type="text/plain; charset=utf-8")
    if wants_json:
        return JsonResponse({"ok": True, "note": thread.note_payload(note)})
    return HttpResponseRedirect(reverse("agent-transcript", args=[conversation.id]) + f"#note-{note.id}")


class CannedReplyForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = CannedReply
        fields = ["shortcut", "text"]
        widgets = {"text": forms.Textarea(attrs={"rows": 5})}
        help_texts = {"shortcut": "Typed after a slash in the reply box: /refund-policy."}
        error_messages = {"shortcut": {"unique": "Another canned reply already has this shortcut: pick another."}}

    def clean_shortcut(self) -> str:
        # What agents type is "/Refund": the slash and the capitals are not part of the shortcut.
        return str(self.cleaned_data["shortcut"]).strip().lstrip("/").lower()

    def clean_text(self) -> str:
        # It becomes a reply to a customer: no longer than one may be.
        text = str(self.cleaned_data["text"]).strip()
        limit = int(settings.CHAT_MAX_MESSAGE_CHARS)
        if len(text) > limit:
            raise forms.ValidationError(f"A canned reply is at most {limit} characters; this one has {len(text)}.")
        return text


@agent_required
@require_http_methods(["GET", "POST"])
def canned_list(request: HttpRequest) -> HttpResponse:
    """Every canned reply, and the form for a new one (posted here; errors beside the fields)."""
    form = CannedReplyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        reply = form.save(commit=False)
        reply.created_by = _agent(request)
        reply.save()
        return HttpResponseRedirect(reverse("agent-canned") + f"?saved={reply.shortcut}#canned-{reply.id}")
    context: dict[str, Any] = {
        "replies": thread.canned_replies(),
        "form": form,
        "saved": request.GET.get("saved", ""),
        "deleted": request.GET.get("deleted", ""),
    }
    return render(request, "agent/canned.html", context, status=400 if form.errors else 200)


@agent_required
@require_http_methods(["GET", "POST"])
def canned_edit(request: HttpRequest, reply_id: int) -> HttpResponse:
    reply = get_object_or_404(CannedReply, id=reply_id)
    form = CannedReplyForm(request.POST or None, instance=reply)
    if request.method == "POST" and form.is_valid():
        form.save()
        return HttpResponseRedirect(reverse("agent-canned") + f"?saved={reply.shortcut}#canned-{reply.id}")
    return render(request, "agent/canned_edit.html", {"reply": reply, "form": form}, status=400 if form.errors else 200)


@agent_required
@require_http_methods(["GET", "POST"])
def canned_delete(request: HttpRequest, reply_id: int) -> HttpResponse:
    """GET asks to confirm, naming the reply; the POST from that page deletes it."""
    reply = get_object_or_404(CannedReply, id=reply_id)
    if request.method == "POST":
        shortcut = reply.shortcut
        thread.canned_reply_delete(reply=reply)
        return HttpResponseRedirect(reverse("agent-canned") + f"?deleted={shortcut}")
    return render(request, "agent/canned_delete.html", {"reply": reply})


@agent_required
@require_GET
def snippets(request: HttpRequest) -> JsonResponse:
    """What the composer offers after a slash: ``{"ok", "snippets": [{kind, shortcut, label, text}]}``."""
    return JsonResponse({"ok": True, "snippets": thread.snippets(request.GET.get("q", ""))})
