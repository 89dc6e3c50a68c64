"""The figures of /reports/: per day or week (of a conversation's start, in ``settings.TIME_ZONE``)
and per model version. Counts are database aggregates (``values().annotate()``); medians and p90s
are computed here from the one column of durations the range holds, the same on SQLite and
PostgreSQL. A report costs a fixed number of queries, whatever the number of conversations.
docs/reports.md defines every figure."""

from __future__ import annotations

import math
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    When,
)
from django.db.models.functions import TruncDay, TruncWeek
from django.utils import timezone

from finetuning.models import ModelVersion

from ..models import Conversation, ConversationEvent, Feedback, Message
from ..roles import display_name

PERIODS = ("day", "week")
DEFAULT_DAYS = 30
MAX_DAYS = 731  # two years of day buckets at most: a page a person can still read
PERSON_EVENTS = (ConversationEvent.Kind.HANDOFF_REQUESTED, ConversationEvent.Kind.TAKEN_OVER)


@dataclass(frozen=True)
class ReportParams:
    period: str
    since: date
    until: date
    version: ModelVersion | None = None

    def query(self) -> dict[str, str]:
        """The GET parameters that give this report again (the CSV links, the version links)."""
        query = {"period": self.period, "since": self.since.isoformat(), "until": self.until.isoformat()}
        if self.version is not None:
            query["version"] = self.version.name
        return query


def report_params(query: Mapping[str, str], *, today: date | None = None) -> tuple[ReportParams, dict[str, str]]:
    """The report the GET parameters ask for, and an error per field that was wrong (that field
    then takes its default, so the page still shows a report beside the message)."""
    today = today or timezone.localdate()
    errors: dict[str, str] = {}
    period = query.get("period") or "day"
    if period not in PERIODS:
        errors["period"] = f"Period must be day or week, not {period[:40]!r}."
        period = "day"
    until = _date(query, "until", today, errors)
    since = _date(query, "since", until - timedelta(days=DEFAULT_DAYS - 1), errors)
    if since > until:
        errors["until"] = f"The end ({until}) is before the start ({since}): pick an end on or after the start."
        since, until = until - timedelta(days=DEFAULT_DAYS - 1), until
    elif (until - since).days >= MAX_DAYS:
        errors["since"] = f"At most {MAX_DAYS} days at a time; this range has {(until - since).days + 1}."
        since = until - timedelta(days=MAX_DAYS - 1)
    version = None
    if name := query.get("version"):
        version = ModelVersion.objects.filter(name=name).first()
        if version is None:
            errors["version"] = f"There is no model version named {name[:64]!r}; showing all versions."
    return ReportParams(period=period, since=since, until=until, version=version), errors


def _date(query: Mapping[str, str], key: str, default: date, errors: dict[str, str]) -> date:
    text = query.get(key)
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[key] = f"{text[:40]!r} is not a date: use YYYY-MM-DD, like {default.isoformat()}."
        return default


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation between closest ranks (PostgreSQL's
    ``percentile_cont``); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class BucketRow:
    """One day or week (``period_start`` None: the whole range). Shares are 0–1, times seconds;
    None where there is nothing to divide by or take a median of."""

    period_start: date | None
    conversations: int = 0
    bot_only: int = 0
    with_person: int = 0
    handed_off: int = 0
    bot_only_share: float | None = None
    handoff_rate: float | None = None
    csat_count: int = 0
    csat_mean: float | None = None
    csat_good_share: float | None = None
    customer_up: int = 0
    customer_down: int = 0
    agent_up: int = 0
    agent_down: int = 0
    bot_replies: int = 0
    grounded_replies: int = 0
    grounded_share: float | None = None
    bot_first_response_median_s: float | None = None
    bot_first_response_p90_s: float | None = None
    human_first_response_median_s: float | None = None
    human_first_response_p90_s: float | None = None
    closed_bot_only: int = 0
    resolution_bot_only_median_s: float | None = None
    resolution_bot_only_p90_s: float | None = None
    closed_with_person: int = 0
    resolution_with_person_median_s: float | None = None
    resolution_with_person_p90_s: float | None = None


