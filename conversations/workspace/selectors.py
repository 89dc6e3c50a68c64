"""The agents' reads: the inbox, its views (mine, unassigned, all, waiting) and filters, unread
counts per agent, the agents one can assign to, a conversation by id, a transcript."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Exists, F, FilteredRelation, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from .. import roles
from ..models import INBOX_ORDER, Conversation, ConversationRead, Feedback, Message

# The inbox's views: who a conversation is for. "all" is every conversation with a message.
VIEWS = ("mine", "unassigned", "waiting", "all")
VIEW_LABELS = {"mine": "Mine", "unassigned": "Unassigned", "waiting": "Waiting for a person", "all": "All"}


def conversation_for_agent(conversation_id: Any) -> Conversation | None:
    try:
        return Conversation.objects.select_related("customer", "agent").filter(id=conversation_id).first()
    except ValidationError:  # not a UUID
        return None


@dataclass(frozen=True)
class InboxFilters:
    view: str = "all"
    status: str = ""
    negative: bool = False
    reviewed: str = ""  # "", "yes", "no"
    since: date | None = None
    until: date | None = None
    model_version: int | None = None
    q: str = ""


def inbox_filters(params: Any) -> InboxFilters:
    """Filters from a query string; values that do not parse are ignored, never an error page."""
    status = params.get("status", "")
    reviewed = params.get("reviewed", "")
    version = params.get("model_version", "")
    view = params.get("view", "")
    return InboxFilters(
        view=view if view in VIEWS else "all",
        status=status if status in Conversation.Status.values else "",
        negative=params.get("negative") in ("1", "on", "true"),
        reviewed=reviewed if reviewed in ("yes", "no") else "",
        since=_date(params.get("since", "")),
        until=_date(params.get("until", "")),
        model_version=int(version) if version.isdigit() else None,
        q=params.get("q", "").strip()[:200],
    )


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _said() -> Exists:
    """The conversation has a message someone wrote (not only system lines)."""
    return Exists(Message.objects.filter(conversation=OuterRef("pk")).exclude(role=Message.Role.SYSTEM))


def view_filter(view: str, user: User | None) -> Q:
    """Which conversations a view holds, for ``user`` (Mine: assigned to them)."""
    if view == "mine":
        return Q(assignee_id=user.pk if user is not None else None) & Q(assignee__isnull=False)
    if view == "unassigned":
        return Q(assignee__isnull=True) & ~Q(status=Conversation.Status.CLOSED)
    if view == "waiting":
        return Q(status=Conversation.Status.WAITING)
    return Q()


def unread_of(user: User | None) -> Subquery:
    """How many customer messages of the conversation ``user`` has not read: those after their
    ``ConversationRead.read_at``, all of them without one. One correlated count per listed row,
    on the (conversation, role, created_at) index."""
    user_id: int = user.pk if user is not None and user.pk is not None else 0  # nobody: all unread
    read = ConversationRead.objects.filter(user_id=user_id, conversation=OuterRef(OuterRef("pk")))
    unread = (
        Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.CUSTOMER)
        .filter(~Exists(read) | Q(created_at__gt=Subquery(read.values("read_at")[:1])))
        .order_by()
        .values("conversation")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(unread), 0)  # type: ignore[return-value]


def _count_of(messages: QuerySet[Message]) -> Coalesce:
    """How many of the conversation's ``messages``: a correlated count, which the database works
    out only for the rows a page lists (a GROUP BY over every conversation would sort them all)."""
    counted = messages.order_by().values("conversation").annotate(n=Count("id")).values("n")
    return Coalesce(Subquery(counted), 0)


def inbox(filters: InboxFilters, user: User | None = None) -> QuerySet[Conversation]:
    """Conversations with at least one message in the view, narrowed by ``filters``: waiting ones
    first, longest wait first, then by last activity, newest first; each with ``unread`` for ``user``."""
    negative = Feedback.objects.filter(message__conversation=OuterRef("pk"), positive=False)
    own = Message.objects.filter(conversation=OuterRef("pk"))
    conversations = (
        Conversation.objects.select_related("customer", "agent", "assignee")
        .filter(view_filter(filters.view, user))
        .filter(_said())
        .annotate(
            message_count=_count_of(own.exclude(role=Message.Role.SYSTEM)),
            customer_message_count=_count_of(own.filter(role=Message.Role.CUSTOMER)),
            has_negative=Exists(negative),
            last_text=Subquery(
                own.exclude(role=Message.Role.SYSTEM).exclude(text="").order_by("-created_at", "-id").values("text")[:1]
            ),
            unread=unread_of(user),
        )
        .order_by(*INBOX_ORDER)
    )
    if filters.status:
        conversations = conversations.filter(status=filters.status)
    if filters.negative:
        conversations = conversations.filter(has_negative=True)
    if filters.reviewed:
        conversations = conversations.filter(reviewed=filters.reviewed == "yes")
    if filters.since:
        conversations = conversations.filter(created_at__date__gte=filters.since)
    if filters.until:
        conversations = conversations.filter(created_at__date__lte=filters.until)
    if filters.model_version is not None:
        conversations = conversations.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), model_version_id=filters.model_version))
        )
    if filters.q:
        conversations = conversations.filter(id__in=messages_matching(filters.q).values("conversation_id"))
    return conversations


def view_counts(user: User) -> dict[str, dict[str, int]]:
    """Per view, how many conversations it holds and how many customer messages ``user`` has not
    read in its open ones (a closed conversation asks nothing of anyone), filters aside: the tabs
    count the whole view. Two aggregate queries (joins, not a subquery a row), whatever the number
    of conversations."""
    said = Conversation.objects.filter(_said())
    totals = said.aggregate(**{view: Count("id", filter=view_filter(view, user)) for view in VIEWS})
    mine_read = FilteredRelation("reads", condition=Q(reads__user_id=user.pk))
    unread = Q(messages__role=Message.Role.CUSTOMER) & (
        Q(mine_read__isnull=True) | Q(messages__created_at__gt=F("mine_read__read_at"))
    )
    unread_totals = (
        Conversation.objects.exclude(status=Conversation.Status.CLOSED)
        .annotate(mine_read=mine_read)
        .aggregate(**{view: Count("messages", filter=unread & view_filter(view, user)) for view in VIEWS})
    )
    return {view: {"count": totals[view], "unread": unread_totals[view]} for view in VIEWS}


def title_count(counts: dict[str, dict[str, int]]) -> int:
    """The number in the tab title: my unread messages plus the conversations waiting for a person."""
    return counts["mine"]["unread"] + counts["waiting"]["count"]


def agents_to_assign() -> list[User]:
    """Who a conversation can be assigned to: active users in the agents group, and staff."""
    return list(
        User.objects.filter(is_active=True)
        .filter(Q(groups__name=roles.AGENT_GROUP) | Q(is_staff=True) | Q(is_superuser=True))
        .distinct()
        .order_by("first_name", "username")
    )


def messages_matching(query: str) -> QuerySet[Message]:
    """Full-text search on PostgreSQL (stemmed, web-search syntax); a substring match elsewhere.
    Not the system lines: searching an agent's name finds what people wrote, not every takeover."""
    said = Message.objects.exclude(role=Message.Role.SYSTEM)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        return said.annotate(search=SearchVector("text", config="english")).filter(
            search=SearchQuery(query, config="english", search_type="websearch")
        )
    return said.filter(text__icontains=query)


def transcript(conversation: Conversation) -> list[Message]:
    """Every message with what the agent's transcript shows next to it, in two queries."""
    return list(
        conversation.messages.select_related("author", "model_version", "correction")
        .prefetch_related("feedback")
        .order_by("created_at", "id")
    )
