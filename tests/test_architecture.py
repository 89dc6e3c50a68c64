"""Boundaries the design depends on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
