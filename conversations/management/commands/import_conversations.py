"""python manage.py import_conversations FILE.jsonl: load transcripts in the export format.

Each line is checked and imported in a transaction of its own, so a bad line imports nothing of its
conversation and the good lines still load. Bad lines (not UTF-8, not JSON, or any value of the
wrong type or out of range) are reported with their line numbers, and the command then exits with
status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.transcripts import import_jsonl


class Command(BaseCommand):
    help = "Import conversations from a JSONL file (docs/transcript-format.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        try:
            with file.open("rb") as lines:  # decoded line by line: a line that is not UTF-8 is one bad line
                report = import_jsonl(lines)
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}") from None
        for number, problem in report.errors:
            self.stderr.write(f"{file}:{number}: {problem}")
        self.stdout.write(f"Imported {report.imported} conversation(s); {len(report.errors)} line(s) refused.")
        if report.errors:
            raise CommandError(f"{len(report.errors)} line(s) were not imported (see above).", returncode=1)
