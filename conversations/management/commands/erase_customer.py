"""python manage.py erase_customer ID [--dry-run]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import erasure


class Command(BaseCommand):
    help = (
        "Remove a customer's conversations, messages, ratings, corrections and the dataset examples made "
        "from them, and mark the model versions trained on them. The customer row stays, anonymised."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("customer_id", help="the customer's id (a UUID, as the agent workspace shows it)")
        parser.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["dry_run"]:
                customer = erasure.customer_get(customer_id=options["customer_id"])
                found = erasure.customer_erasure_preview(customer=customer)
                self.stdout.write(f"would erase customer {found.customer_id}: {found.describe()}")
                return
            done = erasure.customer_erase(customer_id=options["customer_id"])
        except erasure.UnknownCustomer as error:
            raise CommandError(str(error)) from error
        if done.empty:
            self.stdout.write(f"customer {done.customer_id}: nothing left to erase")
            return
        self.stdout.write(f"erased customer {done.customer_id}: {done.describe()}")
        if done.versions:
            self.stdout.write(f"retrain to leave their data out of the adapters of {', '.join(done.versions)}")
