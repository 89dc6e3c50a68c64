"""python manage.py rollback [--replacing NAME]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from finetuning import services


class Command(BaseCommand):
    help = "Go back to the model version that served before the current one (or the base model)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--replacing",
            metavar="NAME",
            help=f"refuse unless NAME serves now ({services.BASE!r} for the base model); default: whatever serves",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            previous = services.version_rollback(expected=options["replacing"])
        except services.LearningLoopError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{previous.name if previous else 'the base model'} is now active")
