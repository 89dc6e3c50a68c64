"""A website allowed to embed the chat, with how the widget looks and behaves there."""

from __future__ import annotations

import secrets

from django.core.validators import RegexValidator
from django.db import models


def site_key_new() -> str:
    """The public id in the snippet: random, so sites cannot be enumerated."""
    return secrets.token_hex(8)


def identity_secret_new() -> str:
    return secrets.token_hex(32)


BRAND_COLOUR = RegexValidator(r"^#[0-9a-fA-F]{6}$", "A colour is # and six hex digits, like #2563eb.")


class WidgetSite(models.Model):
    class Position(models.TextChoices):
        RIGHT = "right", "Bottom right"
        LEFT = "left", "Bottom left"

    class Prechat(models.TextChoices):
        OFF = "off", "Off"
        OPTIONAL = "optional", "Optional: name and e-mail may be skipped"
        REQUIRED = "required", "Required: name and e-mail before the first message"

    key = models.SlugField(max_length=32, unique=True, default=site_key_new, editable=False)
    name = models.CharField(max_length=120)
    # Normalised origins (conversations/widget/origins.py): the pages allowed to frame the chat.
    allowed_origins = models.JSONField(default=list, blank=True)
    title = models.CharField(max_length=80, default="Support")
    greeting = models.CharField(max_length=300, blank=True)
    brand_colour = models.CharField(max_length=7, default="#2563eb", validators=[BRAND_COLOUR])
    position = models.CharField(max_length=8, choices=Position.choices, default=Position.RIGHT)
    prechat = models.CharField(max_length=8, choices=Prechat.choices, default=Prechat.OFF)
    # HMAC-SHA256 key for identity verification: the host's server signs its user ids with it.
    identity_secret = models.CharField(max_length=64, default=identity_secret_new, editable=False)
    suggestions = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "conversations"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name
