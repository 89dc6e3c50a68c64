"""Writes of the learning loop: start, run, cancel a training run; promote and roll back versions."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import conf, events
from .models import DatasetSnapshot, Example, LoopLock, ModelVersion, Promotion, TrainingRun
from .selectors import version_active

log = logging.getLogger(__name__)

Status = TrainingRun.Status
MAX_ATTEMPTS = 3


class LearningLoopError(Exception):
    pass


class RunAlreadyActive(LearningLoopError):
    def __init__(self, run: TrainingRun) -> None:
        super().__init__(f"training run {run.pk} is already {run.status}")
        self.run = run


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


# What callers name as the version they expect to replace when none serves.
BASE = "base"


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_start(
    *,
    requested_by: Any = None,
    config: dict[str, Any] | None = None,
    snapshot: DatasetSnapshot | None = None,
    enqueue: bool = True,
) -> TrainingRun:
    """A queued run (on ``snapshot``, or on a fresh build); its Celery message goes out after the commit."""
    from . import tasks

    with transaction.atomic():
        _lock("runs")
        busy = TrainingRun.objects.select_for_update().filter(status__in=TrainingRun.ACTIVE_STATUSES).first()
        if busy is not None:
            raise RunAlreadyActive(busy)
        run = TrainingRun.objects.create(config=config or {}, requested_by=requested_by, snapshot=snapshot)
        if enqueue:
            tasks.training_run.delay_on_commit(run.id)
    return run


def run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run stops at once; a running one at its next cancel check, within the step."""
    TrainingRun.objects.filter(id=run.id, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    TrainingRun.objects.filter(id=run.id, status=Status.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    events.run_changed(run.id)
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
        lease_expires_at=now + timedelta(seconds=conf.lease_seconds()),
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
    events.run_changed(run_id)
    return run


def _guarded(run: TrainingRun, owner: str, **fields: Any) -> None:
    """Update the run only while this worker still holds its lease, renewing the lease."""
    fields["lease_expires_at"] = timezone.now() + timedelta(seconds=conf.lease_seconds())
    if not TrainingRun.objects.filter(id=run.id, lease_owner=owner).update(**fields):
        raise LeaseLost(f"run {run.id} is no longer leased to {owner}")
    events.run_changed(run.id)


def _finish(run: TrainingRun, owner: str, status: str, **fields: Any) -> None:
    TrainingRun.objects.filter(id=run.id, lease_owner=owner).update(
        status=status, finished_at=timezone.now(), lease_expires_at=None, phase="", **fields
    )
    events.run_changed(run.id)


def _cancel_requested(run_id: int) -> bool:
    return bool(TrainingRun.objects.filter(id=run_id).values_list("cancel_requested", flat=True).first())


class LeaseKeeper:
    """Renews a run's lease from a thread of its own every third of the lease, so it holds while a
    dataset is built or a version evaluated (long stretches with no progress write). Once a renewal
    finds the lease gone, ``check`` raises LeaseLost: the run stops before writing anything."""

    def __init__(self, run_id: int, owner: str) -> None:
        self.run_id, self.owner = run_id, owner
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-keeper-{run_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"run {self.run_id} is no longer leased to {self.owner}")

    def _keep(self) -> None:
        try:
            while not self._stop.wait(max(0.5, conf.lease_seconds() / 3)):
                if not self._renew():
                    self.lost = True
                    log.warning("run %s: lease lost by %s", self.run_id, self.owner)
                    return
        finally:
            connections.close_all()  # this thread's own connections only

    def _renew(self) -> bool:
        expires = timezone.now() + timedelta(seconds=conf.lease_seconds())
        try:
            held = TrainingRun.objects.filter(id=self.run_id, lease_owner=self.owner, status=Status.RUNNING)
            return bool(held.update(lease_expires_at=expires))
        except DatabaseError:
            # A database blip: two thirds of the lease are left to try again; the progress writes
            # of the training thread renew it too.
            log.warning("run %s: could not renew the lease", self.run_id, exc_info=True)
            connections.close_all()
            return True


def run_execute(*, run_id: int, owner: str | None = None) -> TrainingRun | None:
    """Build, train, evaluate: the whole run, resumable. What the Celery task calls."""
    owner = owner or default_owner()
    run = run_claim(run_id=run_id, owner=owner)
    if run is None:
        return None
    if run.attempts > MAX_ATTEMPTS:
        _finish(run, owner, Status.FAILED, error=f"gave up after {MAX_ATTEMPTS} attempts")
        return TrainingRun.objects.get(id=run_id)
    from .training import Cancelled, CheckpointUnusable

    try:
        if run.cancel_requested:
            raise Cancelled()
        with LeaseKeeper(run.id, owner) as keeper:
            _pipeline(run, owner, keeper)
    except Cancelled:
        _finish(run, owner, Status.CANCELLED)
        shutil.rmtree(run_checkpoint_dir(run), ignore_errors=True)
    except LeaseLost:
        log.warning("run %s: lease lost, leaving it to its new owner", run_id)
    except CheckpointUnusable as error:
        _finish(run, owner, Status.FAILED, error=f"could not resume: {error}")
    except Exception as error:
        log.exception("training run %s failed", run_id)
        _finish(run, owner, Status.FAILED, error=f"{type(error).__name__}: {error}"[:2000])
    return TrainingRun.objects.get(id=run_id)


def run_checkpoint_dir(run: TrainingRun) -> Any:
    return conf.checkpoints_dir() / f"run-{run.id}"


def version_name_for(run: TrainingRun) -> str:
    return f"run-{run.id}"


def _pipeline(run: TrainingRun, owner: str, keeper: LeaseKeeper) -> None:
    from . import datasets, training
    from .base import base_model_path, load_model, load_tokenizer

    name = version_name_for(run)
    done = ModelVersion.objects.filter(name=name).first()
    if done is not None:
        # An earlier attempt finished and died before saying so: its version may serve already.
        # It is never trained again, reset to candidate nor written into.
        _finish(run, owner, Status.SUCCEEDED, version=done)
        return
    config = training.TrainingConfig.from_dict(run.config)
    model_path = base_model_path()
    tokenizer = load_tokenizer(model_path)
    options = datasets.options_from_settings(max_seq_len=config.max_seq_len)

    if run.snapshot_id is None:
        _guarded(run, owner, phase="building")
        general = datasets.general_replies(
            model_path=model_path,
            tokenizer=tokenizer,
            system_prompt=options.system_prompt,
            count=options.general_examples,
        )
        keeper.check()
        run.snapshot = datasets.snapshot_build(tokenizer=tokenizer, options=options, general_replies=general)
        keeper.check()
        _guarded(run, owner, snapshot=run.snapshot)
    snapshot = run.snapshot
    assert snapshot is not None
    train_rows = list(snapshot.examples.filter(split=Example.Split.TRAIN).values_list("prompt", "completion"))
    if not snapshot.examples.filter(split=Example.Split.TRAIN).exclude(source=Example.Source.GENERAL).exists():
        raise training.TrainingDataEmpty("the snapshot holds no examples from conversations to learn from")

    _guarded(run, owner, phase="training")

    def on_progress(progress: training.Progress) -> None:
        log.info(
            "run %s step %d/%d loss %.3f %.0f tokens/s",
            run.id,
            progress.step,
            progress.total_steps,
            progress.loss,
            progress.tokens_per_s,
        )
        history = list(run.loss_history) + [[progress.step, progress.loss]]
        run.loss_history = history
        _guarded(
            run,
            owner,
            step=progress.step,
            total_steps=progress.total_steps,
            loss_history=history,
            tokens_per_s=round(progress.tokens_per_s, 1),
            eta_s=round(progress.eta_s, 1),
        )

    def on_resume(step: int, history: list[list[float]]) -> None:
        # Steps after the checkpoint were lost with the worker that ran them: they run again.
        run.loss_history = history
        _guarded(run, owner, resumed_from_step=step, step=step, loss_history=history)

    def should_cancel() -> bool:
        keeper.check()  # a lost lease stops training as LeaseLost, never as a cancel that cleans up
        return _cancel_requested(run.id)

    # A folder of its own for every attempt: an adapter, once written, is never written into again.
    result = training.train(
        model=load_model(model_path),
        tokenizer=tokenizer,
        pairs=train_rows,
        output_dir=conf.adapters_dir() / f"{name}-{uuid.uuid4().hex[:8]}",
        checkpoint_dir=run_checkpoint_dir(run),
        config=config,
        on_progress=on_progress,
        should_cancel=should_cancel,
        on_resume=on_resume,
    )
    run.loss_history = result.loss_history
    try:
        _guarded(run, owner, phase="evaluating", loss_history=result.loss_history, eta_s=0)
        _evaluate_and_record(
            run,
            owner,
            keeper,
            result,
            name=name,
            model_path=model_path,
            tokenizer=tokenizer,
            config=config,
            options=options,
        )
    except BaseException:
        shutil.rmtree(result.adapter_path, ignore_errors=True)  # no version points at it
        raise
    shutil.rmtree(run_checkpoint_dir(run), ignore_errors=True)


def _evaluate_and_record(
    run: TrainingRun,
    owner: str,
    keeper: LeaseKeeper,
    result: Any,
    *,
    name: str,
    model_path: str,
    tokenizer: Any,
    config: Any,
    options: Any,
) -> None:
    """Evaluate, then create the version and finish the run in one transaction: a version row
    exists only once its evaluation succeeded, so a failed evaluation leaves nothing to promote."""
    snapshot = run.snapshot
    version = ModelVersion(name=name, base_model=model_path, adapter_path=str(result.adapter_path), snapshot=snapshot)
    metrics = version_evaluate(version=version, tokenizer=tokenizer, config=config, options=options)
    metrics["training"] = {
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "resumed_from_step": result.resumed_from_step,
        "final_loss": result.loss_history[-1][1] if result.loss_history else None,
        "config": config.to_dict(),
    }
    metrics["evaluated_at"] = timezone.now().isoformat()
    keeper.check()
    with transaction.atomic():
        if not TrainingRun.objects.select_for_update().filter(id=run.id, lease_owner=owner).exists():
            raise LeaseLost(f"run {run.id} is no longer leased to {owner}")
        version.metrics = metrics
        version.trained_on_erased_data = _erasures_since(snapshot, run.started_at)
        version.save(force_insert=True)
        TrainingRun.objects.filter(id=run.id).update(
            status=Status.SUCCEEDED, finished_at=timezone.now(), lease_expires_at=None, phase="", version=version
        )
    events.run_changed(run.id)


def _erasures_since(snapshot: DatasetSnapshot | None, started_at: datetime | None) -> list[dict[str, Any]]:
    """Erasures of the snapshot's examples since the run began: it may have trained on them
    (earlier ones were gone before it read the snapshot)."""
    if snapshot is None:
        return []
    erasures = DatasetSnapshot.objects.filter(id=snapshot.id).values_list("erasures", flat=True).first() or []
    since = started_at or timezone.now()
    return [{**note, "snapshot": snapshot.id} for note in erasures if datetime.fromisoformat(note["at"]) >= since]


def version_evaluate(*, version: ModelVersion, tokenizer: Any, config: Any, options: Any) -> dict[str, Any]:
    """Evaluate ``version`` against the version in service on its snapshot's held-out examples."""
    from . import conf as settings_of
    from . import evaluation
    from .base import load_model

    snapshot = version.snapshot
    assert snapshot is not None
    heldout = [
        evaluation.HeldOut(e.prompt, e.completion, e.reply, e.source, _last_question(e.chat))
        for e in snapshot.examples.filter(split=Example.Split.HELDOUT)
    ]
    taught_replies = list(snapshot.examples.exclude(source=Example.Source.GENERAL).values_list("reply", flat=True))
    general = list(snapshot.examples.filter(source=Example.Source.GENERAL).values_list("reply", flat=True))
    active = version_active()
    active_path = active.adapter_path if active is not None and active.id != version.id else None
    contenders = evaluation.Contenders(load_model(version.base_model), version.adapter_path, active_path or None)
    metrics = evaluation.evaluate(
        contenders=contenders,
        tokenizer=tokenizer,
        heldout=heldout,
        taught=evaluation.taught_terms(taught_replies, general),
        system_prompt=options.system_prompt,
        max_seq_len=config.max_seq_len,
        max_new_tokens=settings_of.eval_max_new_tokens(),
        max_replays=settings_of.eval_max_replays(),
    )
    metrics["compared_with"] = active.name if active is not None and active.id != version.id else "base model"
    return metrics


def _last_question(chat: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")


def runs_resume_stale() -> list[int]:
    """Re-publish runs whose worker died (lease expired), and queued runs nobody took within a
    lease (their message lost with a Redis restart): the broker may take an hour to redeliver.

    Each one's lease passes to nobody (owner "") for one lease length: the first worker to get a
    message claims it at once, and sweeps in between leave it alone. A duplicate message is
    harmless: it finds the lease held and comes back later, or the run finished."""
    from . import tasks

    now = timezone.now()
    lease = timedelta(seconds=conf.lease_seconds())
    stale = Q(status=Status.RUNNING, lease_expires_at__lt=now) | Q(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now), status=Status.QUEUED, created_at__lt=now - lease
    )
    requeued = []
    for run_id in TrainingRun.objects.filter(stale).values_list("id", flat=True):
        if TrainingRun.objects.filter(stale, id=run_id).update(lease_owner="", lease_expires_at=now + lease):
            tasks.training_run.delay(run_id)
            requeued.append(run_id)
    return requeued


def _promotion_stack() -> list[ModelVersion | None]:
    """The versions that served in turn: a promote pushes, a rollback pops."""
    stack: list[ModelVersion | None] = []
    for event in Promotion.objects.select_related("version"):
        if event.kind == Promotion.Kind.PROMOTE:
            stack.append(event.version)
        elif stack:
            stack.pop()
    return stack


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
    ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).exclude(id=version.id if version else None).update(
        status=ModelVersion.Status.RETIRED
    )
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


def version_is_evaluated(version: ModelVersion) -> bool:
    return "checks" in (version.metrics or {})


def version_promote(*, version: ModelVersion, expected: str | None = None, actor: Any = None) -> ModelVersion:
    """Make ``version`` the one new replies use; the inference worker loads its adapter on first use.

    ``expected``: the version the caller means to replace (``BASE`` for none); when another serves
    by now, VersionChanged and nothing changes. None: whatever serves (a person at a terminal).
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
        if not version_is_evaluated(version):
            raise LearningLoopError(f"{version.name} was never evaluated, so it cannot be promoted")
        _activate(version)
        Promotion.objects.create(kind=Promotion.Kind.PROMOTE, version=version, actor=actor)
    return version


def version_rollback(*, expected: str | None = None, actor: Any = None) -> ModelVersion | None:
    """Back to the version that served before the current one; None means the bare base model.

    ``expected`` as for promote: a second click of the same page finds its version already gone
    and changes nothing, so a double click goes back one version only."""
    with _one_at_a_time():
        current = version_active()
        _expect(current, expected)
        stack = _promotion_stack()
        if current is None and not stack:
            raise NothingToRollBack("the base model is already serving and there is nothing earlier")
        if stack:
            stack.pop()
        previous = stack[-1] if stack else None
        _activate(previous)
        Promotion.objects.create(kind=Promotion.Kind.ROLLBACK, version=previous, actor=actor)
    return previous


def snapshot_build_now() -> DatasetSnapshot:
    """A snapshot built in this process, for the admin to browse before training."""
    from . import datasets
    from .base import base_model_path, load_tokenizer

    model_path = base_model_path()
    tokenizer = load_tokenizer(model_path)
    options = datasets.options_from_settings()
    general = datasets.general_replies(
        model_path=model_path, tokenizer=tokenizer, system_prompt=options.system_prompt, count=options.general_examples
    )
    return datasets.snapshot_build(tokenizer=tokenizer, options=options, general_replies=general)


def version_mark_unservable(*, name: str, error: str) -> None:
    """An inference worker could not load this version's adapter: say why on its page; replies
    that ask for it fail with that reason until it is promoted again (which clears the mark)."""
    updated = ModelVersion.objects.filter(name=name).update(serve_error=error[:2000])
    if updated:
        log.warning("version %s marked unservable: %s", name, error)
