"""Every figure of the report equals the value computed by hand from the fixture's table
(tests/reports/conftest.py), per day, per week and per model version."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.models import Customer
from conversations.reports import selectors
from conversations.reports.selectors import BucketRow, ReportParams

from .conftest import FRIDAY, RANGE, Builder

pytestmark = pytest.mark.django_db


def params(**query: str) -> ReportParams:
    parsed, errors = selectors.report_params({**RANGE, **query})
    assert errors == {}
    return parsed


def by_start(rows: list[BucketRow]) -> dict[date | None, BucketRow]:
    return {row.period_start: row for row in rows}


def test_it_counts_the_whole_range_by_hand(known_week: Any) -> None:
    _, total = selectors.bucket_rows(params())
    assert (total.conversations, total.bot_only, total.with_person, total.handed_off) == (6, 3, 3, 3)
    assert (total.bot_only_share, total.handoff_rate) == (0.5, 0.5)
    assert (total.csat_count, total.csat_good_share) == (3, pytest.approx(2 / 3))
    assert total.csat_mean == pytest.approx(11 / 3)
    assert (total.customer_up, total.customer_down, total.agent_up, total.agent_down) == (2, 2, 1, 1)
    assert (total.bot_replies, total.grounded_replies, total.grounded_share) == (7, 3, pytest.approx(3 / 7))
    # bot first responses [2, 3, 4, 5, 7, 11] s; human [30, 90, 120] s
    assert (total.bot_first_response_median_s, total.bot_first_response_p90_s) == (4.5, pytest.approx(9.0))
    assert (total.human_first_response_median_s, total.human_first_response_p90_s) == (90, pytest.approx(114.0))
    # resolved: bot-only [100, 600] s, with a person [300, 1200] s
    assert (total.closed_bot_only, total.resolution_bot_only_median_s) == (2, 350)
    assert total.resolution_bot_only_p90_s == pytest.approx(550)
    assert (total.closed_with_person, total.resolution_with_person_median_s) == (2, 750)
    assert total.resolution_with_person_p90_s == pytest.approx(1110)


def test_it_counts_each_day_and_fills_the_empty_one(known_week: Any) -> None:
    buckets, _ = selectors.bucket_rows(params(period="day"))
    assert [row.period_start for row in buckets] == [date(2026, 3, d) for d in (6, 7, 8, 9)]
    friday, saturday, sunday, monday = buckets
    assert (friday.conversations, friday.bot_only, friday.handed_off) == (3, 2, 1)
    assert (friday.csat_count, friday.csat_mean, friday.csat_good_share) == (2, 4.5, 1.0)
    assert (friday.customer_up, friday.customer_down, friday.agent_up, friday.agent_down) == (2, 1, 0, 1)
    assert (friday.bot_replies, friday.grounded_share) == (4, 0.5)
    assert (friday.bot_first_response_median_s, friday.bot_first_response_p90_s) == (3, pytest.approx(4.6))
    assert (friday.human_first_response_median_s, friday.resolution_with_person_median_s) == (90, 1200)
    assert friday.resolution_bot_only_median_s == 600
    assert (saturday.conversations, saturday.bot_only, saturday.handoff_rate) == (1, 0, 1.0)
    assert (saturday.csat_mean, saturday.csat_good_share, saturday.grounded_share) == (2, 0.0, 0.0)
    assert (saturday.bot_first_response_median_s, saturday.human_first_response_median_s) == (7, 30)
    assert sunday == BucketRow(period_start=date(2026, 3, 8))
    assert (monday.conversations, monday.bot_only, monday.handed_off, monday.csat_count) == (2, 1, 1, 0)
    assert (monday.csat_mean, monday.customer_down, monday.agent_up, monday.grounded_share) == (None, 1, 1, 0.5)
    assert (monday.bot_first_response_median_s, monday.bot_first_response_p90_s) == (7.5, pytest.approx(10.3))
    assert (monday.human_first_response_median_s, monday.resolution_bot_only_median_s) == (120, 100)


def test_it_counts_each_week_from_its_monday(known_week: Any) -> None:
    buckets, total = selectors.bucket_rows(params(period="week"))
    assert [row.period_start for row in buckets] == [date(2026, 3, 2), date(2026, 3, 9)]
    first, second = buckets
    assert (first.conversations, first.bot_only, first.handed_off, first.csat_count) == (4, 2, 2, 3)
    assert (first.bot_replies, first.grounded_replies) == (5, 2)
    assert (first.bot_first_response_median_s, first.bot_first_response_p90_s) == (4, pytest.approx(6.4))
    assert (first.human_first_response_median_s, first.human_first_response_p90_s) == (60, pytest.approx(84))
    assert (first.resolution_with_person_median_s, first.resolution_with_person_p90_s) == (750, pytest.approx(1110))
    days, day_total = selectors.bucket_rows(params(period="day"))
    assert second == days[-1]  # the week of Monday 9 March holds only that Monday
    assert total == day_total


def test_it_reports_each_model_version_by_hand(known_week: Any) -> None:
    v2, v1, base = selectors.version_rows(params())
    assert (v2.name, v2.status, v1.name, base.name, base.status) == ("v2", "active", "v1", None, "base")
    assert (v1.replies, v1.grounded_share, v1.customer_up, v1.customer_down, v1.agent_down) == (2, 0.5, 1, 1, 1)
    assert (v1.first_token_median_s, v1.first_token_p90_s) == (3, pytest.approx(3.8))
    assert (v1.conversations, v1.handoff_rate, v1.csat_count, v1.csat_mean, v1.csat_good_share) == (2, 0.5, 2, 4.5, 1)
    assert (v2.replies, v2.grounded_share, v2.customer_up, v2.customer_down, v2.agent_up) == (4, 0.5, 1, 0, 1)
    assert (v2.first_token_median_s, v2.first_token_p90_s) == (3, pytest.approx(5.1))
    assert (v2.conversations, v2.handed_off, v2.handoff_rate) == (3, 2, pytest.approx(2 / 3))
    assert (v2.csat_count, v2.csat_mean, v2.csat_good_share) == (1, 2, 0)
    assert (base.replies, base.grounded_share, base.customer_down, base.first_token_median_s) == (1, 0, 1, 10)
    assert (base.conversations, base.handoff_rate, base.csat_count, base.csat_mean) == (1, 0, 0, None)


def test_a_version_narrows_everything_to_the_conversations_it_answered_first(known_week: Any) -> None:
    narrowed = params(version="v2")
    assert narrowed.version == known_week["v2"]
    _, total = selectors.bucket_rows(narrowed)
    assert (total.conversations, total.bot_only, total.handed_off, total.bot_replies, total.grounded_replies) == (
        3, 1, 2, 4, 2,
    )  # fmt: skip
    assert (total.customer_up, total.agent_up, total.csat_count) == (1, 1, 1)
    assert [row.name for row in selectors.version_rows(narrowed)] == ["v2"]
    assert [(a.username, a.replies) for a in selectors.agent_rows(narrowed)] == [("eli", 3), ("dana", 1)]


def test_it_counts_replies_per_agent_with_their_names(known_week: Any) -> None:
    rows = selectors.agent_rows(params())
    assert [(a.agent, a.username, a.replies) for a in rows] == [("Eli", "eli", 3), ("Dana", "dana", 2)]


def test_it_costs_the_same_queries_whatever_the_number_of_conversations(known_week: Any) -> None:
    with CaptureQueriesContext(connection) as few:
        selectors.report(params())
    build = Builder(Customer.objects.get())
    for hour in range(13, 20):
        conversation = build.conversation(FRIDAY + timedelta(hours=hour))
        build.customer_says(conversation, 0)
        build.bot_replies(conversation, 1, 2, known_week["v1"])
    with CaptureQueriesContext(connection) as more:
        bigger = selectors.report(params())
    assert bigger.total.conversations == 13
    assert len(more.captured_queries) == len(few.captured_queries) <= 15


def test_an_empty_range_has_zero_conversations_and_no_versions(known_week: Any) -> None:
    empty = selectors.report(params(since="2025-01-01", until="2025-01-03"))
    assert [row.conversations for row in empty.buckets] == [0, 0, 0]
    assert (empty.total.conversations, empty.total.handoff_rate, empty.versions, empty.agents) == (0, None, [], [])


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ({"since": "2026-03-09", "until": "2026-03-01"}, "until", "before the start"),
        ({"since": "yesterday"}, "since", "is not a date"),
        ({"until": "2026-02-30"}, "until", "is not a date"),
        ({"period": "month"}, "period", "day or week"),
        ({"version": "no-such"}, "version", "no model version named"),
        ({"since": "2000-01-01", "until": "2026-01-01"}, "since", "At most"),
    ],
)
def test_bad_parameters_say_what_is_wrong_and_fall_back(query: dict[str, str], field: str, words: str) -> None:
    parsed, errors = selectors.report_params(query, today=date(2026, 3, 9))
    assert list(errors) == [field] and words in errors[field]
    assert parsed.since <= parsed.until and parsed.period in ("day", "week")


def test_the_default_range_is_the_last_thirty_days() -> None:
    parsed, errors = selectors.report_params({}, today=date(2026, 3, 30))
    assert (parsed.period, parsed.since, parsed.until, parsed.version, errors) == (
        "day", date(2026, 3, 1), date(2026, 3, 30), None, {},
    )  # fmt: skip


def test_percentiles_interpolate_like_percentile_cont() -> None:
    assert selectors.percentile([], 0.5) is None
    assert selectors.percentile([7.0], 0.9) == 7.0
    assert selectors.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert selectors.percentile([10.0, 0.0, 20.0], 0.9) == pytest.approx(18.0)
