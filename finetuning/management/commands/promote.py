"""python manage.py promote VERSION [--replacing NAME] [--force --reason TEXT]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from finetuning import services
from finetuning.models import ModelVersion


class Command(BaseCommand):
    help = "Make a model version the one that answers new messages (no restart needed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version", help="the version's name, e.g. run-3")
        parser.add_argument(
            "--replacing",
            metavar="NAME",
            help=f"refuse unless NAME serves now ({services.BASE!r} for the base model); default: whatever serves",
        )
        parser.add_argument(
            "--force", action="store_true", help="promote even though its checks failed or did not run (needs --reason)"
        )
        parser.add_argument("--reason", default="", metavar="TEXT", help="why it is forced; stored with the promotion")

    def handle(self, *args: Any, **options: Any) -> None:
        version = ModelVersion.objects.filter(name=options["version"]).first()
        if version is None:
            raise CommandError(f"no model version named {options['version']}")
        # Promoting the version already serving passes no gate; any other promote that returns past
        # refused checks was forced.
        refused = [] if version.status == ModelVersion.Status.ACTIVE else services.version_refused_checks(version)
        try:
            services.version_promote(
                version=version, expected=options["replacing"], force=options["force"], reason=options["reason"]
            )
        except services.LearningLoopError as error:
            raise CommandError(str(error)) from error
        forced = f" (forced past: {', '.join(refused)})" if refused else ""
        self.stdout.write(f"{version.name} is now active{forced}")
