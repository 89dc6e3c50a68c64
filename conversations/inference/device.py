"""Where the engine runs and in which dtype: CUDA in bf16, a CPU in bf16 only if it computes bf16 natively.

bf16 halves the bytes a decode step reads, and a decode step is a read of every weight: on a CPU
with AMX-BF16 or AVX512-BF16 that is worth up to 2x. On a CPU without them (AVX2 only, e.g. the
AMD EPYC Zen 3 these tests usually run on) bf16 still helps a lone reply (measured: 68 against
93 ms a step at batch 1) but the batched matmuls run emulated, about 3x slower at batch 16 (635
against 218 ms), and batches are where a server's capacity is: ``auto`` keeps fp32 there. The
flags come from ``/proc/cpuinfo``;
where it cannot be read (macOS, a locked-down container) ``auto`` stays with fp32, the safe choice.
"""

from __future__ import annotations

from pathlib import Path

import torch

BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # as Linux names them in /proc/cpuinfo
CPUINFO = Path("/proc/cpuinfo")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags, or nothing if the file is missing or unreadable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 says flags, arm64 says Features
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | str) -> bool:
    """True when the flags (a set, or the flags line as /proc/cpuinfo writes it) include a bf16 matmul unit."""
    given = frozenset(flags.split()) if isinstance(flags, str) else flags
    return bool(given & BF16_CPU_FLAGS)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device, flags: frozenset[str] | str | None = None) -> torch.dtype:
    """``auto``: bf16 on CUDA and on a CPU with native bf16, fp32 otherwise; any other name forces it.

    ``flags`` stands in for the machine's CPU flags (tests); None reads them from /proc/cpuinfo.
    Raises KeyError for a name it does not know.
    """
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_native_bf16(cpu_flags() if flags is None else flags):
        return torch.bfloat16
    return torch.float32
