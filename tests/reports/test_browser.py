"""/reports/ in real headless Chromium against uvicorn (a live system of this module's own Redis
prefix): the charts are drawn with the fixture's numbers, the tables show them, the CSV link
downloads them, the period switch redraws per week, the keyboard reaches every control, and a
390×844 phone scrolls no wider than its screen."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

from .conftest import RANGE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUERY = f"since={RANGE['since']}&until={RANGE['until']}"


@pytest.fixture(scope="module")
def system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    system = LiveSystem(fake=True, prefix=f"{settings.REDIS_KEY_PREFIX}:reports")
    yield system
    system.stop()


def datasets(page: Any, chart_id: str) -> list[dict[str, Any]]:
    return list(
        page.evaluate(
            """(id) => {
              const chart = Chart.getChart(document.getElementById('chart-' + id));
              return chart ? chart.data.datasets.map((d) => ({label: d.label, data: d.data})) : null;
            }""",
            chart_id,
        )
    )


def labels(page: Any, chart_id: str) -> list[str]:
    return list(page.evaluate("(id) => Chart.getChart(document.getElementById('chart-' + id)).data.labels", chart_id))


def test_the_page_draws_the_fixture_and_downloads_it(system: LiveSystem, browser: Any, known_week: Any) -> None:
    page = signed_in_context(browser, system, known_week["dana"]).new_page()
    page.goto(f"{system.url}/reports/?{QUERY}")
    page.wait_for_function("() => document.querySelectorAll('canvas').length === 5 && "
                           "[...document.querySelectorAll('canvas')].every((c) => Chart.getChart(c))")  # fmt: skip
    assert datasets(page, "conversations") == [
        {"label": "Bot only", "data": [2, 0, 0, 1]},
        {"label": "With a person", "data": [1, 1, 0, 1]},
    ]
    assert labels(page, "conversations") == ["2026-03-06", "2026-03-07", "2026-03-08", "2026-03-09"]
    assert datasets(page, "rates")[0]["data"] == [33.3, 100, None, 50]
    assert datasets(page, "csat")[0]["data"] == [4.5, 2, None, None]
    assert datasets(page, "first-response")[1]["data"] == [90, 30, None, 120]
    assert labels(page, "versions") == ["v2", "v1", "base model"]
    assert datasets(page, "versions")[0]["data"] == [66.7, 50, 0]
    # The tables beside them show the same numbers.
    assert page.locator("#total-conversations").inner_text() == "6"
    assert page.locator("#table-conversations tbody tr").nth(0).inner_text().split() == ["2026-03-06", "2", "1"]
    assert page.locator("#versions-table tbody tr").nth(0).locator("td").nth(0).inner_text() == "active"
    assert page.locator("#agents-table tbody tr").nth(0).inner_text().split() == ["Eli", "eli", "3"]
    assert page.get_attribute("#chart-rates", "role") == "img"
    assert "Handoff rate" in (page.get_attribute("#chart-rates", "aria-label") or "")

    with page.expect_download() as download_info:
        page.click("#csv-buckets")
    download = download_info.value
    assert download.suggested_filename == "report-buckets-day-2026-03-06-to-2026-03-09.csv"
    with open(download.path(), encoding="utf-8") as file:
        header, *rows = list(csv.reader(io.StringIO(file.read())))
    assert [row[:3] for row in rows] == [
        ["2026-03-06", "3", "2"], ["2026-03-07", "1", "0"], ["2026-03-08", "0", "0"],
        ["2026-03-09", "2", "1"], ["total", "6", "3"],
    ]  # fmt: skip

    # The period switch, with the keyboard: Tab from the top reaches the controls in order.
    page.reload()  # focus back at the top of the page
    for _ in range(15):  # past the workspace's header links
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "period":
            break
    assert page.evaluate("document.activeElement.id") == "period"
    page.select_option("#period", "week")
    focused: list[str] = []
    while len(focused) < 12 and focused[-1:] != ["apply"]:
        page.keyboard.press("Tab")  # a date field takes one Tab per part (day, month, year)
        focused.append(page.evaluate("document.activeElement.id"))
    distinct = [name for i, name in enumerate(focused) if i == 0 or focused[i - 1] != name]
    assert distinct == ["since", "until", "version", "apply"]
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-conversations'))")
    assert "period=week" in page.url
    assert labels(page, "conversations") == ["2026-03-02", "2026-03-09"]
    assert datasets(page, "conversations")[0]["data"] == [2, 1]


def test_an_empty_range_says_so_instead_of_empty_charts(system: LiveSystem, browser: Any, agent_user: Any) -> None:
    page = signed_in_context(browser, system, agent_user).new_page()
    page.goto(f"{system.url}/reports/?since=2025-01-01&until=2025-01-31")
    assert page.locator("#empty-report").inner_text() == "No conversations in this range."
    assert page.locator("canvas").count() == 0


def test_a_bad_range_is_explained_beside_the_field(system: LiveSystem, browser: Any, agent_user: Any) -> None:
    page = signed_in_context(browser, system, agent_user).new_page()
    page.goto(f"{system.url}/reports/?since=2026-03-09&until=2026-03-01")
    assert "before the start" in page.locator("#error-until").inner_text()
    assert page.get_attribute("#until", "aria-invalid") == "true"


def test_it_fits_a_phone(system: LiveSystem, browser: Any, known_week: Any) -> None:
    context = signed_in_context(browser, system, known_week["dana"])
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    for period in ("day", "week"):
        page.goto(f"{system.url}/reports/?{QUERY}&period={period}")
        page.wait_for_function("() => Chart.getChart(document.getElementById('chart-versions'))")
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), period
        width = page.evaluate("document.getElementById('chart-conversations').getBoundingClientRect().width")
        assert 200 < width <= 390
    context.close()
