"""The report's tables as CSV, written row by row: the same cells as the page's ``data-value``s."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from .selectors import Report, columns, rows_of


def report_csv(report: Report, table: str) -> Iterator[str]:
    """``table``: buckets (one row a day or week, then a ``total`` row), versions or agents.
    Names are from the team and the admins, but a cell a spreadsheet would run as a formula is
    still prefixed with a quote."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(columns(table))
    yield flush()
    for row in rows_of(report, table):
        writer.writerow(
            [f"'{value}" if value[:1] in ("=", "+", "-", "@") and not _number(value) else value for value in row]
        )
        yield flush()


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
