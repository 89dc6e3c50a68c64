"""Customers, their conversations and every message in them, with the feedback that teaches the bot."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


def token_nonce_new() -> str:
    return secrets.token_hex(16)


class Customer(models.Model):
    """A visitor, known by the id kept in their signed Django session (the page at /) or by the
    signed token a widget keeps (conversations/widget), which names ``token_nonce``: a new nonce
    revokes every token given out before."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=120, blank=True)
    # The client address the customer was first seen from (behind TRUSTED_PROXY_HOPS proxies): what
    # per-address limits count, beside the cookie a customer can throw away.
    address = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    email = models.EmailField(max_length=254, blank=True)  # from the pre-chat form or the host page
    # The widget site the customer came through, and the host's own user id when the host
    # vouched for it (identity verification): one customer per (site, external_id).
    site = models.ForeignKey(
        "conversations.WidgetSite", null=True, blank=True, on_delete=models.SET_NULL, related_name="customers"
    )
    external_id = models.CharField(max_length=200, blank=True)
    token_nonce = models.CharField(max_length=32, default=token_nonce_new)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "external_id"], condition=~Q(external_id=""), name="customer_external_id_per_site"
            )
        ]

    def __str__(self) -> str:
        return self.display_name or f"Customer {str(self.id)[:8]}"


# How the inbox sorts (``workspace.selectors.inbox``), and the index that serves it: PostgreSQL
# puts NULLs last in an ascending index by default, which is the order's NULLS LAST (SQLite refuses
# NULLS LAST in an index; there it only speeds the part after the wait).
INBOX_ORDER = (F("waiting_since").asc(nulls_last=True), F("last_activity_at").desc(), F("created_at").desc())
INBOX_INDEX = (F("waiting_since").asc(), F("last_activity_at").desc(), F("created_at").desc())


class Conversation(models.Model):
    class Status(models.TextChoices):
        BOT = "bot", "With the bot"
        WAITING = "waiting", "Waiting for an agent"
        AGENT = "agent", "With an agent"
        CLOSED = "closed", "Closed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="conversations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BOT, db_index=True)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who on the team answers for it (the inbox's Mine and Unassigned), apart from ``agent``, who
    # holds the conversation while its status is AGENT: a takeover assigns, and so do colleagues.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The last message from the customer or an agent, or a change of hands: what the inbox sorts by.
    last_activity_at = models.DateTimeField(default=timezone.now)
    waiting_since = models.DateTimeField(null=True, blank=True)  # set while the status is WAITING
    closed_at = models.DateTimeField(null=True, blank=True)
    reviewed = models.BooleanField(default=False)
    exclude_from_training = models.BooleanField(default=False)
    tags = models.JSONField(default=list, blank=True)
    note = models.TextField(blank=True)
    satisfaction = models.PositiveSmallIntegerField(null=True, blank=True)
    # Where the customer chats from: the host page's URL (the widget) and the browser's User-Agent.
    page_url = models.CharField(max_length=2000, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The inbox's own order (waiting first, longest wait first, then by last activity): a
            # page is read off the index instead of sorting every conversation (bench/inbox_bench.py).
            models.Index(*INBOX_INDEX, name="conversation_inbox_order"),
            models.Index(F("assignee"), *INBOX_INDEX, name="conversation_assignee_order"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} · {self.created_at:%Y-%m-%d %H:%M}"


class Message(models.Model):
    class Role(models.TextChoices):
        CUSTOMER = "customer"
        BOT = "bot"
        AGENT = "agent"
        SYSTEM = "system"

    class Status(models.TextChoices):
        PENDING = "pending"
        STREAMING = "streaming"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        FAILED = "failed"

    ACTIVE_STATUSES = (Status.PENDING, Status.STREAMING)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE, db_index=True)
    client_id = models.CharField(max_length=64, null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)  # queued, for a bot reply
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    model_name = models.CharField(max_length=200, blank=True)  # base model, and "+adapter" when one served
    claimed_by = models.CharField(max_length=200, blank=True)  # the worker (consumer name) writing it
    model_version = models.ForeignKey(
        "finetuning.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    # The knowledge entries a bot reply was grounded on: [{"entry": id, "score": cosine}], best first.
    grounding = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "role", "created_at"], name="message_conversation_role_time"),
            models.Index(fields=["model_version", "created_at"], name="message_version_time"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


class Feedback(models.Model):
    """A thumbs up or down on a bot reply, from the customer or from an agent reviewing it."""

    class Source(models.TextChoices):
        CUSTOMER = "customer"
        AGENT = "agent"

    class Reason(models.TextChoices):
        WRONG = "wrong"
        INCOMPLETE = "incomplete"
        UNHELPFUL = "unhelpful"
        RUDE = "rude"
        OTHER = "other"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    source = models.CharField(max_length=16, choices=Source.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    positive = models.BooleanField()
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "source"], name="feedback_one_per_source")]


class Correction(models.Model):
    """The reply an agent says the bot should have given. Never shown to the customer."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="correction")
    text = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)


class BotSettings(models.Model):
    """Settings an admin edits in the Django admin; the worker reads them per reply, no restart."""

    system_prompt = models.TextField(blank=True, help_text="The company persona. Empty: DEFAULT_SYSTEM_PROMPT.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "bot settings"

    def __str__(self) -> str:
        return "Bot settings"

    @classmethod
    def load(cls) -> BotSettings:
        settings_row, _ = cls.objects.get_or_create(pk=1)
        return settings_row


# Defined in their own package, registered with this app (and its migrations) from here.
from .knowledge.models import KnowledgeEntry, KnowledgeSource  # noqa: E402
from .widget.models import WidgetSite  # noqa: E402
from .workspace.models import CannedReply, ConversationEvent, ConversationNote, ConversationRead  # noqa: E402

__all__ = [
    "BotSettings",
    "CannedReply",
    "Conversation",
    "ConversationEvent",
    "ConversationNote",
    "ConversationRead",
    "Correction",
    "Customer",
    "Feedback",
    "KnowledgeEntry",
    "KnowledgeSource",
    "Message",
    "WidgetSite",
]
