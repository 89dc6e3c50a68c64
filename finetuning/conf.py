"""The learning loop's settings: read from Django settings when present, else these defaults.

Everything here can be set in the environment through chatbot/settings.py; the defaults suit the
default model (SmolLM2-135M-Instruct) on a few CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings


def _get(name: str, default: Any) -> Any:
    if hasattr(settings, name):
        return getattr(settings, name)
    raw = os.environ.get(name)
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return type(default)(raw)


def cache_dir() -> Path:
    """Where the base model's general replies are kept once generated."""
    return Path(_get("FINETUNING_CACHE_DIR", str(settings.BASE_DIR / ".cache" / "finetuning")))


def checkpoints_dir() -> Path:
    return Path(_get("FINETUNING_CHECKPOINTS_DIR", str(settings.BASE_DIR / "var" / "checkpoints")))


def adapters_dir() -> Path:
    return Path(settings.ADAPTERS_DIR)


def lease_seconds() -> int:
    return int(_get("FINETUNING_LEASE_S", 120))


def training_threads() -> int:
    return int(_get("FINETUNING_THREADS", 0))


def general_examples() -> int:
    """How many of the base model's own general replies each build mixes in."""
    return int(_get("FINETUNING_GENERAL_EXAMPLES", 40))


def eval_max_new_tokens() -> int:
    return int(_get("FINETUNING_EVAL_MAX_NEW_TOKENS", 32))


def eval_max_replays() -> int:
    return int(_get("FINETUNING_EVAL_MAX_REPLAYS", 24))
