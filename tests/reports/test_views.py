"""/reports/ and its CSV: who may see them, the page's tables equal the CSV rows, and wrong
parameters get a message beside the field, never a 500."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from .conftest import RANGE

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_rows(response: Any) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def page_cells(html: str, table_id: str) -> list[list[str]]:
    """The ``data-value`` of each cell of one table, row by row: what the CSV must hold."""
    body = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None
    return [re.findall(r'data-value="([^"]*)"', row) for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def test_anonymous_visitors_go_to_the_login_page(client: Client) -> None:
    for name in ("reports", "reports-csv"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_signed_in_users_who_are_not_agents_are_refused(plain_user: User) -> None:
    for name in ("reports", "reports-csv"):
        assert signed_in(plain_user).get(reverse(name)).status_code == 403


def test_agents_and_admins_see_the_reports(agent_user: User, admin_user: User) -> None:
    for user in (agent_user, admin_user):
        response = signed_in(user).get(reverse("reports"))
        assert response.status_code == 200
        assert b"No conversations in this range." in response.content


def test_the_page_shows_the_fixture_figures_and_hands_them_to_the_charts(known_week: Any, agent_user: User) -> None:
    response = signed_in(agent_user).get(reverse("reports"), {**RANGE, "period": "day"})
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'id="total-conversations">6<', html)
    assert re.search(r'id="total-handoff-rate">50.0%<', html)
    charts = json.loads(re.search(r'id="report-charts"[^>]*>(.*?)</script>', html, re.S).group(1))
    by_id = {chart["id"]: chart for chart in charts}
    assert by_id["conversations"]["labels"] == ["2026-03-06", "2026-03-07", "2026-03-08", "2026-03-09"]
    assert [s["data"] for s in by_id["conversations"]["series"]] == [[2, 0, 0, 1], [1, 1, 0, 1]]
    assert by_id["rates"]["series"][0]["data"] == [33.3, 100.0, None, 50.0]
    assert by_id["versions"]["labels"] == ["v2", "v1", "base model"]
    assert by_id["versions"]["series"][0]["data"] == [66.7, 50.0, 0.0]
    assert reverse("finetuning:version_detail", args=["v2"]) in html
    assert "<canvas" in html and 'aria-label="Conversations: answered by the bot alone' in html


@pytest.mark.parametrize(("table", "table_id"), [("buckets", "buckets-table"), ("versions", "versions-table"),
                                                 ("agents", "agents-table")])  # fmt: skip
@pytest.mark.parametrize("period", ["day", "week"])
def test_csv_rows_equal_the_page_table(
    known_week: Any, agent_user: User, table: str, table_id: str, period: str
) -> None:
    client = signed_in(agent_user)
    query = {**RANGE, "period": period}
    page = client.get(reverse("reports"), query).content.decode()
    response = client.get(reverse("reports-csv"), {**query, "table": table})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="report-{table}-{period}-2026-03-06-to-2026-03-09.csv"'
    )
    header, *rows = csv_rows(response)
    assert rows == page_cells(page, table_id)
    assert len(rows) == {"buckets": 5 if period == "day" else 3, "versions": 3, "agents": 2}[table]


def test_the_bucket_csv_holds_the_hand_computed_figures(known_week: Any, agent_user: User) -> None:
    response = signed_in(agent_user).get(reverse("reports-csv"), {**RANGE, "period": "week"})
    header, first, second, total = csv_rows(response)
    first_week = dict(zip(header, first, strict=True))
    assert (first_week["period_start"], first_week["conversations"], first_week["handoff_rate"]) == (
        "2026-03-02",
        "4",
        "0.5",
    )
    assert (first_week["csat_mean"], first_week["bot_first_response_p90_s"]) == ("3.6667", "6.4")
    assert dict(zip(header, total, strict=True))["period_start"] == "total"
    assert dict(zip(header, second, strict=True))["human_first_response_median_s"] == "120"


def test_a_version_narrows_the_csv(known_week: Any, agent_user: User) -> None:
    response = signed_in(agent_user).get(reverse("reports-csv"), {**RANGE, "version": "v1", "table": "versions"})
    header, *rows = csv_rows(response)
    assert [row[0] for row in rows] == ["v1"]
    assert 'v1.csv"' in response["Content-Disposition"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"since": "2026-03-09", "until": "2026-03-01"}, "before the start"),
        ({"since": "not-a-date"}, "is not a date"),
        ({"version": "nope"}, "no model version named"),
        ({"period": "year"}, "day or week"),
    ],
)
def test_bad_parameters_get_a_message_next_to_the_field(agent_user: User, query: dict[str, str], words: str) -> None:
    client = signed_in(agent_user)
    page = client.get(reverse("reports"), query)
    assert page.status_code == 400
    html = page.content.decode()
    assert words in html and 'class="field-error"' in html and 'aria-invalid="true"' in html
    export = client.get(reverse("reports-csv"), query)
    assert export.status_code == 400 and words in export.content.decode()


def test_an_unknown_csv_table_is_refused(agent_user: User) -> None:
    response = signed_in(agent_user).get(reverse("reports-csv"), {"table": "people"})
    assert response.status_code == 400 and b"table must be one of buckets, versions, agents" in response.content


def test_the_page_only_answers_get(agent_user: User) -> None:
    assert signed_in(agent_user).post(reverse("reports")).status_code == 405


def test_a_name_a_spreadsheet_would_run_is_quoted_in_the_csv(known_week: Any, agent_user: User) -> None:
    known_week["eli"].first_name = '=HYPERLINK("http://example.com")'
    known_week["eli"].save()
    response = signed_in(agent_user).get(reverse("reports-csv"), {**RANGE, "table": "agents"})
    header, eli, dana = csv_rows(response)
    assert eli == ['\'=HYPERLINK("http://example.com")', "eli", "3"] and dana == ["Dana", "dana", "2"]
