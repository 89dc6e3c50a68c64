"""What the team inbox costs on a big database: the inbox page of each view, a filtered page, and
the counts the page asks for after each live change. Run by hand, not in CI:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/inbox_bench.py [--conversations 100000]

It makes a scratch test database next to DATABASE_URL's (``test_<name>``, dropped at the end),
fills it with ``--conversations`` conversations (70 % closed, 10 % waiting, the rest with the bot;
one in 20 assigned to the agent, one in 3 read by them), two messages each, and times each request
through Django's test client (the view, its queries and the template; no network), the median of
``--rounds`` after one warm-up. Then the inbox's indexes of migration 0007 (``INDEXES``) are
dropped and every request is timed again, the baseline in the same run: ``ratio`` is the baseline
over the indexed time (above 1: the indexes pay). Figures in milliseconds, a table, and JSON in
var/bench/inbox.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

INDEXES = ["conversation_inbox_order", "conversation_assignee_order"]

URLS = [
    "/agent/",
    "/agent/?view=mine",
    "/agent/?view=unassigned",
    "/agent/?view=waiting",
    "/agent/?view=all&status=bot&negative=1",
    "/agent/?view=all&page=40",
    "/agent/inbox/counts",
    "/agent/inbox/counts?view=all",
]


def fill(conversations: int) -> object:
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.utils import timezone

    from conversations.models import Conversation, ConversationRead, Customer, Message

    agent = User.objects.create_user("bench-agent", first_name="Bench")
    agent.groups.add(Group.objects.get_or_create(name="agents")[0])
    now = timezone.now()
    customers = Customer.objects.bulk_create([Customer() for _ in range(1000)])
    rows = []
    for i in range(conversations):
        status = "closed" if i % 10 < 7 else ("waiting" if i % 10 == 7 else "bot")
        moment = now - timedelta(minutes=i)
        rows.append(
            Conversation(
                customer=customers[i % len(customers)],
                status=status,
                last_activity_at=moment,
                waiting_since=moment if status == "waiting" else None,
                assignee=agent if i % 20 == 0 else None,
            )
        )
    Conversation.objects.bulk_create(rows, batch_size=5000)
    messages = []
    for conversation in rows:
        messages.append(Message(conversation=conversation, role="customer", text="Where is my order?"))
        messages.append(Message(conversation=conversation, role="bot", text="It ships tomorrow.", status="complete"))
    Message.objects.bulk_create(messages, batch_size=5000)
    reads = [ConversationRead(user=agent, conversation=c, read_at=now) for c in rows[::3]]
    ConversationRead.objects.bulk_create(reads, batch_size=5000)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        started = time.perf_counter()
        agent = fill(args.conversations)
        print(f"fill_s {time.perf_counter() - started:.1f}")
        client = Client()
        client.force_login(agent)  # type: ignore[arg-type]

        def timed() -> dict[str, float]:
            figures = {}
            for url in URLS:
                assert client.get(url).status_code == 200, url
                times = []
                for _ in range(args.rounds):
                    began = time.perf_counter()
                    client.get(url)
                    times.append((time.perf_counter() - began) * 1000)
                figures[url] = statistics.median(times)
            return figures

        indexed = timed()
        with connection.cursor() as cursor:
            for name in INDEXES:
                cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
            if connection.vendor == "postgresql":
                cursor.execute("ANALYZE")
        baseline = timed()
        print(f"{'request':44} {'indexed ms':>11} {'no index ms':>12} {'ratio':>6}")
        results = []
        for url in URLS:
            ratio = baseline[url] / indexed[url]
            print(f"{url:44} {indexed[url]:11.0f} {baseline[url]:12.0f} {ratio:6.2f}")
            results.append({"url": url, "indexed_ms": indexed[url], "baseline_ms": baseline[url], "ratio": ratio})
        out = Path(__file__).resolve().parent.parent / "var" / "bench" / "inbox.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"conversations": args.conversations, "results": results}, indent=2))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
