"""Redaction against the labelled table and adversarial texts, with the old patterns as a baseline.
Run by hand, not in CI (a few seconds):

    .venv/bin/python bench/redaction_bench.py

1. Recall and false positives per kind on tests/finetuning/redaction_table.py, new and old.
2. ``redact()`` time p50/p95/max on each 2,000-character adversarial text and on a realistic
   2,000-character message, new and old. The old phone pattern backtracks exponentially, so the
   old implementation runs in a worker process with a time limit per call (a call over it is
   reported as ``>limit`` and abandoned).

The last lines printed are ``recall=…``, ``false_positive_rate=…``, ``adversarial_2000_ms_p95=…``.
"""

from __future__ import annotations

import multiprocessing
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetuning.redaction import luhn_valid, redact  # noqa: E402
from tests.finetuning.redaction_adversarial import ADVERSARIAL, REALISTIC_2000  # noqa: E402
from tests.finetuning.redaction_table import HARMLESS, PERSONAL  # noqa: E402
from tests.finetuning.test_redaction import leaked  # noqa: E402

ROUNDS = 20
OLD_TIME_LIMIT_S = 2.0

# The implementation before the rebuild, copied as it was, as the baseline.
OLD_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
OLD_CARD = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?!\w)")
OLD_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,}(?:[ .-]?\d{2,}){0,5}(?!\w)")


def old_redact(text: str) -> str:
    def card(match: re.Match[str]) -> str:
        digits = "".join(c for c in match.group() if c.isdigit())
        return "[card]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()

    def phone(match: re.Match[str]) -> str:
        return "[phone]" if 7 <= sum(c.isdigit() for c in match.group()) <= 15 else match.group()

    text = OLD_EMAIL.sub("[email]", text)
    text = OLD_CARD.sub(card, text)
    return OLD_PHONE.sub(phone, text)


def quality(implementation: Callable[[str], str]) -> tuple[Counter[str], Counter[str], int]:
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for text, labelled in PERSONAL:
        redacted = implementation(text)
        for kind, secret in labelled:
            total[kind] += 1
            found[kind] += not leaked(secret, text, redacted, [s for _, s in labelled])
    changed = sum(implementation(text) != text for text in HARMLESS)
    return found, total, changed


def _timed_old(text: str) -> float:
    started = time.perf_counter()
    old_redact(text)
    return (time.perf_counter() - started) * 1000


def times_ms(implementation: Callable[[str], str], text: str) -> list[float]:
    result = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        implementation(text)
        result.append((time.perf_counter() - started) * 1000)
    return result


def old_times_ms(text: str) -> list[float] | None:
    """The old implementation in a worker process, so that a call past the limit can be abandoned."""
    with multiprocessing.Pool(1) as pool:
        result = []
        for _ in range(3):
            pending = pool.apply_async(_timed_old, (text,))
            try:
                result.append(pending.get(OLD_TIME_LIMIT_S))
            except multiprocessing.TimeoutError:
                pool.terminate()
                return None
        return result


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def describe(values: list[float] | None) -> str:
    if values is None:
        return f"{'>' + str(int(OLD_TIME_LIMIT_S * 1000)):>8}"
    return f"{statistics.median(values):8.2f} {percentile(values, 0.95):8.2f} {max(values):8.2f}"


def main() -> None:
    new_found, total, new_changed = quality(redact)
    old_found, _, old_changed = quality(old_redact)
    print(f"{'kind':12} {'n':>4} {'new':>6} {'old':>6}")
    for kind in sorted(total):
        print(f"{kind:12} {total[kind]:4} {new_found[kind]:6} {old_found[kind]:6}")
    print(f"{'harmless':12} {len(HARMLESS):4} {new_changed:6} {old_changed:6}  (texts changed)")

    print(f"\n{'text (ms)':28} {'new p50':>8} {'p95':>8} {'max':>8} | {'old p50':>8} {'p95':>8} {'max':>8}")
    adversarial_p95 = []
    for name, text in [*ADVERSARIAL.items(), ("realistic_2000", REALISTIC_2000)]:
        new = times_ms(redact, text)
        print(f"{name:28} {describe(new)} | {describe(old_times_ms(text))}")
        if name != "realistic_2000":
            adversarial_p95.append(percentile(new, 0.95))

    recall = sum(new_found.values()) / sum(total.values())
    print(f"\nrecall={recall:.3f}")
    print(f"false_positive_rate={new_changed / len(HARMLESS):.3f}")
    print(f"adversarial_2000_ms_p95={max(adversarial_p95):.2f}")


if __name__ == "__main__":
    main()
