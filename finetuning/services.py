"""Writes of the learning loop: start, claim, update, finish and cancel a training run; promote and
roll back versions. What a run does between its writes is finetuning/pipeline.py.

Each write that changes a run pushes the run to its pages once the write commits (events.run_changed)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import conf, events
from .models import DatasetBuild, DatasetSnapshot, LoopLock, ModelVersion, Promotion, TrainingRun
from .selectors import LOST_BUILD, build_stale_before, rollback_target, version_active

log = logging.getLogger(__name__)

Status = TrainingRun.Status


class LearningLoopError(Exception):
    pass


class RunAlreadyActive(LearningLoopError):
    def __init__(self, run: TrainingRun) -> None:
        super().__init__(f"training run {run.pk} is already {run.status}")
        self.run = run


class BuildAlreadyActive(LearningLoopError):
    def __init__(self, build: DatasetBuild) -> None:
        super().__init__(
            f"a dataset is already being built (build {build.pk}, {build.status}, asked for at "
            f"{timezone.localtime(build.created_at):%H:%M}); this click started no second build"
        )
        self.build = build


class LeaseHeld(LearningLoopError):
    """Another worker holds the run's lease; try again once it may have expired."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"lease held, retry in {retry_in_s:.0f}s")
        self.retry_in_s = retry_in_s


class LeaseLost(LearningLoopError):
    """This worker's lease was taken over (it stalled past its expiry): stop without writing."""


class NothingToRollBack(LearningLoopError):
    pass


class VersionChanged(LearningLoopError):
    """The version serving is not the one the caller meant to replace (a double click, or two
    people at once): nothing was changed."""

    def __init__(self, *, serving: str, expected: str) -> None:
        super().__init__(
            f"{serving} is serving now, not {expected}: it changed since the page was drawn, so nothing "
            "was changed; look again and retry if you still mean it"
        )
        self.serving = serving
        self.expected = expected


class GateRefused(LearningLoopError):
    """The version's checks failed or did not run: it serves only if an admin forces it with a reason."""

    def __init__(self, *, version: str, refused: list[str]) -> None:
        super().__init__(
            f"{version} did not pass its checks ({', '.join(refused)}), so it was not promoted; an admin can "
            "force it with a written reason"
        )
        self.refused = refused


# What callers name as the version they expect to replace when none serves.
BASE = "base"
# The gate's name for a version without checks: never evaluated, or evaluated before checks existed.
NOT_EVALUATED = "not evaluated"


# Sends a run's id to the worker that will run it (``tasks.training_run.delay_on_commit``); passed
# in by the caller, so that this module never imports the tasks that import it.
Enqueue = Callable[[int], object]


def run_start(
    *,
    requested_by: User | None = None,
    config: dict[str, Any] | None = None,
    snapshot: DatasetSnapshot | None = None,
    enqueue: Enqueue | None = None,
) -> TrainingRun:
    """A queued run (on ``snapshot``, or on a fresh build), handed to ``enqueue`` inside the
    transaction; None leaves it for the caller to run here."""
    with transaction.atomic():
        _lock("runs")
        busy = TrainingRun.objects.select_for_update().filter(status__in=TrainingRun.ACTIVE_STATUSES).first()
        if busy is not None:
            raise RunAlreadyActive(busy)
        run = TrainingRun.objects.create(config=config or {}, requested_by=requested_by, snapshot=snapshot)
        if enqueue is not None:
            enqueue(run.id)
    return run


