"""python manage.py retrain [--wait] [--here] [--set key=value ...]"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from finetuning import pipeline, services, tasks
from finetuning.models import TrainingRun


class Command(BaseCommand):
    help = "Start a training run on the Celery queue `finetuning` (or here, with --here)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait", action="store_true", help="block until the run ends, printing progress")
        parser.add_argument("--here", action="store_true", help="run in this process instead of a Celery worker")
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting, e.g. epochs=2"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = dict(_parse(item) for item in options["set"])
        try:
            enqueue = None if options["here"] else tasks.training_run.delay_on_commit
            run = services.run_start(config=config, enqueue=enqueue)
        except services.RunAlreadyActive as busy:
            raise CommandError(f"{busy}; cancel it first or wait") from busy
        self.stdout.write(f"training run {run.id} queued")
        if options["here"]:
            run = pipeline.run_execute(run_id=run.id) or run
        elif options["wait"]:
            run = self.follow(run)
        else:
            return
        run.refresh_from_db()
        self.report(run)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"training run {run.id} {run.status}: {run.error}")

    def follow(self, run: TrainingRun) -> TrainingRun:
        shown = None
        while True:
            run.refresh_from_db()
            line = f"{run.status} {run.phase} step {run.step}/{run.total_steps}"
            if run.loss_history:
                loss = run.loss_history[-1][1]
                line += f" loss {loss:.3f} · {run.tokens_per_s or 0:.0f} tokens/s · ETA {run.eta_s or 0:.0f}s"
            if line != shown:
                self.stdout.write(line)
                shown = line
            if run.status not in TrainingRun.ACTIVE_STATUSES:
                return run
            time.sleep(2)

    def report(self, run: TrainingRun) -> None:
        self.stdout.write(f"training run {run.id}: {run.status}")
        if run.version is not None:
            metrics = run.version.metrics
            summary = {key: metrics.get(key) for key in ("heldout_loss", "replay_f1", "replay_similarity", "checks")}
            self.stdout.write(f"candidate {run.version.name}: {json.dumps(summary)}")
            self.stdout.write(f"promote it with: python manage.py promote {run.version.name}")


def _parse(item: str) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
