"""Knowledge entries in files, for a desk that already has an FAQ: JSONL (one object a line) or
CSV (a header row), chosen by the file's suffix. Columns: question, answer, alternatives (a JSON
list in JSONL; phrasings separated by `` | `` in CSV), and on export id, status, conflict, sources."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .models import KnowledgeEntry

ALTERNATIVES_SEPARATOR = " | "
EXPORT_COLUMNS = ["id", "question", "alternatives", "answer", "status", "conflict", "sources"]


class BadFile(ValueError):
    """A row the import cannot read; its message names the line."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


@dataclass(frozen=True)
class Row:
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    line: int = 0  # where it was read, to name it when a later step refuses it


def is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def rows_read(path: Path) -> list[Row]:
    """Every row of the file; the first bad line raises ``BadFile``."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows, problems = rows_parse(handle, csv_file=is_csv(path))
    if problems:
        raise problems[0]
    return rows


def rows_parse(lines: Iterable[str], *, csv_file: bool) -> tuple[list[Row], list[BadFile]]:
    """The rows read and every bad line, for a caller (the knowledge page) that names them all at
    once rather than making a person fix a file one error per upload."""
    rows: list[Row] = []
    problems: list[BadFile] = []
    for parsed in _csv_rows(lines) if csv_file else _jsonl_rows(lines):
        if isinstance(parsed, BadFile):
            problems.append(parsed)
        else:
            rows.append(parsed)
    return rows, problems


def _jsonl_rows(lines: Iterable[str]) -> Iterator[Row | BadFile]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            yield BadFile(number, f"not JSON ({error.msg})")
            continue
        if not isinstance(item, dict):
            yield BadFile(number, "not a JSON object")
            continue
        alternatives = item.get("alternatives", [])
        if not isinstance(alternatives, list):
            yield BadFile(number, "alternatives must be a list")
            continue
        yield _row(item.get("question"), item.get("answer"), alternatives, number)


def _csv_rows(handle: Iterable[str]) -> Iterator[Row | BadFile]:
    try:
        for number, item in enumerate(csv.DictReader(handle), 2):
            raw = item.get("alternatives") or ""
            yield _row(item.get("question"), item.get("answer"), raw.split(ALTERNATIVES_SEPARATOR.strip()), number)
    except csv.Error as error:
        yield BadFile(0, f"not readable as CSV ({error})")


def _row(question: object, answer: object, alternatives: Sequence[object], number: int) -> Row | BadFile:
    if not isinstance(question, str) or not question.strip() or not isinstance(answer, str) or not answer.strip():
        return BadFile(number, "a question and an answer are needed")
    kept = tuple(a.strip() for a in alternatives if isinstance(a, str) and a.strip())
    return Row(question.strip(), answer.strip(), kept, number)


def rows_write(path: Path, entries: Iterable[KnowledgeEntry]) -> int:
    records = [_record(entry, flat=is_csv(path)) for entry in entries]
    with path.open("w", encoding="utf-8", newline="") as handle:
        _records_write(handle, records, csv_file=is_csv(path))
    return len(records)


def rows_dump(entries: Iterable[KnowledgeEntry], *, csv_file: bool) -> str:
    """The export as text, for a download (the same content ``rows_write`` puts in a file)."""
    handle = io.StringIO(newline="")
    _records_write(handle, [_record(entry, flat=csv_file) for entry in entries], csv_file=csv_file)
    return handle.getvalue()


def _records_write(handle: TextIO, records: list[dict[str, object]], *, csv_file: bool) -> None:
    if csv_file:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    else:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _record(entry: KnowledgeEntry, *, flat: bool) -> dict[str, object]:
    """One entry's columns; ``flat`` joins its phrasings into one CSV cell."""
    alternatives = [str(a) for a in entry.alternatives]
    counted = getattr(entry, "source_count", None)  # annotated by the page's query: one query for all
    return {
        "id": entry.id,
        "question": entry.question,
        "alternatives": ALTERNATIVES_SEPARATOR.join(alternatives) if flat else alternatives,
        "answer": entry.answer,
        "status": entry.status,
        "conflict": entry.conflict,
        "sources": counted if counted is not None else entry.sources.count(),
    }