def run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run stops at once; a running one at its next cancel check, within the step."""
    TrainingRun.objects.filter(id=run.id, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    TrainingRun.objects.filter(id=run.id, status=Status.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    _announce(run.id)
    return run


def run_claim(*, run_id: int, owner: str) -> TrainingRun | None:
    """Take the run's lease. None when the run is over; LeaseHeld when another live worker has it."""
    now = timezone.now()
    # An empty owner is a run the sweep re-queued: free for the first worker that takes it.
    claimable = (
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now) | Q(lease_owner=owner) | Q(lease_owner="")
    )
    claimed = TrainingRun.objects.filter(claimable, id=run_id, status__in=TrainingRun.ACTIVE_STATUSES).update(
        status=Status.RUNNING,
        lease_owner=owner,
        lease_expires_at=_lease_end(),
        attempts=F("attempts") + 1,
    )
    run = TrainingRun.objects.filter(id=run_id).first()
    if run is None or run.status not in TrainingRun.ACTIVE_STATUSES:
        return None
    if not claimed:
        assert run.lease_expires_at is not None
        raise LeaseHeld(max(1.0, (run.lease_expires_at - now).total_seconds()))
    if run.started_at is None:
        TrainingRun.objects.filter(id=run_id).update(started_at=now)
    _announce(run_id)
    return run


def run_update(*, run: TrainingRun, owner: str, **fields: Any) -> None:
    """Update the run only while this worker still holds its lease, renewing the lease."""
    if not TrainingRun.objects.filter(id=run.id, lease_owner=owner).update(lease_expires_at=_lease_end(), **fields):
        raise LeaseLost(f"run {run.id} is no longer leased to {owner}")
    _announce(run.id)


def run_lease_renew(*, run_id: int, owner: str) -> bool:
    """Extend a running run's lease; False once another worker holds it (or the run ended)."""
    held = TrainingRun.objects.filter(id=run_id, lease_owner=owner, status=Status.RUNNING)
    return bool(held.update(lease_expires_at=_lease_end()))


def run_finish(*, run: TrainingRun, owner: str, status: str, **fields: Any) -> None:
    TrainingRun.objects.filter(id=run.id, lease_owner=owner).update(
        status=status, finished_at=timezone.now(), lease_expires_at=None, phase="", **fields
    )
    _announce(run.id)


def run_succeed(*, run: TrainingRun, owner: str, version: ModelVersion) -> None:
    """Create the evaluated version and finish the run in one transaction: a version row exists only
    once its evaluation succeeded, so a failed evaluation leaves nothing to promote."""
    with transaction.atomic():
        if not TrainingRun.objects.select_for_update().filter(id=run.id, lease_owner=owner).exists():
            raise LeaseLost(f"run {run.id} is no longer leased to {owner}")
        version.trained_on_erased_data = _erasures_since(run.snapshot, run.started_at)
        version.save(force_insert=True)
        TrainingRun.objects.filter(id=run.id).update(
            status=Status.SUCCEEDED, finished_at=timezone.now(), lease_expires_at=None, phase="", version=version
        )
        _announce(run.id)


def build_start(*, requested_by: User | None = None, enqueue: Enqueue | None = None) -> DatasetBuild:
    """A queued dataset build, handed to ``enqueue`` inside the transaction; BuildAlreadyActive
    while another one is queued or building (two clicks, or two admins), after failing the builds
    whose worker was lost."""
    with transaction.atomic():
        _lock("builds")
        builds_fail_stale()
        busy = DatasetBuild.objects.filter(status__in=DatasetBuild.ACTIVE_STATUSES).first()
        if busy is not None:
            raise BuildAlreadyActive(busy)
        build = DatasetBuild.objects.create(requested_by=requested_by)
        if enqueue is not None:
            enqueue(build.id)
    return build


def build_claim(*, build_id: int) -> DatasetBuild | None:
    """Start a queued build; None when it is not queued (a second copy of its message, or a build
    already failed as lost): that message does nothing."""
    now = timezone.now()
    claimed = DatasetBuild.objects.filter(id=build_id, status=DatasetBuild.Status.QUEUED).update(
        status=DatasetBuild.Status.BUILDING, started_at=now, updated_at=now
    )
    return DatasetBuild.objects.get(id=build_id) if claimed else None


def build_phase(*, build: DatasetBuild, phase: str, done: int) -> None:
    """The builder moved on to ``phase``, having passed ``done`` of them."""
    DatasetBuild.objects.filter(id=build.id, status=DatasetBuild.Status.BUILDING).update(
        phase=phase, phases_done=done, updated_at=timezone.now()
    )


