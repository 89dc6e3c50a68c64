"""What each chart of /reports/ draws, as plain data: the page passes it to static/reports.js with
``json_script`` and renders the same numbers as the table under each chart (its text alternative)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .selectors import BucketRow, Report, VersionRow, columns, rows_of


@dataclass(frozen=True)
class Series:
    field: str
    label: str
    unit: str  # "%", "s", or "" for a count / a score
    axis: str = "y"


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    kind: str  # bar | line
    y_title: str
    series: tuple[Series, ...]
    stacked: bool = False
    y_max: float | None = None
    y2_title: str = ""  # a second y axis on the right, for series with axis "y2"


BUCKET_CHARTS = (
    Chart("conversations", "Conversations: answered by the bot alone, or with a person", "bar", "Conversations",
          (Series("bot_only", "Bot only", ""), Series("with_person", "With a person", "")), stacked=True),
    Chart("rates", "Handoff rate and bot-only share", "line", "Share of conversations (%)",
          (Series("handoff_rate", "Handoff rate", "%"), Series("bot_only_share", "Answered by the bot alone", "%")),
          y_max=100),
    Chart("csat", "Customer satisfaction (1–5)", "line", "Mean score (1–5)",
          (Series("csat_mean", "Mean CSAT", ""), Series("csat_good_share", "Rated 4 or 5", "%", "y2")),
          y_max=5, y2_title="Rated 4 or 5 (%)"),
    Chart("first-response", "First response time (median)", "line", "Bot (seconds)",
          (Series("bot_first_response_median_s", "Bot, median", "s"),
           Series("human_first_response_median_s", "Person, median", "s", "y2")), y2_title="Person (seconds)"),
)  # fmt: skip

VERSION_CHART = Chart(
    "versions", "Model versions side by side", "bar", "Share (%)",
    (Series("handoff_rate", "Handoff rate", "%"), Series("grounded_share", "Grounded replies", "%"),
     Series("up_share", "Thumbs up (of rated)", "%")), y_max=100,
)  # fmt: skip


def chart_value(record: BucketRow | VersionRow, series: Series) -> float | None:
    """The number drawn: shares in percent, times in seconds, one decimal."""
    if series.field == "up_share":
        rated = record.customer_up + record.customer_down
        value: float | None = record.customer_up / rated if rated else None
    else:
        value = getattr(record, series.field)
    if value is None:
        return None
    return round(value * 100 if series.unit == "%" else float(value), 1)


def shown(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    number = f"{value:g}" if unit != "%" else f"{value:.1f}"
    return f"{number}{' s' if unit == 's' else unit}"


def version_label(row: VersionRow) -> str:
    return row.name or "base model"


def _chart(chart: Chart, labels: list[str], records: list[Any]) -> dict[str, Any]:
    data = [[chart_value(record, s) for record in records] for s in chart.series]
    per = "version" if chart is VERSION_CHART else "period"
    return {
        "id": chart.id,
        "title": chart.title,
        "kind": chart.kind,
        "stacked": chart.stacked,
        "y_title": chart.y_title,
        "y2_title": chart.y2_title,
        "y_max": chart.y_max,
        "labels": labels,
        "series": [
            {"label": s.label, "unit": s.unit, "axis": s.axis, "data": values}
            for s, values in zip(chart.series, data, strict=True)
        ],
        "aria": f"{chart.title}: {', '.join(s.label for s in chart.series)} per {per}; numbers in the table below.",
        "rows": [
            [label, *[shown(values[i], s.unit) for s, values in zip(chart.series, data, strict=True)]]
            for i, label in enumerate(labels)
        ],
        "columns": [s.label for s in chart.series],
    }


def charts(report: Report) -> list[dict[str, Any]]:
    """Every chart of the page; none when the range holds no conversation."""
    if not report.total.conversations:
        return []
    labels = [row.period_start.isoformat() for row in report.buckets if row.period_start]
    drawn = [_chart(chart, labels, report.buckets) for chart in BUCKET_CHARTS]
    if report.versions:
        drawn.append(_chart(VERSION_CHART, [version_label(v) for v in report.versions], report.versions))
    return drawn


HEADINGS = {
    "period_start": "Period from", "conversations": "Conversations", "bot_only": "Bot only",
    "with_person": "With a person", "handed_off": "Handed off", "bot_only_share": "Bot-only share",
    "handoff_rate": "Handoff rate", "csat_count": "CSAT answers", "csat_mean": "CSAT mean",
    "csat_good_share": "CSAT 4–5", "customer_up": "Customer thumbs up", "customer_down": "Customer thumbs down",
    "agent_up": "Agent thumbs up", "agent_down": "Agent thumbs down", "bot_replies": "Bot replies",
    "grounded_replies": "Grounded replies", "grounded_share": "Grounded share",
    "bot_first_response_median_s": "Bot first response, median", "bot_first_response_p90_s": "Bot first response, p90",
    "human_first_response_median_s": "Person first response, median",
    "human_first_response_p90_s": "Person first response, p90", "closed_bot_only": "Closed, bot only",
    "resolution_bot_only_median_s": "Resolution bot only, median",
    "resolution_bot_only_p90_s": "Resolution bot only, p90", "closed_with_person": "Closed, with a person",
    "resolution_with_person_median_s": "Resolution with a person, median",
    "resolution_with_person_p90_s": "Resolution with a person, p90", "name": "Version", "status": "Status",
    "replies": "Replies", "first_token_median_s": "First token, median", "first_token_p90_s": "First token, p90",
    "agent": "Agent", "username": "Username",
}  # fmt: skip


def display(column: str, cell: str) -> str:
    """A CSV cell as a person reads it: shares in percent, durations with their unit."""
    if cell == "":
        return "—"
    if column.endswith(("_share", "_rate")):
        return f"{float(cell) * 100:.1f}%"
    if column.endswith("_s"):
        return duration(float(cell))
    if column == "csat_mean":
        return f"{float(cell):.2f}"
    return cell


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(report: Report, name: str) -> dict[str, Any]:
    """A table of the page: headings, and per cell the CSV text (``data-value``) and what is shown."""

    names = columns(name)
    return {
        "headings": [HEADINGS[column] for column in names],
        "rows": [
            [{"value": cell, "shown": display(column, cell)} for column, cell in zip(names, row, strict=True)]
            for row in rows_of(report, name)
        ],
    }


SUMMARY = (
    ("conversations", "conversations"),
    ("bot_only_share", "answered by the bot alone"),
    ("handoff_rate", "handed to a person"),
    ("csat_mean", "mean CSAT (1–5)"),
    ("bot_first_response_median_s", "bot first response, median"),
    ("human_first_response_median_s", "person first response, median"),
)


def summary(report: Report) -> list[dict[str, str]]:
    """The whole range's headline figures, above the charts."""
    names = columns("buckets")
    total = dict(zip(names, rows_of(report, "buckets")[-1], strict=True))
    return [
        {"id": name.replace("_", "-"), "label": label, "shown": display(name, total[name])} for name, label in SUMMARY
    ]
