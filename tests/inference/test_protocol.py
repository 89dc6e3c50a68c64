"""The built-in engine, the fake and the vLLM client satisfy the Engine protocol, as mypy --strict reads them.

A protocol is structural, so nothing at runtime says a backend still fits the seam the worker is
written to: mypy does, over a small file that hands each backend to a function taking an
``Engine``, and over one backend that lacks ``max_positions``, which it must refuse.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SEAM = """
import threading
from pathlib import Path

from conversations.inference.engine import Engine as BuiltinEngine
from conversations.inference.fake import FakeEngine, WordTokenizer
from conversations.inference.types import Emit, Engine, GenerationRequest
from conversations.inference.vllm import VllmEngine


def serve(engine: Engine) -> None: ...


def every(builtin: BuiltinEngine, fake: FakeEngine, vllm: VllmEngine) -> None:
    serve(builtin)
    serve(fake)
    serve(vllm)


class NoContext:
    model_name = "no-context"
    tokenizer = WordTokenizer()

    def submit(self, request: GenerationRequest) -> None: ...
    def cancel(self, request_id: str) -> None: ...
    def run(self, emit: Emit, stop: threading.Event) -> None: ...
    def load_adapter(self, name: str, path: Path | str) -> None: ...
    def unload_adapter(self, name: str) -> None: ...
    def metrics(self) -> dict[str, object]:
        return {}


serve(NoContext())
"""
REFUSED = f"seam.py:{SEAM.splitlines().index('serve(NoContext())') + 1}: error:"


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """mypy's lines (errors and their notes) for SEAM, under the project's configuration and cache."""
    seam = tmp_path_factory.mktemp("protocol") / "seam.py"
    seam.write_text(SEAM)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes", str(seam)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr  # 2 would be mypy failing to run at all
    return result.stdout.splitlines()


def errors(report: list[str]) -> list[str]:
    return [line for line in report if ": error:" in line]


def test_the_builtin_engine_the_fake_and_the_vllm_client_satisfy_the_protocol(mypy_report: list[str]) -> None:
    assert [e for e in errors(mypy_report) if REFUSED not in e] == []


def test_it_refuses_a_backend_without_max_positions(mypy_report: list[str]) -> None:
    [error] = errors(mypy_report)
    assert REFUSED in error and '"NoContext"' in error and "[arg-type]" in error
    assert any("max_positions" in line for line in mypy_report if ": note:" in line)
