"""Reads for the knowledge page: the entries of a tab and the count of each tab."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from .models import KnowledgeEntry, KnowledgeSource

# The page's tabs: a conflicted entry is in Conflicts whatever its status (retiring clears it),
# so a person sees it where it needs them, and nowhere else.
TABS: dict[str, Q] = {
    "suggested": Q(status=KnowledgeEntry.Status.SUGGESTED, conflict=False),
    "approved": Q(status=KnowledgeEntry.Status.APPROVED, conflict=False),
    "conflicts": Q(conflict=True) & ~Q(status=KnowledgeEntry.Status.RETIRED),
    "retired": Q(status=KnowledgeEntry.Status.RETIRED),
}
TAB_LABELS = {"suggested": "Suggested", "approved": "Approved", "conflicts": "Conflicts", "retired": "Retired"}


def tab_or_default(tab: object) -> str:
    return tab if isinstance(tab, str) and tab in TABS else "suggested"


def search_q(text: str) -> Q:
    """Entries whose question, other phrasings or answer contain ``text``, ignoring case. The
    phrasings are matched in their JSON text: a quote or a non-ASCII letter may be stored escaped."""
    text = text.strip()
    if not text:
        return Q()
    return Q(question__icontains=text) | Q(answer__icontains=text) | Q(alternatives__icontains=text)


def tab_counts(search: str = "") -> dict[str, int]:
    """Each tab's count, in one aggregate query, under the same search as the list."""
    counts = KnowledgeEntry.objects.filter(search_q(search)).aggregate(
        **{tab: Count("id", filter=where) for tab, where in TABS.items()}
    )
    return {tab: int(counts[tab] or 0) for tab in TABS}


def entries(tab: str, search: str = "") -> QuerySet[KnowledgeEntry]:
    """The tab's entries, newest change first, with their sources (and approver) loaded in the
    same few queries whatever the number of entries."""
    sources = KnowledgeSource.objects.order_by("created_at", "id").only("id", "entry_id", "conversation_id")
    return (
        KnowledgeEntry.objects.filter(TABS[tab_or_default(tab)])
        .filter(search_q(search))
        .select_related("approved_by")
        .annotate(source_count=Count("sources", distinct=True))
        .prefetch_related(Prefetch("sources", queryset=sources))
        .defer("embedding")
    )


def all_entries() -> QuerySet[KnowledgeEntry]:
    """Every entry, for an export: oldest first, sources counted in the same query."""
    return KnowledgeEntry.objects.order_by("id").annotate(source_count=Count("sources")).defer("embedding")
