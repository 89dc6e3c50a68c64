"""/reports/ and its CSV, for agents and admins: thin, the figures come from the selectors."""

from __future__ import annotations

from typing import cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from finetuning.models import ModelVersion

from ..roles import agent_required
from . import charts, export, selectors


@agent_required
@require_GET
def reports_page(request: HttpRequest) -> HttpResponse:
    params, errors = selectors.report_params(request.GET)
    report = selectors.report(params)
    query = params.query()
    everything = {k: v for k, v in query.items() if k != "version"}
    versions_table = charts.table(report, "versions")
    return render(
        request,
        "reports/reports.html",
        {
            "report": report,
            "params": params,
            "errors": errors,
            "charts": charts.charts(report),
            "versions": ModelVersion.objects.order_by("-created_at").values_list("name", flat=True),
            "query": urlencode(query),
            "all_versions_query": urlencode(everything),
            "summary": charts.summary(report),
            "time_zone": settings.TIME_ZONE,
            "buckets_table": charts.table(report, "buckets"),
            "agents_table": charts.table(report, "agents"),
            "versions_table": versions_table,
            "version_rows": [
                {
                    "name": row.name,
                    "label": charts.version_label(row),
                    "cells": cells[1:],
                    "narrow": urlencode({**everything, "version": row.name or ""}),
                }
                for row, cells in zip(report.versions, versions_table["rows"], strict=True)
            ],  # fmt: skip
        },
        status=400 if errors else 200,
    )


@agent_required
@require_GET
def reports_csv(request: HttpRequest) -> HttpResponse:
    params, errors = selectors.report_params(request.GET)
    table = request.GET.get("table") or "buckets"
    if table not in selectors.TABLES:
        errors["table"] = f"table must be one of {', '.join(selectors.TABLES)}, not {table[:40]!r}."
    if errors:
        # A CSV of some other range than the one asked for would be read as the one asked for.
        return HttpResponse("\n".join(errors.values()) + "\n", status=400, content_type="text/plain; charset=utf-8")
    report = selectors.report(params)
    response = StreamingHttpResponse(export.report_csv(report, table), content_type="text/csv; charset=utf-8")
    version = f"-{params.version.name}" if params.version else ""
    name = f"report-{table}-{params.period}-{params.since}-to-{params.until}{version}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return cast(HttpResponse, response)  # roles.agent_required is typed for HttpResponse; Django serves both alike
