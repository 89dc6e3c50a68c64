"""The report's tables as CSV, written row by row: the same cells as the page's ``data-value``s."""

from __future__ import annotations

from collections.abc import Iterator

from ..transcripts import csv_stream
from .selectors import Report, columns, rows_of


def report_csv(report: Report, table: str) -> Iterator[str]:
    """``table``: buckets (one row a day or week, then a ``total`` row), versions or agents.
    Names are from the team and the admins, but a cell a spreadsheet would run as a formula is
    still prefixed with a quote."""
    rows = (
        [f"'{value}" if value[:1] in ("=", "+", "-", "@") and not _number(value) else value for value in row]
        for row in rows_of(report, table)
    )
    return csv_stream(columns(table), rows)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
