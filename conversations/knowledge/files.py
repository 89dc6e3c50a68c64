"""Knowledge entries in files, for a desk that already has an FAQ: JSONL (one object a line) or
CSV (a header row), chosen by the file's suffix. Columns: question, answer, alternatives (a JSON
list in JSONL; phrasings separated by `` | `` in CSV), and on export id, status, conflict, sources."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .models import KnowledgeEntry

ALTERNATIVES_SEPARATOR = " | "
EXPORT_COLUMNS = ["id", "question", "alternatives", "answer", "status", "conflict", "sources"]


class BadFile(ValueError):
    """A row the import cannot read; its message names the line."""


@dataclass(frozen=True)
class Row:
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()


def is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def rows_read(path: Path) -> list[Row]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(_csv_rows(handle) if is_csv(path) else _jsonl_rows(handle))


def _jsonl_rows(lines: Iterable[str]) -> Iterator[Row]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadFile(f"line {number}: not JSON ({error.msg})") from error
        alternatives = item.get("alternatives", []) if isinstance(item, dict) else None
        if not isinstance(alternatives, list):
            raise BadFile(f"line {number}: alternatives must be a list")
        yield _row(item.get("question"), item.get("answer"), alternatives, number)


def _csv_rows(handle: Iterable[str]) -> Iterator[Row]:
    for number, item in enumerate(csv.DictReader(handle), 2):
        raw = item.get("alternatives") or ""
        yield _row(item.get("question"), item.get("answer"), raw.split(ALTERNATIVES_SEPARATOR.strip()), number)


def _row(question: object, answer: object, alternatives: Sequence[object], number: int) -> Row:
    if not isinstance(question, str) or not question.strip() or not isinstance(answer, str) or not answer.strip():
        raise BadFile(f"line {number}: a question and an answer are needed")
    kept = tuple(a.strip() for a in alternatives if isinstance(a, str) and a.strip())
    return Row(question.strip(), answer.strip(), kept)


def rows_write(path: Path, entries: Iterable[KnowledgeEntry]) -> int:
    records = [_record(entry, flat=is_csv(path)) for entry in entries]
    with path.open("w", encoding="utf-8", newline="") as handle:
        if is_csv(path):
            writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(records)
        else:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return len(records)


def _record(entry: KnowledgeEntry, *, flat: bool) -> dict[str, object]:
    """One entry's columns; ``flat`` joins its phrasings into one CSV cell."""
    alternatives = [str(a) for a in entry.alternatives]
    return {
        "id": entry.id,
        "question": entry.question,
        "alternatives": ALTERNATIVES_SEPARATOR.join(alternatives) if flat else alternatives,
        "answer": entry.answer,
        "status": entry.status,
        "conflict": entry.conflict,
        "sources": entry.sources.count(),
    }
