"""Device and dtype choice: CUDA with bf16 where a GPU is present, the CPU in fp32 otherwise.

CI has no GPU, so the CUDA branch is driven through torch.cuda.is_available; what load_engine
then asks transformers for is checked without moving weights to a device that is not there.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from conversations.inference import engine as engine_module
from conversations.inference.engine import load_engine, pick_device, pick_dtype


@pytest.mark.parametrize(("cuda", "device", "dtype"), [(True, "cuda", torch.bfloat16), (False, "cpu", torch.float32)])
def test_auto_takes_the_gpu_in_bf16_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, device: str, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    chosen = pick_device("auto")
    assert chosen.type == device
    assert pick_dtype("auto", chosen) == dtype


@pytest.mark.parametrize(
    ("name", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_a_dtype_setting_overrides_auto(name: str, dtype: torch.dtype) -> None:
    assert pick_dtype(name, torch.device("cpu")) == dtype
    assert pick_device("cpu").type == "cpu"


def test_an_unknown_dtype_is_refused() -> None:
    with pytest.raises(KeyError):
        pick_dtype("int3", torch.device("cpu"))


def test_load_engine_asks_for_the_settings_dtype_and_threads(
    monkeypatch: pytest.MonkeyPatch, model_folder: str
) -> None:
    asked: dict[str, Any] = {}
    real = engine_module.AutoModelForCausalLM.from_pretrained

    def from_pretrained(folder: Any, **kwargs: Any) -> Any:
        asked.update(kwargs)
        asked["model"] = real(folder, **kwargs)
        return asked["model"]

    monkeypatch.setattr(engine_module.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    threads = torch.get_num_threads()
    try:
        engine = load_engine(model_folder, device="cpu", dtype="bf16", threads=1)
        assert asked["dtype"] == torch.bfloat16
        assert next(asked["model"].parameters()).dtype == torch.bfloat16
        assert engine.device.type == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
