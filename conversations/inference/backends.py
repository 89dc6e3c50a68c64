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


def vllm_engine(url: str | None = None) -> Engine:
    """A client of the vLLM server at ``url`` (default ``VLLM_URL``). The prompt is built here, so
    the worker needs the base model's tokenizer locally; the weights stay on the server."""
    from .model_store import resolve_base_model
    from .vllm import VllmEngine

    engine = VllmEngine(
        url or settings.VLLM_URL,
        model=settings.VLLM_MODEL,
        tokenizer_path=resolve_base_model(settings.BASE_MODEL, settings.MODEL_CACHE_DIR),
        adapters_dir=settings.ADAPTERS_DIR,
        server_adapters_dir=settings.VLLM_ADAPTERS_DIR,
        max_running=settings.INFERENCE_MAX_QUEUE,
    )
    engine.tokenizer  # noqa: B018 - loaded now: a worker that cannot build prompts should not start
    return engine


BACKENDS = ("builtin", "vllm")


def engine_from_settings(*, fake: bool = False, vllm_url: str = "") -> Engine:
    """The engine ``INFERENCE_BACKEND`` names (``--fake`` wins; a ``vllm_url`` implies vLLM)."""
    if fake:
        return fake_engine()
    backend = "vllm" if vllm_url else settings.INFERENCE_BACKEND
    if backend == "vllm":
        return vllm_engine(vllm_url or None)
    if backend == "builtin":
        return real_engine()
    raise ValueError(f"INFERENCE_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
