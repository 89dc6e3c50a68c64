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


def sweep_seconds() -> float:
    """How often a Celery worker looks for runs whose worker died or whose message was lost."""
    return float(_get("FINETUNING_SWEEP_S", 30.0))


def retention_every_seconds() -> float:
    """How often a Celery worker's sweeper redacts the conversations older than the admin's retention."""
    return float(_get("FINETUNING_RETENTION_EVERY_S", 3600.0))


def training_threads() -> int:
    """torch threads of a Celery worker; 0: half the cores (at least one), the rest left to chat."""
    threads = int(_get("FINETUNING_THREADS", 0))
    return threads if threads > 0 else max(1, (os.cpu_count() or 2) // 2)


def cpu_priority() -> str:
    """The Celery worker's CPU priority: "idle" (SCHED_IDLE: runs only on cores chat leaves idle),
    "nice" (nice 19), or "normal" (unchanged)."""
    value = str(_get("FINETUNING_CPU_PRIORITY", "idle")).strip().lower()
    if value not in {"idle", "nice", "normal"}:
        raise ValueError(f"FINETUNING_CPU_PRIORITY must be idle, nice or normal, not {value!r}")
    return value


def general_examples() -> int:
    """How many of the base model's own general replies each build mixes in."""
    return int(_get("FINETUNING_GENERAL_EXAMPLES", 40))


def eval_max_new_tokens() -> int:
    return int(_get("FINETUNING_EVAL_MAX_NEW_TOKENS", 32))


def eval_max_replays() -> int:
    return int(_get("FINETUNING_EVAL_MAX_REPLAYS", 24))
