"""The knowledge page (``/agent/knowledge/``): agents and admins see the entries by tab, search
them, and approve, edit, retire, merge, write, import and export them. Every view is agents only
(staff count as agents: roles.is_agent), and every agent may approve and retire: the desk that
teaches the bot is the one that vouches for what it says. The views validate and call
``services``, which write and tell the other agents' pages."""

from __future__ import annotations

import io
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from ..errors import ChatError
from ..roles import agent_required
from . import files, selectors, services
from .models import KnowledgeEntry

MAX_IMPORT_BYTES = 5 * 1024 * 1024


class ImportRefused(Exception):
    """The file as a whole, or some of its lines, cannot be imported: nothing of it was."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@agent_required
@require_GET
def knowledge_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


def _page(
    request: HttpRequest, *, status: int = 200, error: str = "", import_problems: list[str] | None = None
) -> HttpResponse:
    """The page for the tab and search in the query string; a refused action renders it again with
    its error (status 400) so what was typed is not lost behind a redirect."""
    source = request.GET if request.method == "GET" else request.POST
    tab = selectors.tab_or_default(source.get("tab"))
    search = str(source.get("q", ""))[:200]
    shown = _shown(request)  # one entry, from a transcript's "Grounded on" link
    if shown is not None:
        tab = selectors.tab_of(shown)
    entries = list(selectors.entries(tab, search, only=shown.id if shown else None))
    live = selectors.entries_usage(e.id for e in entries)
    context: dict[str, Any] = {
        "tab": tab,
        "q": search,
        "tabs": [(key, label, count) for (key, label), count in _with_counts(search)],
        "rows": [{"entry": e, "alternatives": "\n".join(e.alternatives), "usage": live[e.id]} for e in entries],
        "shown": shown,
        "error": error,
        "import_problems": import_problems or [],
        "max_chars": services.MAX_CHARS,
        "form": request.POST if request.method == "POST" else {},
    }
    return render(request, "knowledge/page.html", context, status=status)


def _shown(request: HttpRequest) -> KnowledgeEntry | None:
    raw = request.GET.get("show", "")
    return KnowledgeEntry.objects.filter(id=int(raw)).first() if raw.isdigit() else None


def _with_counts(search: str) -> list[tuple[tuple[str, str], int]]:
    counts = selectors.tab_counts(search)
    return [((tab, label), counts[tab]) for tab, label in selectors.TAB_LABELS.items()]


def _back(request: HttpRequest) -> HttpResponseRedirect:
    """To the tab and search the form was posted from."""
    query = {k: str(request.POST[k]) for k in ("tab", "q") if request.POST.get(k)}
    url = reverse("agent-knowledge")
    return HttpResponseRedirect(f"{url}?{urlencode(query)}" if query else url)


def _ids(request: HttpRequest) -> list[int]:
    try:
        return sorted({int(i) for i in request.POST.getlist("ids")})
    except ValueError:
        raise ChatError("bad_ids", "Those entries are not known.") from None


def _person(request: HttpRequest) -> User:
    """The signed-in agent (agent_required let only them through), as the services record them."""
    assert isinstance(request.user, User)
    return request.user


def _entry(entry_id: int) -> KnowledgeEntry:
    return get_object_or_404(KnowledgeEntry, id=entry_id)


def _lines(text: object) -> list[str]:
    """The other phrasings, one a line, blank lines dropped."""
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


@agent_required
@require_POST
def entries_approve(request: HttpRequest) -> HttpResponse:
    """One entry (its own button) or the ticked ones ("Approve selected")."""
    try:
        ids = _ids(request)
        if not ids:
            raise ChatError("nothing_selected", "Tick the entries to approve first.")
        approved = services.entries_approve(ids=ids, by=_person(request))
    except ChatError as error:
        return _page(request, status=400, error=error.detail)
    held = sum(e.conflict for e in approved)
    note = f" ({held} in conflict: served once resolved)" if held else ""
    messages.success(request, f"Approved {len(approved)} entr{'y' if len(approved) == 1 else 'ies'}{note}.")
    return _back(request)


@agent_required
@require_POST
def entry_edit(request: HttpRequest, entry_id: int) -> HttpResponse:
    """Only what changed is passed on: an unchanged question and phrasings keep their embedding."""
    entry = _entry(entry_id)
    question, alternatives = str(request.POST.get("question", "")), _lines(request.POST.get("alternatives"))
    same_phrasings = question.strip() == entry.question and alternatives == entry.alternatives
    try:
        services.entry_edit(
            entry=entry,
            question=None if same_phrasings else question,
            alternatives=None if same_phrasings else alternatives,
            answer=request.POST.get("answer", ""),
            resolved=request.POST.get("resolved") == "1",
        )
    except ChatError as error:
        return _page(request, status=400, error=f"Entry {entry.id} was not saved: {error.detail}")
    messages.success(request, f"Saved entry {entry.id}.")
    return _back(request)


@agent_required
@require_POST
def entry_retire(request: HttpRequest, entry_id: int) -> HttpResponse:
    """Confirmed in the page's dialog first (which sets ``confirm``); kept for the record, never
    served again."""
    entry = _entry(entry_id)
    if request.POST.get("confirm") != "yes":
        return _page(request, status=400, error=f"Entry {entry.id} was not retired: confirm it in the dialog.")
    entry = services.entry_retire(entry=entry)
    messages.success(request, f"Retired entry {entry.id}: “{entry.question[:80]}”.")
    return _back(request)


@agent_required
@require_POST
def entries_merge(request: HttpRequest) -> HttpResponse:
    """The ticked entries into the one whose answer was chosen to win."""
    try:
        ids = _ids(request)
        into = int(request.POST.get("into") or 0)
        if len(ids) < 2:
            raise ChatError("merge_needs_two", "Tick at least two entries to merge.")
        if into not in ids:
            raise ChatError("merge_no_target", "Choose which of the ticked entries' answers wins.")
        chosen = list(KnowledgeEntry.objects.filter(id__in=ids).exclude(status=KnowledgeEntry.Status.RETIRED))
        if len(chosen) != len(ids):
            raise ChatError("merge_unknown", "Some of those entries are gone or retired.")
    except ValueError:
        return _page(request, status=400, error="Choose which of the ticked entries' answers wins.")
    except ChatError as error:
        return _page(request, status=400, error=error.detail)
    target = next(e for e in chosen if e.id == into)
    services.entries_merge(into=target, others=[e for e in chosen if e.id != into])
    messages.success(request, f"Merged {len(ids)} entries into entry {into}.")
    return _back(request)


@agent_required
@require_POST
def entry_create(request: HttpRequest) -> HttpResponse:
    """Written by hand: a suggestion, like everything else, until someone approves it."""
    try:
        entry = services.entry_create(
            question=request.POST.get("question", ""),
            answer=request.POST.get("answer", ""),
            alternatives=_lines(request.POST.get("alternatives")),
            author=_person(request),
        )
    except ChatError as error:
        return _page(request, status=400, error=f"The entry was not added: {error.detail}")
    messages.success(request, f"Added entry {entry.id} to the suggestions.")
    return _back(request)


@agent_required
@require_POST
def entries_import(request: HttpRequest) -> HttpResponse:
    """A JSONL or CSV file (files.py). All or nothing: when any line is bad, the page names every
    bad line and imports none, so the fixed file can be uploaded again without duplicates. The web
    process never embeds: the worker embeds an approved entry before serving it."""
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise ImportRefused(["Choose a .jsonl or .csv file to import."])
        count = _import(upload.name or "", upload.read(MAX_IMPORT_BYTES + 1), request)
    except ImportRefused as refused:
        return _page(request, status=400, error="Nothing was imported.", import_problems=refused.problems)
    messages.success(request, f"Imported {count} entr{'y' if count == 1 else 'ies'} as suggestions.")
    return _back(request)


def _import(name: str, data: bytes, request: HttpRequest) -> int:
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix not in ("jsonl", "csv"):
        raise ImportRefused([f"{name or 'The file'}: only .jsonl and .csv files can be imported."])
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused([f"{name}: larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB."])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportRefused([f"{name}: not UTF-8 text (byte {error.start})."]) from None
    rows, bad = files.rows_parse(io.StringIO(text, newline=""), csv_file=suffix == "csv")
    if bad:
        raise ImportRefused([str(problem) for problem in bad])
    if not rows:
        raise ImportRefused([f"{name}: no entries in the file."])
    return _rows_create(rows, request)


def _rows_create(rows: list[files.Row], request: HttpRequest) -> int:
    """Every row, or none: a row the services refuse (too long) names its line and undoes the rest."""
    problems: list[str] = []
    with transaction.atomic():
        for row in rows:
            try:
                with transaction.atomic():
                    services.entry_create(
                        question=row.question,
                        answer=row.answer,
                        alternatives=row.alternatives,
                        author=_person(request),
                    )
            except ChatError as error:
                problems.append(f"line {row.line}: {error.detail}")
        if problems:
            transaction.set_rollback(True)
    if problems:
        raise ImportRefused(problems)
    return len(rows)


@agent_required
@require_GET
def entries_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """Every entry, in the format ``manage.py knowledge import`` and this page's import read back."""
    csv_file = fmt == "csv"
    body = files.rows_dump(selectors.all_entries(), csv_file=csv_file)
    content_type = "text/csv; charset=utf-8" if csv_file else "application/x-ndjson; charset=utf-8"
    response = HttpResponse(body, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="knowledge-{stamp}.{fmt}"'
    return response
