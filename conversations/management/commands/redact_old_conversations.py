"""python manage.py redact_old_conversations [--days N]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import erasure
from finetuning.models import TrainingSettings


class Command(BaseCommand):
    help = (
        "Redact, in place, the text of messages, corrections, feedback comments and notes older than the "
        "retention in Training settings (or --days). Safe to run again: redacted text stays as it is."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="redact what is older than this; default: the admin setting")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is None:
            days = TrainingSettings.load().redact_conversations_after_days
            if days == 0:
                self.stdout.write("retention is off (Training settings: redact conversations after 0 days)")
                return
        if days < 1:
            raise CommandError("--days must be at least 1")
        report = erasure.conversations_redact_old(days=days)
        by_kind = ", ".join(f"{count} {kind}" for kind, count in report.changed.items())
        self.stdout.write(f"redacted text stored before {report.cutoff:%Y-%m-%d %H:%M}: {by_kind}")
