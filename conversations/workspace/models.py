"""What a team on a shift adds to a conversation: who did what when (events), how far each agent
has read (unread counts), private notes between agents, and the team's canned replies."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class ConversationEvent(models.Model):
    """One thing that happened to a conversation, with who did it: what the thread shows agents as
    an activity line and what the reports count (handoffs, first human response, resolution)."""

    class Kind(models.TextChoices):
        HANDOFF_REQUESTED = "handoff_requested", "asked for a person"
        TAKEN_OVER = "taken_over", "taken over"
        HANDED_BACK = "handed_back", "handed back to the bot"
        CLOSED = "closed", "closed"
        ASSIGNED = "assigned", "assigned"
        UNASSIGNED = "unassigned", "unassigned"

    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    # Who did it (None: the customer, or the system), and for an assignment, to whom.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="event_conversation_time"),
            models.Index(fields=["kind", "created_at"], name="event_kind_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} · {self.created_at:%Y-%m-%d %H:%M}"


class ConversationRead(models.Model):
    """How far one agent has read one conversation: what came from the customer after
    ``read_at`` is unread for them. No row: everything the customer wrote is unread."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="reads")
    read_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "conversation"], name="read_one_per_agent")]


class ConversationNote(models.Model):
    """A private note between agents in a conversation's thread: never sent to the customer, never
    in a prompt, a dataset or an export for training."""

    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]


shortcut_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,39}$", "A shortcut is 1–40 lower-case letters, digits, - or _, like refund-policy."
)


class CannedReply(models.Model):
    """A shared snippet an agent inserts while typing ``/shortcut``."""

    shortcut = models.CharField(max_length=40, unique=True, validators=[shortcut_validator])
    text = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["shortcut"]
        verbose_name_plural = "canned replies"

    def __str__(self) -> str:
        return f"/{self.shortcut}"