def build_ready(*, build: DatasetBuild, snapshot: DatasetSnapshot, phases: int) -> None:
    now = timezone.now()
    DatasetBuild.objects.filter(id=build.id).update(
        status=DatasetBuild.Status.READY,
        snapshot=snapshot,
        phase="",
        phases_done=phases,
        updated_at=now,
        finished_at=now,
    )


def build_fail(*, build: DatasetBuild, error: str) -> None:
    now = timezone.now()
    DatasetBuild.objects.filter(id=build.id).update(
        status=DatasetBuild.Status.FAILED, error=error[:2000], updated_at=now, finished_at=now
    )


def builds_fail_stale() -> int:
    """Fail the builds nobody has written for FINETUNING_BUILD_STALE_S: their worker died, or no
    worker ever took the message. Otherwise one lost build would refuse every later one."""
    now = timezone.now()
    error = LOST_BUILD.format(minutes=round(conf.build_stale_seconds() / 60))
    stale = DatasetBuild.objects.filter(status__in=DatasetBuild.ACTIVE_STATUSES, updated_at__lt=build_stale_before())
    return stale.update(status=DatasetBuild.Status.FAILED, error=error, updated_at=now, finished_at=now)


def _lease_end() -> datetime:
    return timezone.now() + timedelta(seconds=conf.lease_seconds())


def _announce(run_id: int) -> None:
    """Push the run once the write commits: before, a page could read a state that never lands."""
    transaction.on_commit(partial(events.run_changed, run_id))


def _erasures_since(snapshot: DatasetSnapshot | None, started_at: datetime | None) -> list[dict[str, Any]]:
    """Erasures of the snapshot's examples since the run began: it may have trained on them
    (earlier ones were gone before it read the snapshot)."""
    if snapshot is None:
        return []
    erasures = DatasetSnapshot.objects.filter(id=snapshot.id).values_list("erasures", flat=True).first() or []
    since = started_at or timezone.now()
    return [{**note, "snapshot": snapshot.id} for note in erasures if datetime.fromisoformat(note["at"]) >= since]


def runs_resume_stale(*, enqueue: Enqueue) -> list[int]:
    """Re-publish (through ``enqueue``) runs whose worker died (lease expired), and queued runs
    nobody took within a lease (their message lost with a Redis restart): the broker may take an
    hour to redeliver.

    Each one's lease passes to nobody (owner "") for one lease length: the first worker to get a
    message claims it at once, and sweeps in between leave it alone. A duplicate message is
    harmless: it finds the lease held and comes back later, or the run finished."""
    now = timezone.now()
    lease = timedelta(seconds=conf.lease_seconds())
    stale = Q(status=Status.RUNNING, lease_expires_at__lt=now) | Q(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now), status=Status.QUEUED, created_at__lt=now - lease
    )
    requeued = []
    for run_id in TrainingRun.objects.filter(stale).values_list("id", flat=True):
        if TrainingRun.objects.filter(stale, id=run_id).update(lease_owner="", lease_expires_at=now + lease):
            enqueue(run_id)
            requeued.append(run_id)
    return requeued


def _lock(name: str) -> None:
    """Inside a transaction: wait for every other holder of ``name`` to commit. On SQLite the
    transaction's write lock already serialises; this is for PostgreSQL."""
    LoopLock.objects.select_for_update().get_or_create(name=name)


def serving_name(version: ModelVersion | None) -> str:
    """What a page or a command names as the version it expects to replace."""
    return version.name if version is not None else BASE


def _expect(current: ModelVersion | None, expected: str | None) -> None:
    if expected is not None and serving_name(current) != expected:
        raise VersionChanged(serving=serving_name(current), expected=expected)


def _activate(version: ModelVersion | None) -> None:
    """Retire the version serving, then activate ``version``: in this order the database's "at most
    one active" constraint holds after every statement."""
    now = timezone.now()
    serving = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)
    if version is not None:
        serving = serving.exclude(id=version.id)
    serving.update(status=ModelVersion.Status.RETIRED)
    if version is not None:
        ModelVersion.objects.filter(id=version.id).update(
            status=ModelVersion.Status.ACTIVE, promoted_at=now, serve_error=""
        )
        version.refresh_from_db()


