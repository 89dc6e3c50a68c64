"""chatbot/web.py: the one command line of the web tier (serve, the image, compose, the live tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatbot import web

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_web_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEB_SERVER", "WEB_PROCESSES", "WEB_PROCESSES_MAX"):
        monkeypatch.delenv(name, raising=False)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_uvicorn_is_the_default_and_its_workers_share_the_one_port() -> None:
    argv = web.command(host="0.0.0.0", port=8123, processes=3)
    assert argv[:3] == [sys.executable, "-m", "uvicorn"]
    assert web.APPLICATION in argv
    assert (option(argv, "--host"), option(argv, "--port"), option(argv, "--workers")) == ("0.0.0.0", "8123", "3")
    assert (option(argv, "--loop"), option(argv, "--http")) == ("uvloop", "httptools")
    # The client's address is ours to read (TRUSTED_PROXIES): uvicorn must not rewrite it.
    assert "--no-proxy-headers" in argv and "--proxy-headers" not in argv


def test_the_number_of_processes_comes_from_the_setting_else_one_per_core_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_PROCESSES", "5")
    assert option(web.command(host="h", port=1), "--workers") == "5"
    assert option(web.command(host="h", port=1, processes=2), "--workers") == "2"  # an explicit number wins
    monkeypatch.setenv("WEB_PROCESSES", "0")
    assert web.processes_setting() == web.default_processes()
    assert web.default_processes(cores=3) == 3
    assert web.default_processes(cores=64) == 8
    monkeypatch.setenv("WEB_PROCESSES_MAX", "2")
    assert web.default_processes(cores=64) == 2
    assert web.default_processes(cores=1) == 1


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WEB_PROCESSES", "-1", "WEB_PROCESSES=-1"),
        ("WEB_PROCESSES", "many", "WEB_PROCESSES='many'"),
        ("WEB_PROCESSES_MAX", "x", "WEB_PROCESSES_MAX='x'"),
        ("WEB_SERVER", "gunicorn", "WEB_SERVER='gunicorn'"),
    ],
)
def test_a_wrong_setting_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        web.command(host="h", port=1)


def test_daphne_serves_from_one_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = web.command(host="127.0.0.1", port=9000, processes=1, server="daphne")
    assert argv == [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "9000", web.APPLICATION]
    monkeypatch.setenv("WEB_SERVER", "daphne")
    with pytest.raises(ValueError, match="daphne serves from one process"):
        web.command(host="h", port=1, processes=2)


def test_describe_says_the_server_and_how_many_processes() -> None:
    assert web.describe(processes=1) == "uvicorn, 1 process"
    assert web.describe(processes=4, server="daphne") == "daphne, 4 processes"


def test_the_module_refuses_a_wrong_setting_in_one_line_and_needs_neither_django_set_up_nor_torch() -> None:
    # `python -m chatbot.web` is the image's command: a typo in WEB_PROCESSES says so, no traceback.
    env = {"PATH": "/usr/bin:/bin", "WEB_PROCESSES": "two"}
    result = subprocess.run(
        [sys.executable, "-m", "chatbot.web"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "WEB_PROCESSES='two'" in result.stderr
    check = (
        "import sys, chatbot.web; from django.conf import settings;"
        "assert not settings.configured and 'torch' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT, timeout=60).returncode == 0
