"""Typed accessors over the learning loop's Django settings (each read from the environment by
chatbot/settings.py and documented in docs/settings.md). Read at call time, so a test's
``settings`` override applies at once."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


def cache_dir() -> Path:
    """Where the base model's general replies are kept once generated."""
    return Path(settings.FINETUNING_CACHE_DIR)


def checkpoints_dir() -> Path:
    return Path(settings.FINETUNING_CHECKPOINTS_DIR)


def adapters_dir() -> Path:
    return Path(settings.ADAPTERS_DIR)


def lease_seconds() -> int:
    return int(settings.FINETUNING_LEASE_S)


def sweep_seconds() -> float:
    """How often a Celery worker looks for runs whose worker died or whose message was lost."""
    return float(settings.FINETUNING_SWEEP_S)


def retention_every_seconds() -> float:
    """How often a Celery worker's sweeper redacts the conversations older than the admin's retention."""
    return float(settings.FINETUNING_RETENTION_EVERY_S)


def training_threads() -> int:
    """torch threads of a Celery worker; 0: half the cores (at least one), the rest left to chat."""
    threads = int(settings.FINETUNING_THREADS)
    return threads if threads > 0 else max(1, (os.cpu_count() or 2) // 2)


def cpu_priority() -> str:
    """The Celery worker's CPU priority: "idle" (SCHED_IDLE: runs only on cores chat leaves idle),
    "nice" (nice 19), or "normal" (unchanged)."""
    value = str(settings.FINETUNING_CPU_PRIORITY).strip().lower()
    if value not in {"idle", "nice", "normal"}:
        raise ValueError(f"FINETUNING_CPU_PRIORITY must be idle, nice or normal, not {value!r}")
    return value


def general_examples() -> int:
    """How many of the base model's own general replies each build mixes in."""
    return int(settings.FINETUNING_GENERAL_EXAMPLES)


def build_stale_seconds() -> int:
    """How long a dataset build may go without a write before it counts as lost with its worker."""
    return int(settings.FINETUNING_BUILD_STALE_S)


def eval_max_new_tokens() -> int:
    return int(settings.FINETUNING_EVAL_MAX_NEW_TOKENS)


def eval_max_replays() -> int:
    return int(settings.FINETUNING_EVAL_MAX_REPLAYS)


def probe_paraphrases() -> int:
    """Paraphrases the base model writes per taught fact for the evaluation's probes (0: none)."""
    return int(settings.FINETUNING_PROBE_PARAPHRASES)


def probe_max_facts() -> int:
    """Most taught facts probed per evaluation."""
    return int(settings.FINETUNING_PROBE_MAX_FACTS)


def probe_min_similarity() -> float:
    """MiniLM cosine a paraphrase keeps with its question: below it, it asks something else."""
    return float(settings.FINETUNING_PROBE_MIN_SIMILARITY)


def probe_unrelated() -> int:
    """How many of the fixed unrelated prompts the evaluation asks (0: all of them)."""
    return int(settings.FINETUNING_PROBE_UNRELATED)


def check_min_examples() -> int:
    """Fewest examples a check may rest on; below, it reads "not enough data" and does not pass."""
    return int(settings.FINETUNING_CHECK_MIN_EXAMPLES)


def paraphrases() -> int:
    """Phrasings the base model writes per corrected question in a dataset build (0: none)."""
    return int(settings.FINETUNING_PARAPHRASES)


def paraphrase_max_questions() -> int:
    """Most corrected questions reworded per build (the newest), which bounds the build's time."""
    return int(settings.FINETUNING_PARAPHRASE_MAX_QUESTIONS)


def paraphrase_min_similarity() -> float:
    """MiniLM cosine a training phrasing keeps with its question: below it, it asks something else."""
    return float(settings.FINETUNING_PARAPHRASE_MIN_SIMILARITY)


def raft_with_answer() -> float:
    """Share of taught examples whose prompt holds their own entry among the nearest others."""
    return float(settings.FINETUNING_RAFT_WITH_ANSWER)


def raft_distractors_only() -> float:
    """Share of examples whose prompt holds only other entries, the answer still the taught one."""
    return float(settings.FINETUNING_RAFT_DISTRACTORS_ONLY)


def dpo_steps() -> int:
    """Preference steps after SFT on the stored pairs (0: SFT alone)."""
    return int(settings.FINETUNING_DPO_STEPS)


def dpo_beta() -> float:
    return float(settings.FINETUNING_DPO_BETA)


def dpo_sft_weight() -> float:
    """Weight of the chosen reply's cross-entropy added to the DPO loss."""
    return float(settings.FINETUNING_DPO_SFT_WEIGHT)
