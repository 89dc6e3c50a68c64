"""How long /reports/ takes on a large history, with its indexes and without them (the baseline, in
the same run). Run by hand, not in CI:

    .venv/bin/python bench/reports_bench.py [--conversations 100000] [--sqlite] [--rounds 3]

It builds a database of its own (PostgreSQL by default: ``bench_reports`` on
postgres://postgres@127.0.0.1:5432, created and dropped by the script; ``--sqlite``: a scratch file)
and fills it with ``bulk_create``: ``--conversations`` conversations spread over 90 days, about five
messages each (customer, bot, customer, bot, and an agent's reply where a person joined), handoff and
takeover events, feedback on a tenth of the bot replies, satisfaction on a third of the
conversations, three model versions and the base model, four agents.

Each case (``cases()``: add a ``Case`` there to time another query, e.g. an inbox view) runs once
a round; then the indexes of 0007 that the report's queries lean on (``INDEXES``) are dropped, every
case runs again (the baseline), and they are rebuilt: the two alternate round by round, so a load
that comes and goes falls on both. ``ratio`` is the baseline's median over the indexed median
(above 1: the indexes pay). A table is printed and the figures written to var/bench/reports.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POSTGRES = "postgres://postgres@127.0.0.1:5432"
DATABASE = "bench_reports"
# The indexes (migration 0007) the report's per-conversation subqueries use; dropped for the baseline.
INDEXES = {
    "conversations_message": ["message_conversation_role_time", "message_version_time"],
    "conversations_conversationevent": ["event_conversation_time", "event_kind_time"],
}


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[], Any]


def setup(args: argparse.Namespace, scratch: Path) -> None:
    if args.sqlite:
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'bench.sqlite3'}"
    elif not args.reuse:
        import psycopg

        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            admin.execute(f"CREATE DATABASE {DATABASE}")
    if not args.sqlite:
        os.environ["DATABASE_URL"] = f"{POSTGRES}/{DATABASE}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    os.environ["REDIS_KEY_PREFIX"] = os.environ["CHANNEL_PREFIX"] = "bench-reports"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def teardown(args: argparse.Namespace) -> None:
    if args.sqlite or args.keep:
        return
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")


def build(count: int, seed: int = 15) -> None:
    """``count`` conversations over the last 90 days, with their messages, events and feedback."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from conversations.models import Conversation, ConversationEvent, Customer, Feedback, Message
    from finetuning.models import ModelVersion

    # bulk_create would stamp every row "now": the history needs its own times.
    for model in (Conversation, Message, ConversationEvent):
        model._meta.get_field("created_at").auto_now_add = False  # type: ignore[union-attr]
    rng = random.Random(seed)
    now = timezone.now()
    versions: list[ModelVersion | None] = [
        ModelVersion.objects.create(name=f"v{n}", base_model="base", status="retired" if n < 3 else "active")
        for n in (1, 2, 3)
    ]
    versions.append(None)
    agents = [User.objects.create_user(f"agent{n}", first_name=f"Agent {n}") for n in range(4)]
    customers = Customer.objects.bulk_create([Customer(display_name=f"c{n}") for n in range(max(1, count // 10))])
    batch = 5000
    for first in range(0, count, batch):
        size = min(batch, count - first)
        starts = [now - timedelta(seconds=rng.uniform(0, 90 * 86400)) for _ in range(size)]
        people = [rng.random() < 0.2 for _ in range(size)]
        conversations = Conversation.objects.bulk_create(
            [
                Conversation(
                    customer=rng.choice(customers),
                    created_at=start,
                    last_activity_at=start + timedelta(minutes=5),
                    satisfaction=rng.randint(1, 5) if rng.random() < 0.33 else None,
                    status="closed" if rng.random() < 0.7 else "bot",
                    closed_at=start + timedelta(seconds=rng.uniform(60, 3600)) if rng.random() < 0.7 else None,
                )
                for start in starts
            ]
        )
        messages: list[Message] = []
        events: list[ConversationEvent] = []
        for conversation, person in zip(conversations, people, strict=True):
            start, version = conversation.created_at, rng.choice(versions)
            for turn in range(2):
                asked = start + timedelta(seconds=60 * turn)
                messages.append(
                    Message(conversation=conversation, role="customer", text="Where is it?", created_at=asked)
                )
                queued = asked + timedelta(milliseconds=50)
                messages.append(
                    Message(
                        conversation=conversation, role="bot", text="It ships tomorrow.", created_at=queued,
                        first_token_at=queued + timedelta(seconds=rng.uniform(0.1, 3)), model_version=version,
                        grounding=[{"entry": 1, "score": 0.8}] if rng.random() < 0.3 else [],
                    )
                )  # fmt: skip
            if person:
                handoff = start + timedelta(seconds=130)
                events.append(
                    ConversationEvent(conversation=conversation, kind="handoff_requested", created_at=handoff)
                )
                agent = rng.choice(agents)
                taken = handoff + timedelta(seconds=rng.uniform(5, 600))
                events.append(
                    ConversationEvent(conversation=conversation, kind="taken_over", actor=agent, created_at=taken)
                )
                messages.append(
                    Message(conversation=conversation, role="agent", text="Hi", author=agent, created_at=taken)
                )
        created = Message.objects.bulk_create(messages, batch_size=batch)
        ConversationEvent.objects.bulk_create(events, batch_size=batch)
        Feedback.objects.bulk_create(
            [
                Feedback(message=m, source=rng.choice(("customer", "agent")), positive=rng.random() < 0.7)
                for m in created
                if m.role == "bot" and rng.random() < 0.1
            ],
            batch_size=batch,
        )
        print(f"  built {first + size} conversations", flush=True)


def cases() -> list[Case]:
    """What is timed. Add a Case to time another query on the same data."""
    from django.utils import timezone

    from conversations.reports import export, selectors

    today = timezone.localdate()

    def params(days: int, period: str, version: str = "") -> selectors.ReportParams:
        query = {"period": period, "since": (today - timedelta(days=days - 1)).isoformat(), "until": today.isoformat()}
        parsed, errors = selectors.report_params({**query, "version": version} if version else query, today=today)
        assert not errors, errors
        return parsed

    def csv_of(chosen: selectors.ReportParams) -> str:
        return "".join(export.report_csv(selectors.report(chosen), "buckets"))

    return [
        Case("report 30 days, per day", lambda: selectors.report(params(30, "day"))),
        Case("report 90 days, per day", lambda: selectors.report(params(90, "day"))),
        Case("report 90 days, per week", lambda: selectors.report(params(90, "week"))),
        Case("report 90 days, version v3", lambda: selectors.report(params(90, "day", "v3"))),
        Case("versions table, 90 days", lambda: selectors.version_rows(params(90, "day"))),
        Case("CSV per day, 90 days", lambda: csv_of(params(90, "day"))),
    ]  # fmt: skip


def time_once(label: str, into: dict[str, list[float]]) -> None:
    for case in cases():
        began = time.perf_counter()
        case.run()
        into.setdefault(case.name, []).append(time.perf_counter() - began)
        print(f"  {label} {case.name}: {into[case.name][-1]:.3f} s", flush=True)


def time_rounds(rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Medians with the indexes and without them, the two alternating round by round: a load
    that comes and goes on the machine falls on both alike."""
    indexed: dict[str, list[float]] = {}
    baseline: dict[str, list[float]] = {}
    for _ in range(rounds):
        time_once("indexed", indexed)
        drop_indexes()
        time_once("baseline", baseline)
        restore_indexes()
    return (
        {name: statistics.median(values) for name, values in indexed.items()},
        {name: statistics.median(values) for name, values in baseline.items()},
    )


def drop_indexes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for names in INDEXES.values():
            for name in names:
                cursor.execute(f"DROP INDEX {name}")
    analyze()


def restore_indexes() -> None:
    """Put the dropped indexes back, as migration 0007 made them."""
    from django.db import connection

    from conversations.models import ConversationEvent, Message

    with connection.schema_editor() as editor:
        for model in (Message, ConversationEvent):
            for index in model._meta.indexes:
                if index.name in INDEXES[model._meta.db_table]:
                    editor.add_index(model, index)
    analyze()


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        # What autovacuum does to a live database: statistics, and the visibility map that lets
        # index-only scans skip the table.
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sqlite", action="store_true", help="a scratch SQLite file instead of PostgreSQL")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database (to EXPLAIN by hand)")
    parser.add_argument("--reuse", action="store_true", help="time the kept database again instead of building")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        setup(args, Path(scratch))
        try:
            began = time.perf_counter()
            if not args.reuse:
                build(args.conversations)
            built_s = time.perf_counter() - began
            analyze()
            indexed, baseline = time_rounds(args.rounds)
        finally:
            teardown(args)
    rows = [
        {"case": name, "indexed_s": round(indexed[name], 4), "baseline_s": round(baseline[name], 4),
         "ratio": round(baseline[name] / indexed[name], 2)}
        for name in indexed
    ]  # fmt: skip
    result = {
        "database": "sqlite" if args.sqlite else "postgresql",
        "conversations": args.conversations,
        "rounds": args.rounds,
        "build_s": round(built_s, 1),
        "dropped_for_baseline": [name for names in INDEXES.values() for name in names],
        "cases": rows,
    }
    print(
        f"\n{result['database']}, {args.conversations} conversations"
        f" (built in {built_s:.0f} s), median of {args.rounds}"
    )
    print(f"{'case':<32} {'indexed s':>10} {'baseline s':>11} {'ratio':>6}")
    for row in rows:
        print(f"{row['case']:<32} {row['indexed_s']:>10.3f} {row['baseline_s']:>11.3f} {row['ratio']:>6.2f}")
    out = ROOT / "var" / "bench" / "reports.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
