"""python manage.py knowledge list [--status S] | approve ID... | approve --all-suggested
| import FILE [--approve] | export FILE  (JSONL, or CSV for a .csv file: conversations/knowledge/files.py)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from conversations.knowledge import files, services, vectors
from conversations.knowledge.models import KnowledgeEntry


class Command(BaseCommand):
    help = "List, approve, import and export knowledge entries (docs/knowledge.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="one line per entry")
        listing.add_argument("--status", choices=KnowledgeEntry.Status.values)
        approve = actions.add_parser("approve", help="serve these entries from the next customer message")
        approve.add_argument("ids", nargs="*", type=int)
        approve.add_argument("--all-suggested", action="store_true")
        load = actions.add_parser("import", help="entries from a JSONL or CSV file, as suggestions")
        load.add_argument("file", type=Path)
        load.add_argument("--approve", action="store_true", help="approve them too")
        actions.add_parser("export", help="every entry to a JSONL or CSV file").add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list(options["status"])
        elif action == "approve":
            self._approve(options["ids"], options["all_suggested"])
        elif action == "import":
            self._import(options["file"], options["approve"])
        else:
            count = files.rows_write(options["file"], KnowledgeEntry.objects.order_by("id"))
            self.stdout.write(f"exported {count} entries to {options['file']}")

    def _list(self, status: str | None) -> None:
        entries = KnowledgeEntry.objects.order_by("id")
        for entry in entries.filter(status=status) if status else entries:
            flag = " CONFLICT" if entry.conflict else ""
            count = entry.sources.count()
            self.stdout.write(f"{entry.id}\t{entry.status}{flag}\t{count} sources\t{entry.question}\t{entry.answer}")

    def _approve(self, ids: list[int], all_suggested: bool) -> None:
        if bool(ids) == all_suggested:
            raise CommandError("give entry ids, or --all-suggested")
        if all_suggested:
            ids = list(
                KnowledgeEntry.objects.filter(status=KnowledgeEntry.Status.SUGGESTED).values_list("id", flat=True)
            )
        approved = services.entries_approve(ids=ids, by=None)
        conflicted = sum(e.conflict for e in approved)
        self.stdout.write(f"approved {len(approved)} entries ({conflicted} in conflict: not served until resolved)")

    def _import(self, path: Path, approve: bool) -> None:
        try:
            rows = files.rows_read(path)
        except (OSError, files.BadFile) as error:
            raise CommandError(str(error)) from error
        with transaction.atomic():
            entries = [
                services.entry_create(question=r.question, answer=r.answer, alternatives=r.alternatives) for r in rows
            ]
            if approve:
                services.entries_approve(ids=[e.id for e in entries], by=None)
        for entry in entries:  # this process may embed: the worker then has nothing to embed itself
            services.embedding_store(
                entry_id=entry.id, phrasings=entry.phrasings(), rows=vectors.embed(entry.phrasings())
            )
        self.stdout.write(f"imported {len(entries)} entries from {path}")
