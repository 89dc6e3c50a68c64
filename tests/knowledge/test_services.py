"""The knowledge writes: by hand, edit, approve, retire, merge, and suggestions grouped by question."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.errors import ChatError
from conversations.knowledge import services, vectors
from conversations.knowledge.models import KnowledgeEntry
from tests.knowledge.conftest import unit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _group_threshold(settings: Any) -> None:
    settings.KNOWLEDGE_GROUP_THRESHOLD = 0.9


PRICE = unit(1.0)
PRICE_REWORDED = unit(1.0, 0.2)  # cosine 0.98 with PRICE: the same question
HOURS = unit(0.0, 1.0)  # cosine 0 with PRICE: another question


def taught(question: str, answer: str, **sources: Any) -> services.Taught:
    return services.Taught(question=question, answer=answer, **sources)


def test_it_redacts_text_before_it_enters_an_entry() -> None:
    entry = services.entry_create(question="I am jo@example.com, how much is wrapping?", answer="It costs $4.50.")
    assert "jo@example.com" not in entry.question and "[email]" in entry.question


def test_it_refuses_an_entry_without_an_answer() -> None:
    with pytest.raises(ChatError):
        services.entry_create(question="How much is wrapping?", answer="  ")


def test_an_entry_written_by_hand_is_a_suggestion_with_its_author(agent_user: Any) -> None:
    entry = services.entry_create(question="Q?", answer="A.", alternatives=["Q again?", "Q again?"], author=agent_user)
    assert entry.status == "suggested" and entry.alternatives == ["Q again?"]
    assert entry.sources.get().author == agent_user


def test_approving_records_who_and_when_and_tells_the_agents(agent_user: Any, capture_events: Any) -> None:
    entry = services.entry_create(question="Q?", answer="A.")
    with capture_events() as sent:
        services.entries_approve(ids=[entry.id], by=agent_user)
    entry.refresh_from_db()
    assert entry.status == "approved" and entry.approved_by == agent_user and entry.approved_at is not None
    assert sent.frames() == [("agents", "knowledge")]
    assert sent.to_agents()[0]["entry"]["status"] == "approved"


def test_approving_many_approves_each_once(agent_user: Any) -> None:
    first, second = (services.entry_create(question=f"Q{i}?", answer="A.") for i in range(2))
    assert len(services.entries_approve(ids=[first.id, second.id], by=agent_user)) == 2
    assert services.entries_approve(ids=[first.id, second.id], by=agent_user) == []


def test_editing_the_question_drops_the_embedding_and_resolving_clears_the_conflict() -> None:
    entry = services.suggestion_record(taught=taught("How much is wrapping?", "$4.50."), vector=PRICE)
    KnowledgeEntry.objects.filter(id=entry.id).update(conflict=True)
    edited = services.entry_edit(entry=entry, question="What does gift wrap cost?", resolved=True)
    assert edited.embedding == b"" and not edited.conflict and edited.answer == "$4.50."


def test_a_retired_entry_is_neither_served_nor_conflicted() -> None:
    entry = services.entry_create(question="Q?", answer="A.")
    services.entries_approve(ids=[entry.id], by=None)
    services.entry_retire(entry=entry)
    assert not KnowledgeEntry.objects.filter(services.served()).exists()


def test_a_merge_takes_the_phrasings_and_sources_and_retires_the_others() -> None:
    kept = services.suggestion_record(taught=taught("How much is wrapping?", "$4.50."), vector=PRICE)
    other = services.suggestion_record(taught=taught("Gift wrap price?", "$5."), vector=PRICE_REWORDED)
    merged = services.entries_merge(into=kept, others=[other])
    other.refresh_from_db()
    assert merged.alternatives == ["Gift wrap price?"] and merged.sources.count() == 2
    assert len(vectors.from_bytes(merged.embedding)) == 2
    assert other.status == "retired" and not merged.conflict and not other.conflict


def test_a_new_question_makes_a_new_suggestion() -> None:
    services.suggestion_record(taught=taught("How much is wrapping?", "$4.50."), vector=PRICE)
    services.suggestion_record(taught=taught("When do you open?", "At 9am."), vector=HOURS)
    assert KnowledgeEntry.objects.filter(status="suggested", conflict=False).count() == 2


def test_the_same_question_with_the_same_answer_adds_a_source_and_a_phrasing() -> None:
    first = services.suggestion_record(taught=taught("How much is wrapping?", "Wrapping is $4.50."), vector=PRICE)
    again = services.suggestion_record(
        taught=taught("Gift wrap price?", "It costs $4.50 an item."), vector=PRICE_REWORDED
    )
    assert again.id == first.id and again.sources.count() == 2
    assert again.alternatives == ["Gift wrap price?"] and len(vectors.from_bytes(again.embedding)) == 2


def test_the_same_question_with_another_figure_is_a_conflict_on_both(capture_events: Any) -> None:
    first = services.suggestion_record(taught=taught("How much is wrapping?", "Wrapping is $4.50."), vector=PRICE)
    with capture_events() as sent:
        second = services.suggestion_record(taught=taught("Gift wrap price?", "It costs $6."), vector=PRICE_REWORDED)
    first.refresh_from_db()
    assert second.id != first.id and first.conflict and second.conflict
    assert [p["entry"]["id"] for p in sent.to_agents()] == [second.id, first.id]


def test_a_conflicted_entry_is_never_served_even_approved() -> None:
    first = services.suggestion_record(taught=taught("How much is wrapping?", "$4.50."), vector=PRICE)
    second = services.suggestion_record(taught=taught("Gift wrap price?", "$6."), vector=PRICE_REWORDED)
    services.entries_approve(ids=[first.id, second.id], by=None)
    assert not KnowledgeEntry.objects.filter(services.served()).exists()


def test_a_changed_correction_changes_its_suggestion_not_a_conflict(bot_reply: Any) -> None:
    source = {"message": bot_reply, "conversation": bot_reply.conversation}
    first = services.suggestion_record(taught=taught("How much is wrapping?", "$4.50.", **source), vector=PRICE)
    again = services.suggestion_record(taught=taught("How much is wrapping?", "$5.00.", **source), vector=PRICE)
    first.refresh_from_db()
    assert again.id == first.id and first.answer == "$5.00." and not first.conflict
    assert first.sources.count() == 1