@contextmanager
def _one_at_a_time() -> Iterator[None]:
    """A transaction holding the versions lock; a constraint violation (a race the lock should
    have prevented) becomes a clear error and changes nothing."""
    try:
        with transaction.atomic():
            _lock("versions")
            yield
    except IntegrityError as error:
        raise LearningLoopError(
            "another promote or rollback changed the version in service at the same moment; nothing was "
            "changed here, look again and retry"
        ) from error


def version_refused_checks(version: ModelVersion) -> list[str]:
    """The checks that keep ``version`` from serving: each one not passed (failed, or resting on too
    few examples), or NOT_EVALUATED when none ran, since an empty list of checks proves nothing."""
    checks: dict[str, bool] = (version.metrics or {}).get("checks") or {}
    if not checks:
        return [NOT_EVALUATED]
    # Sorted: PostgreSQL's jsonb keeps no key order, so the stored order is no order to rely on.
    return sorted(name for name, passed in checks.items() if passed is not True)


def version_promote(
    *,
    version: ModelVersion,
    expected: str | None = None,
    actor: User | None = None,
    force: bool = False,
    reason: str = "",
) -> ModelVersion:
    """Make ``version`` the one new replies use; the inference worker loads its adapter on first use.

    ``expected``: the version the caller means to replace (``BASE`` for none); when another serves
    by now, VersionChanged and nothing changes. None: whatever serves (a person at a terminal).
    A version whose checks did not all pass is refused (GateRefused) unless ``force`` with a written
    ``reason`` from an admin (``actor`` None is a person at a terminal); the Promotion row keeps both.
    Promoting the version already serving changes nothing but clears its serve error."""
    with _one_at_a_time():
        version = ModelVersion.objects.get(id=version.id)
        current = version_active()
        if current is not None and current.id == version.id:
            ModelVersion.objects.filter(id=version.id).update(serve_error="")
            return version
        _expect(current, expected)
        if version.adapter_path and not os.path.isdir(version.adapter_path):
            raise LearningLoopError(f"the adapter of {version.name} is missing at {version.adapter_path}")
        refused = version_refused_checks(version)
        if refused:
            _gate_override(version=version, refused=refused, actor=actor, force=force, reason=reason)
        _activate(version)
        Promotion.objects.create(
            kind=Promotion.Kind.PROMOTE,
            version=version,
            actor=actor,
            forced=bool(refused),
            reason=reason.strip(),
            refused_checks=refused,
        )
    return version


def _gate_override(*, version: ModelVersion, refused: list[str], actor: User | None, force: bool, reason: str) -> None:
    """Let a refused version through only when an admin forces it and says why."""
    if not force:
        raise GateRefused(version=version.name, refused=refused)
    if actor is not None and not actor.is_superuser:
        raise LearningLoopError(f"only an admin can force {version.name} past its checks")
    if not reason.strip():
        raise LearningLoopError(f"forcing {version.name} past its checks needs a written reason")


def version_rollback(*, expected: str | None = None, actor: User | None = None) -> ModelVersion | None:
    """Back to the version that served before the current one; None means the bare base model.

    ``expected`` as for promote: a second click of the same page finds its version already gone
    and changes nothing, so a double click goes back one version only."""
    with _one_at_a_time():
        current = version_active()
        _expect(current, expected)
        target = rollback_target()
        if not target.possible:
            raise NothingToRollBack(target.reason)
        previous = target.version
        _activate(previous)
        Promotion.objects.create(kind=Promotion.Kind.ROLLBACK, version=previous, actor=actor)
    return previous


def version_mark_unservable(*, name: str, error: str) -> None:
    """An inference worker could not load this version's adapter: say why on its page; replies
    that ask for it fail with that reason until it is promoted again (which clears the mark)."""
    updated = ModelVersion.objects.filter(name=name).update(serve_error=error[:2000])
    if updated:
        log.warning("version %s marked unservable: %s", name, error)
