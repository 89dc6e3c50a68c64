"""python manage.py prepare_model: convert the packaged base model once into the model cache."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.inference.model_store import PACKAGED_MODEL, is_cached, resolve_base_model


class Command(BaseCommand):
    help = "Make sure the base model is ready to load (converts the packaged SmolLM2 GGUF on first run)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.BASE_MODEL:
            self.stdout.write(f"BASE_MODEL={settings.BASE_MODEL}: loaded as given, nothing to prepare.")
            return
        target = settings.MODEL_CACHE_DIR / PACKAGED_MODEL
        if is_cached(target):
            self.stdout.write(f"Base model ready: {target}")
            return
        self.stdout.write(f"Converting {PACKAGED_MODEL} from GGUF into {target} (once, about 20 s)...")
        started = time.monotonic()
        resolve_base_model("", settings.MODEL_CACHE_DIR)
        self.stdout.write(self.style.SUCCESS(f"Base model ready in {time.monotonic() - started:.0f} s: {target}"))
