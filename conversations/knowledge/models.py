"""An entry (a question, its other phrasings and its answer) and the conversations it came from."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class KnowledgeEntry(models.Model):
    class Status(models.TextChoices):
        SUGGESTED = "suggested"
        APPROVED = "approved"
        RETIRED = "retired"

    question = models.TextField()
    alternatives = models.JSONField(default=list, blank=True)  # other phrasings of the question
    answer = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUGGESTED, db_index=True)
    # Another entry asks the same question with a different answer: neither is served until a person
    # resolves it (edits one, retires one, or merges them).
    conflict = models.BooleanField(default=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    # float32 rows, one per phrasing (the question, then each alternative), unit length: what the
    # worker's index is built from. Empty until something off the web process embeds the entry.
    embedding = models.BinaryField(blank=True, default=b"")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        app_label = "conversations"
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.question[:80]

    def phrasings(self) -> list[str]:
        return [self.question, *self.alternatives]


class KnowledgeSource(models.Model):
    """Where an entry came from: an agent's correction or takeover reply (ids kept even when the
    conversation is erased, so the count of sources stays true)."""

    entry = models.ForeignKey(KnowledgeEntry, on_delete=models.CASCADE, related_name="sources")
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        "conversations.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    correction = models.ForeignKey(
        "conversations.Correction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "conversations"
        constraints = [
            models.UniqueConstraint(
                fields=["entry", "message"], condition=models.Q(message__isnull=False), name="knowledge_source_once"
            )
        ]
