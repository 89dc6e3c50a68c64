"""Boundaries the design depends on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_web_process_never_imports_torch() -> None:
    probe = (
        "import sys, django; django.setup();"
        "import chatbot.asgi, chatbot.urls, conversations.worker;"
        "import conversations.chat.consumers, conversations.workspace.consumers;"
        "import finetuning.urls, finetuning.views, finetuning.tasks;"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules);"
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "chatbot.settings", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, f"the web process imported {result.stdout.strip()} {result.stderr[-500:]}"


SENDING = {"publish", "publish_agents", "group_send", "send_on_commit", "deliver"}
THIN = [
    "conversations/chat/consumers.py",
    "conversations/chat/views.py",
    "conversations/workspace/consumers.py",
    "conversations/workspace/views.py",
    "conversations/views.py",
    "conversations/worker/loops.py",
]


def names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    return names


@pytest.mark.parametrize("module", THIN)
def test_sockets_views_and_the_worker_loops_send_no_events_themselves(module: str) -> None:
    assert names_used(ROOT / module) & SENDING == set(), f"{module} sends frames; its service should"


def test_the_customer_chat_the_workspace_and_the_worker_each_have_a_package() -> None:
    for package, modules in {
        "chat": ["consumers", "services", "views"],
        "workspace": ["consumers", "services", "views", "selectors"],
        "worker": ["loops", "replies", "services"],
    }.items():
        for module in modules:
            assert (ROOT / "conversations" / package / f"{module}.py").is_file(), f"{package}/{module}.py"


def test_only_events_talks_to_the_channel_layer() -> None:
    talking = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "conversations").rglob("*.py")
        if {"group_send", "group_add", "group_discard", "get_channel_layer"} & names_used(path)
    }
    assert talking == {"conversations/events.py"}
