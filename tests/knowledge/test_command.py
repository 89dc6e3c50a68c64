"""python manage.py knowledge: list, approve, import and export."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from conversations.knowledge import services
from conversations.knowledge.models import KnowledgeEntry

pytestmark = pytest.mark.django_db


def knowledge(*args: str) -> str:
    out = StringIO()
    call_command("knowledge", *args, stdout=out)
    return out.getvalue()


def test_it_imports_jsonl_as_embedded_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    rows = [{"question": "How much is gift wrapping?", "answer": "$4.50.", "alternatives": ["Gift wrap price?"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert "imported 1 entries" in knowledge("import", str(path))
    entry = KnowledgeEntry.objects.get()
    assert entry.status == "suggested" and entry.alternatives == ["Gift wrap price?"]
    assert len(entry.embedding) == 2 * 384 * 4  # both phrasings, embedded by the command


def test_it_imports_csv_and_approves_with_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("question,answer,alternatives\nWhen do you open?,At 9am.,Opening time? | First hour?\n")
    knowledge("import", str(path), "--approve")
    entry = KnowledgeEntry.objects.get()
    assert entry.status == "approved" and entry.alternatives == ["Opening time?", "First hour?"]


def test_a_bad_line_is_refused_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text('{"question": "Q?", "answer": "A."}\n{"question": "Q?"}\n')
    with pytest.raises(CommandError, match="line 2"):
        knowledge("import", str(path))
    assert not KnowledgeEntry.objects.exists()


def test_approve_all_suggested_and_list_by_status() -> None:
    first = services.entry_create(question="Q one?", answer="A one.")
    services.entry_create(question="Q two?", answer="A two.")
    KnowledgeEntry.objects.filter(id=first.id).update(conflict=True)
    assert "approved 2 entries (1 in conflict" in knowledge("approve", "--all-suggested")
    listed = knowledge("list", "--status", "approved").splitlines()
    assert len(listed) == 2 and "CONFLICT" in listed[0] and "Q two?" in listed[1]
    assert knowledge("list", "--status", "suggested") == ""


def test_approve_needs_ids_or_the_flag() -> None:
    with pytest.raises(CommandError):
        knowledge("approve")


@pytest.mark.parametrize("name", ["faq.jsonl", "faq.csv"])
def test_an_export_imports_back_the_same_entries(tmp_path: Path, name: str) -> None:
    services.entry_create(question="When do you open?", answer="At 9am, sharp.", alternatives=["Opening time?"])
    path = tmp_path / name
    assert "exported 1 entries" in knowledge("export", str(path))
    KnowledgeEntry.objects.all().delete()
    knowledge("import", str(path))
    entry = KnowledgeEntry.objects.get()
    assert (entry.question, entry.answer, entry.alternatives) == (
        "When do you open?",
        "At 9am, sharp.",
        ["Opening time?"],
    )
