"""Knowledge retrieval figures, run by hand (not in CI): python bench/knowledge_bench.py [--queries 200]

- retrieval latency (``Index.search``: one matmul and a partial sort) at 1k, 10k and 100k entries
  of two phrasings each, p50 and p95 over random unit queries; and the question's embedding;
- paraphrase recall@1 and @3 on tests/finetuning/shop.py (the entries: each fact's two asked
  questions and its correction; the queries: its held-out paraphrase), and how many of
  finetuning/general_prompts.py's prompts (none about the shop) get a reference at the threshold,
  with a sweep of thresholds behind the default;
- the time from an approval to the first grounded reply's prompt: approve, a new customer asks,
  the worker's ``replies.prepare`` (index rebuilt, question embedded, entries in the prompt).

One ``name=value`` line per figure, in a throwaway SQLite database.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZES = (1_000, 10_000, 100_000)
PHRASINGS = 2
SWEEP = (0.45, 0.50, 0.52, 0.54, 0.56, 0.58, 0.60)


def _django(database: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 2)


def latency(queries: int) -> None:
    from conversations.knowledge import retrieval, vectors

    rng = np.random.default_rng(0)
    for size in SIZES:
        matrix = rng.standard_normal((size * PHRASINGS, vectors.DIM)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        owners = np.repeat(np.arange(size, dtype=np.int64), PHRASINGS)
        index = retrieval.Index((size, ""), matrix, owners, {i: ("q", "a") for i in range(size)})
        samples = []
        for _ in range(queries):
            query = matrix[rng.integers(len(matrix))][None, :]
            started = time.perf_counter()
            index.search(query, k=3, threshold=0.0)
            samples.append(time.perf_counter() - started)
        print(f"retrieval_p50_ms_{size // 1000}k={percentile_ms(samples, 50)}")
        print(f"retrieval_p95_ms_{size // 1000}k={percentile_ms(samples, 95)}")
    samples = []
    for _ in range(min(queries, 50)):
        started = time.perf_counter()
        vectors.embed(["What's the price to have my present wrapped?"])
        samples.append(time.perf_counter() - started)
    print(f"question_embed_p95_ms={percentile_ms(samples, 95)}")


def shop_entries() -> dict[int, int]:
    """Every shop fact as an approved, embedded entry; the fact's number by entry id."""
    from conversations.knowledge import services, vectors
    from tests.finetuning.shop import FACTS

    owner = {}
    for number, fact in enumerate(FACTS):
        entry = services.entry_create(question=fact.asked[0], answer=fact.correction, alternatives=fact.asked[1:])
        services.embedding_store(entry_id=entry.id, phrasings=entry.phrasings(), rows=vectors.embed(entry.phrasings()))
        owner[entry.id] = number
    services.entries_approve(ids=list(owner), by=None)
    return owner


def recall(owner: dict[int, int]) -> None:
    from django.conf import settings

    from conversations.knowledge import retrieval
    from finetuning.general_prompts import GENERAL, UNRELATED
    from tests.finetuning.shop import FACTS

    index = retrieval.current()
    found = retrieval.search_texts(index, [f.paraphrase for f in FACTS], k=3, threshold=-1.0)
    unrelated = retrieval.search_texts(index, [*UNRELATED, *GENERAL], k=1, threshold=-1.0)
    own = [next((r.score for r in refs if owner[r.entry_id] == n), -1.0) for n, refs in enumerate(found)]
    print(f"paraphrase_recall_at_1={sum(owner[refs[0].entry_id] == n for n, refs in enumerate(found))}/{len(FACTS)}")
    print(f"paraphrase_recall_at_3={sum(s > -1.0 for s in own)}/{len(FACTS)}")
    best_unrelated = [refs[0].score for refs in unrelated]
    for threshold in sorted({*SWEEP, settings.KNOWLEDGE_THRESHOLD}):
        served = sum(owner[refs[0].entry_id] == n and refs[0].score >= threshold for n, refs in enumerate(found))
        leaks = sum(score >= threshold for score in best_unrelated)
        print(f"threshold_{threshold:.2f}_paraphrases_grounded_top1={served}/{len(FACTS)}")
        print(f"threshold_{threshold:.2f}_unrelated_grounded={leaks}/{len(best_unrelated)}")
    print(f"unrelated_best_score_max={max(best_unrelated):.3f}")
    print(f"paraphrase_own_score_min={min(own):.3f}")


def approval_to_grounded(trials: int = 5) -> None:
    """Approve an entry the index has not seen, then a new customer asks and the worker prepares."""
    from conversations.chat import services as chat_services
    from conversations.inference.fake import FakeEngine
    from conversations.knowledge import services
    from conversations.models import Customer
    from conversations.worker import replies

    samples = []
    for trial in range(trials):
        entry = services.entry_create(question=f"How late is the café open on day {trial}?", answer=f"Until {trial}pm.")
        started = time.perf_counter()
        services.entries_approve(ids=[entry.id], by=None)
        conversation = Customer.objects.create().conversations.create()
        reply = chat_services.message_send(
            conversation=conversation, text=f"Until when is the café open on day {trial}?"
        )
        assert reply.bot_message is not None
        prepared = replies.prepare(message_id=reply.bot_message.id, entry_id="0-1", engine=FakeEngine(), consumer="b")
        samples.append(time.perf_counter() - started)
        assert prepared is not None and reply.bot_message.__class__.objects.get(id=reply.bot_message.id).grounding
    print(f"approval_to_grounded_prompt_p50_ms={percentile_ms(samples, 50)}")
    print(f"approval_to_grounded_prompt_max_ms={round(max(samples) * 1000, 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        _django(Path(folder) / "bench.sqlite3")
        latency(args.queries)
        owner = shop_entries()
        recall(owner)
        approval_to_grounded()


if __name__ == "__main__":
    main()
