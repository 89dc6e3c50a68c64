"""Device and dtype choice: CUDA with bf16 where a GPU is present; a CPU in bf16 only where it
has a bf16 unit (AMX-BF16 or AVX512-BF16), fp32 otherwise.

CI has no GPU, so the CUDA branch is driven through torch.cuda.is_available; what load_engine
then asks transformers for is checked without moving weights to a device that is not there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from conversations.inference import engine as engine_module
from conversations.inference.device import cpu_flags, cpu_has_native_bf16
from conversations.inference.engine import load_engine, pick_device, pick_dtype

# Flags lines as /proc/cpuinfo writes them (trimmed): this VM's AMD EPYC Zen 3, a Sapphire Rapids
# Xeon, and an AVX-512 Zen 4.
ZEN3 = "fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes vpclmulqdq"
SAPPHIRE_RAPIDS = "avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = "avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16"


@pytest.mark.parametrize(("cuda", "device", "dtype"), [(True, "cuda", torch.bfloat16), (False, "cpu", torch.float32)])
def test_auto_takes_the_gpu_in_bf16_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, device: str, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    chosen = pick_device("auto")
    assert chosen.type == device
    assert pick_dtype("auto", chosen, flags=ZEN3) == dtype


@pytest.mark.parametrize(
    ("flags", "dtype"), [(ZEN3, torch.float32), (SAPPHIRE_RAPIDS, torch.bfloat16), (ZEN4, torch.bfloat16)]
)
def test_auto_takes_bf16_on_a_cpu_only_when_it_has_a_bf16_unit(flags: str, dtype: torch.dtype) -> None:
    assert pick_dtype("auto", torch.device("cpu"), flags=flags) == dtype


def test_it_reads_the_flags_line_of_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {SAPPHIRE_RAPIDS}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(cpu_flags(cpuinfo))
    assert "amx_bf16" in cpu_flags(cpuinfo)


def test_unreadable_flags_mean_fp32(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert not cpu_has_native_bf16(frozenset())
    assert pick_dtype("auto", torch.device("cpu"), flags=frozenset()) == torch.float32


def test_a_forced_dtype_ignores_the_flags() -> None:
    assert pick_dtype("fp32", torch.device("cpu"), flags=SAPPHIRE_RAPIDS) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu"), flags=ZEN3) == torch.bfloat16


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
