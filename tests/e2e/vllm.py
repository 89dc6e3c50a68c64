"""The real vLLM server for the ``vllm`` tests: built and started once per test session by the
``vllm_server`` fixture (tests/conftest.py) with chatbot/vllm_server.py, as ``make vllm`` does;
and a peft adapter trained for real in a few steps, for vLLM to serve."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from chatbot import vllm_server

from .live import LOGS, free_port


@dataclass
class VllmServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    started_in_s: float

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its engine core is a child process
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_vllm() -> VllmServer:
    """Build the venv if its stamp is stale (minutes, once), then start the server and wait."""
    vllm_server.setup()
    port = free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"vllm-{port}.log"
    started = time.monotonic()
    process = vllm_server.start(port, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        vllm_server.wait_ready(url, process, timeout_s=600)
    except Exception:
        server = VllmServer(url, process, log, 0.0)
        server.stop()
        raise RuntimeError(f"vLLM did not start; see {log}") from None
    return VllmServer(url, process, log, time.monotonic() - started)


def requests_running(url: str) -> float:
    """``vllm:num_requests_running`` from the server's Prometheus metrics (summed over its labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+-]+)$", text, flags=re.MULTILINE)
    if not values:
        raise AssertionError("vLLM's /metrics has no vllm:num_requests_running")
    return sum(float(v) for v in values)


def wait_requests_running(url: str, want: float, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while True:
        running = requests_running(url)
        if running == want or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def train_tiny_adapter(folder: Path) -> Path:
    """A real LoRA on the base model, trained by the learning loop's own ``train`` in two steps:
    what a promoted version's folder holds (rank 16, every projection), only smaller in effort."""
    from finetuning.base import base_model_path, load_model, load_tokenizer
    from finetuning.training import TrainingConfig, train

    path = base_model_path()
    pairs = [("What are your opening hours?", "We are open from 9 to 5, Monday to Friday.")] * 2
    config = TrainingConfig(max_steps=2, batch_size=2, max_seq_len=64, warmup_steps=0, threads=2)
    result = train(
        model=load_model(path),
        tokenizer=load_tokenizer(path),
        pairs=pairs,
        output_dir=folder,
        checkpoint_dir=folder.parent / f"{folder.name}-checkpoints",
        config=config,
    )
    return Path(result.adapter_path)