@dataclass
class VersionRow:
    """One model version (``name`` None: the base model, no adapter)."""

    name: str | None
    status: str
    replies: int = 0
    grounded_replies: int = 0
    grounded_share: float | None = None
    customer_up: int = 0
    customer_down: int = 0
    agent_up: int = 0
    agent_down: int = 0
    first_token_median_s: float | None = None
    first_token_p90_s: float | None = None
    conversations: int = 0  # those whose first bot reply it wrote
    handed_off: int = 0
    handoff_rate: float | None = None
    csat_count: int = 0
    csat_mean: float | None = None
    csat_good_share: float | None = None


@dataclass
class AgentRow:
    agent: str
    username: str
    replies: int


@dataclass
class Report:
    params: ReportParams
    buckets: list[BucketRow]
    total: BucketRow
    versions: list[VersionRow]
    agents: list[AgentRow]


TABLES: dict[str, type] = {"buckets": BucketRow, "versions": VersionRow, "agents": AgentRow}


def columns(table: str) -> list[str]:
    return [f.name for f in fields(TABLES[table])]


def cell(value: Any) -> str:
    """How a figure is written in the CSV and in the page's ``data-value``: the same text."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def rows_of(report: Report, table: str) -> list[list[str]]:
    tables: dict[str, Iterable[Any]] = {
        "buckets": [*report.buckets, report.total],
        "versions": report.versions,
        "agents": report.agents,
    }
    records = tables[table]
    names = columns(table)
    return [
        [cell(getattr(record, name)) if name != "period_start" or record.period_start else "total" for name in names]
        for record in records
    ]


def _tz() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def _bounds(params: ReportParams) -> tuple[datetime, datetime]:
    start = datetime.combine(params.since, time.min, tzinfo=_tz())
    return start, datetime.combine(params.until + timedelta(days=1), time.min, tzinfo=_tz())


def _trunc(params: ReportParams, path: str) -> TruncDay | TruncWeek:
    return (TruncDay if params.period == "day" else TruncWeek)(path, tzinfo=_tz())


def _bucket_key(value: datetime | date) -> date:
    if isinstance(value, datetime):
        return timezone.localtime(value, _tz()).date() if timezone.is_aware(value) else value.date()
    return value


def bucket_starts(params: ReportParams) -> list[date]:
    if params.period == "day":
        return [params.since + timedelta(days=n) for n in range((params.until - params.since).days + 1)]
    monday = params.since - timedelta(days=params.since.weekday())
    return [monday + timedelta(days=7 * n) for n in range((params.until - monday).days // 7 + 1)]


def conversations_in(params: ReportParams) -> QuerySet[Any]:
    """The range's conversations with at least one customer message, each annotated with the
    moments the figures measure between; narrowed to those whose first bot reply ``version`` wrote.
    An annotation costs only in the queries that read it (``values()`` leaves the others out)."""
    start, end = _bounds(params)
    customer = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.CUSTOMER)
    # Every bot message answers a customer message (message_send writes the two together), so the
    # conversation's first bot message is its first reply: one probe of (conversation, role, time).
    bot = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.BOT)
    first_bot = bot.order_by("created_at")  # the index's own order: no sort a row
    person = ConversationEvent.objects.filter(conversation=OuterRef("pk"), kind__in=PERSON_EVENTS)
    agent = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.AGENT)
    rows = (
        Conversation.objects.filter(created_at__gte=start, created_at__lt=end)
        .filter(Exists(customer))
        .annotate(
            first_customer_at=Subquery(customer.order_by("created_at").values("created_at")[:1]),
            answered=Exists(bot),
            first_version=Subquery(first_bot.values("model_version_id")[:1]),
            bot_first_token_at=Subquery(first_bot.values("first_token_at")[:1]),
            handed_off=Exists(person),
            has_agent_reply=Exists(agent),
            first_person_event_at=Subquery(person.order_by("created_at").values("created_at")[:1]),
        )
        .annotate(
            # Asked only of the conversations a person was called to (a CASE runs its subquery
            # for the rows it matches): a fifth of them, on the benchmark's history.
            first_human_at=Case(
                When(
                    handed_off=True,
                    then=Subquery(
                        agent.filter(created_at__gte=OuterRef("first_person_event_at"))
                        .order_by("created_at")
                        .values("created_at")[:1]
                    ),
                ),
                default=None,
                output_field=DateTimeField(),
            )
        )
    )
    if params.version is not None:
        rows = rows.filter(first_version=params.version.id)
    return rows.order_by()


def _grouped(query: QuerySet[Any, Any]) -> list[dict[str, Any]]:
    """The rows of a ``values().annotate()``: plain dicts (their keys are the query's own)."""
    return [dict(row) for row in query]


def _replies(params: ReportParams) -> QuerySet[Any]:
    """The complete bot replies in the range's conversations (only ``version``'s, in the
    conversations it answered first, when one is asked for)."""
    replies = Message.objects.filter(role=Message.Role.BOT, status=Message.Status.COMPLETE)
    if params.version is None:
        # Every bot message answers a customer message, so a bot reply's conversation has one:
        # the range alone picks them, a join instead of a semi-join over every customer message.
        start, end = _bounds(params)
        replies = replies.filter(conversation__created_at__gte=start, conversation__created_at__lt=end)
    else:
        replies = replies.filter(conversation__in=conversations_in(params).values("pk"), model_version=params.version)
    return replies.order_by()


BOT_ONLY = Q(handed_off=False, has_agent_reply=False)
CONVERSATION_FIGURES = {
    "conversations": Count("pk"),
    "bot_only": Count("pk", filter=BOT_ONLY),
    "handed_off": Count("pk", filter=Q(handed_off=True)),
    "csat_count": Count("satisfaction"),
    "csat_sum": Sum("satisfaction"),
    "csat_good": Count("pk", filter=Q(satisfaction__gte=4)),
}
FEEDBACK_FIGURES = {"up": Count("pk", filter=Q(positive=True)), "down": Count("pk", filter=Q(positive=False))}
REPLY_FIGURES = {"replies": Count("pk"), "grounded": Count("pk", filter=~Q(grounding=[]))}


@dataclass
class _Tally:
    """What one bucket adds up before its row is written."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bot_first: list[float] = field(default_factory=list)
    human_first: list[float] = field(default_factory=list)
    resolved_bot: list[float] = field(default_factory=list)
    resolved_person: list[float] = field(default_factory=list)

    def merge(self, other: _Tally) -> None:
        for key, value in other.counts.items():
            self.counts[key] += value
        for name in ("bot_first", "human_first", "resolved_bot", "resolved_person"):
            getattr(self, name).extend(getattr(other, name))

    def row(self, start: date | None) -> BucketRow:
        c = self.counts
        return BucketRow(
            period_start=start,
            conversations=c["conversations"],
            bot_only=c["bot_only"],
            with_person=c["conversations"] - c["bot_only"],
            handed_off=c["handed_off"],
            bot_only_share=_share(c["bot_only"], c["conversations"]),
            handoff_rate=_share(c["handed_off"], c["conversations"]),
            csat_count=c["csat_count"],
            csat_mean=_share(c["csat_sum"], c["csat_count"]),
            csat_good_share=_share(c["csat_good"], c["csat_count"]),
            customer_up=c["customer_up"],
            customer_down=c["customer_down"],
            agent_up=c["agent_up"],
            agent_down=c["agent_down"],
            bot_replies=c["replies"],
            grounded_replies=c["grounded"],
            grounded_share=_share(c["grounded"], c["replies"]),
            bot_first_response_median_s=percentile(self.bot_first, 0.5),
            bot_first_response_p90_s=percentile(self.bot_first, 0.9),
            human_first_response_median_s=percentile(self.human_first, 0.5),
            human_first_response_p90_s=percentile(self.human_first, 0.9),
            closed_bot_only=len(self.resolved_bot),
            resolution_bot_only_median_s=percentile(self.resolved_bot, 0.5),
            resolution_bot_only_p90_s=percentile(self.resolved_bot, 0.9),
            closed_with_person=len(self.resolved_person),
            resolution_with_person_median_s=percentile(self.resolved_person, 0.5),
            resolution_with_person_p90_s=percentile(self.resolved_person, 0.9),
        )


class Seconds(Func):
    """``later − earlier`` in seconds, a float (None where either is missing): subtracted in the
    database, so a row brings one number instead of two timestamps to parse."""

    output_field = FloatField()

    def __init__(self, later: str, earlier: str) -> None:
        super().__init__(F(later), F(earlier))

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ")

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django's own SQLite function for datetime subtraction: whole microseconds.
        return self.as_sql(compiler, connection, template="django_timestamp_diff(%(expressions)s) / 1000000.0")


def bucket_rows(params: ReportParams) -> tuple[list[BucketRow], BucketRow]:
    """Every bucket of the range (empty ones too, so a chart's axis has no gaps) and the total."""
    conversations = conversations_in(params)
    tallies: dict[date, _Tally] = {start: _Tally() for start in bucket_starts(params)}
    keys: dict[datetime | date, date] = {}  # a bucket's value, converted once, not once a row

    def tally(value: datetime | date) -> _Tally:
        if value not in keys:
            keys[value] = _bucket_key(value)
        return tallies.setdefault(keys[value], _Tally())

    for row in _grouped(
        conversations.annotate(bucket=_trunc(params, "created_at")).values("bucket").annotate(**CONVERSATION_FIGURES)
    ):
        counts = tally(row.pop("bucket")).counts
        for key, value in row.items():
            counts[key] += value or 0
    feedback = Feedback.objects.filter(message__in=_replies(params).values("pk")).order_by()
    for row in _grouped(
        feedback.annotate(bucket=_trunc(params, "message__conversation__created_at"))
        .values("bucket", "source")
        .annotate(**FEEDBACK_FIGURES)
    ):
        counts = tally(row["bucket"]).counts
        counts[f"{row['source']}_up"] += row["up"]
        counts[f"{row['source']}_down"] += row["down"]
    for row in _grouped(
        _replies(params)
        .annotate(bucket=_trunc(params, "conversation__created_at"))
        .values("bucket")
        .annotate(**REPLY_FIGURES)
    ):
        counts = tally(row.pop("bucket")).counts
        for key, value in row.items():
            counts[key] += value
    moments = conversations.annotate(
        bucket=_trunc(params, "created_at"),
        bot_first=Seconds("bot_first_token_at", "first_customer_at"),
        human_first=Seconds("first_human_at", "first_person_event_at"),
        resolved=Seconds("closed_at", "created_at"),
    ).values_list("bucket", "bot_first", "human_first", "resolved", "handed_off", "has_agent_reply")
    for bucket, bot, person, resolved, handed_off, agent in moments:
        into = tally(bucket)
        if bot is not None:
            into.bot_first.append(bot)
        if person is not None:
            into.human_first.append(person)
        if resolved is not None:
            (into.resolved_person if handed_off or agent else into.resolved_bot).append(resolved)
    total = _Tally()
    for each in tallies.values():
        total.merge(each)
    return [tallies[start].row(start) for start in sorted(tallies)], total.row(None)


def version_rows(params: ReportParams) -> list[VersionRow]:
    """Each model version that replied in the range (the base model as ``name`` None), newest first."""
    conversations = conversations_in(params)
    replies = _replies(params)
    rows: dict[int | None, VersionRow] = {}

    def row(version_id: int | None) -> VersionRow:
        return rows.setdefault(version_id, VersionRow(name=None, status="base"))

    for counted in _grouped(replies.values("model_version_id").annotate(**REPLY_FIGURES)):
        into = row(counted["model_version_id"])
        into.replies, into.grounded_replies = counted["replies"], counted["grounded"]
        into.grounded_share = _share(counted["grounded"], counted["replies"])
    feedback = Feedback.objects.filter(message__in=replies.values("pk")).order_by()
    for counted in _grouped(feedback.values("message__model_version_id", "source").annotate(**FEEDBACK_FIGURES)):
        into = row(counted["message__model_version_id"])
        setattr(into, f"{counted['source']}_up", counted["up"])
        setattr(into, f"{counted['source']}_down", counted["down"])
    latencies: dict[int | None, list[float]] = defaultdict(list)
    timed = replies.filter(first_token_at__isnull=False).annotate(latency=Seconds("first_token_at", "created_at"))
    for version_id, latency in timed.values_list("model_version_id", "latency"):
        latencies[version_id].append(latency)
    for version_id, values in latencies.items():
        into = row(version_id)
        into.first_token_median_s, into.first_token_p90_s = percentile(values, 0.5), percentile(values, 0.9)
    answered = conversations.filter(answered=True)  # the unanswered are no version's
    for counted in _grouped(answered.values("first_version").annotate(**CONVERSATION_FIGURES)):
        into = row(counted["first_version"])
        into.conversations, into.handed_off = counted["conversations"], counted["handed_off"]
        into.handoff_rate = _share(counted["handed_off"], counted["conversations"])
        into.csat_count = counted["csat_count"]
        into.csat_mean = _share(counted["csat_sum"] or 0, counted["csat_count"])
        into.csat_good_share = _share(counted["csat_good"], counted["csat_count"])
    for version in ModelVersion.objects.filter(id__in=[key for key in rows if key is not None]):
        rows[version.id].name, rows[version.id].status = version.name, version.status
    created = dict(ModelVersion.objects.filter(id__in=[key for key in rows if key]).values_list("id", "created_at"))
    oldest = datetime.min.replace(tzinfo=_tz())
    ordered = sorted(rows.items(), key=lambda item: created.get(item[0], oldest) if item[0] else oldest, reverse=True)
    return [version_row for _, version_row in ordered]


def agent_rows(params: ReportParams) -> list[AgentRow]:
    """Agents' replies in the range's conversations, most first."""
    ids = conversations_in(params).values("pk")
    counted = (
        Message.objects.filter(role=Message.Role.AGENT, conversation__in=ids)
        .order_by()
        .values("author_id")
        .annotate(replies=Count("pk"))
    )
    by_author = {row["author_id"]: row["replies"] for row in counted}
    from django.contrib.auth import get_user_model

    users = {user.pk: user for user in get_user_model().objects.filter(pk__in=[k for k in by_author if k])}
    rows = [
        AgentRow(
            agent=display_name(users[author]) if author in users else "(deleted user)",
            username=users[author].get_username() if author in users else "",
            replies=replies,
        )
        for author, replies in by_author.items()
    ]
    return sorted(rows, key=lambda r: (-r.replies, r.username))


def report(params: ReportParams) -> Report:
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The correlated subqueries make the planner's cost estimates large, so PostgreSQL
            # JIT-compiles each query: ~0.6 s of compiling for ~0.03 s of work on 100,000
            # conversations (bench/reports_bench.py). Off for this transaction only.
            cursor.execute("SET LOCAL jit = off")
        buckets, total = bucket_rows(params)
        return Report(
            params=params, buckets=buckets, total=total, versions=version_rows(params), agents=agent_rows(params)
        )
