"""The engines a worker serves with, built from the settings.

Each factory returns the ``Engine`` protocol, so mypy checks every backend against the one seam
the worker is written to. Each imports its engine only when called: the fake never loads torch.
"""

from __future__ import annotations

from django.conf import settings

from .types import Engine


def fake_engine() -> Engine:
    from .fake import FakeEngine

    return FakeEngine(step_delay_s=0.05)


def real_engine() -> Engine:
    from .engine import load_engine
    from .model_store import resolve_base_model

    base = resolve_base_model(settings.BASE_MODEL, settings.MODEL_CACHE_DIR)
    return load_engine(
        base,
        device=settings.INFERENCE_DEVICE,
        dtype=settings.INFERENCE_DTYPE,
        threads=settings.INFERENCE_THREADS or None,
        max_running=settings.INFERENCE_MAX_RUNNING,
        max_queue=settings.INFERENCE_MAX_QUEUE,
        adapters_dir=settings.ADAPTERS_DIR,
        prefix_cache_tokens=settings.INFERENCE_PREFIX_CACHE_TOKENS,
    )
