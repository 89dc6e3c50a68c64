"""python manage.py rollback"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from finetuning import services


class Command(BaseCommand):
    help = "Go back to the model version that served before the current one (or the base model)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            previous = services.version_rollback()
        except services.NothingToRollBack as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{previous.name if previous else 'the base model'} is now active")
