from __future__ import annotations

from .models import ModelVersion


def version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("-promoted_at").first()
