"""A training run from start to end: claim it, build its dataset, train, evaluate, record. Resumable:
a run whose worker died is claimed again by another and takes up from its last checkpoint.

What is stored goes through services (each write under the run's lease); torch and the model are
imported only when a run executes, so the web side can import the tasks that call this module.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections
from django.utils import timezone

from . import conf, selectors, services
from .models import DatasetBuild, DatasetSnapshot, Example, ModelVersion, TrainingRun
from .services import LeaseLost

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from conversations.prompts import Reference

    from .datasets import BuildOptions
    from .evaluation import Contenders, Ground
    from .probes import FactProbe
    from .training import TrainingConfig, TrainResult

log = logging.getLogger(__name__)

Status = TrainingRun.Status
MAX_ATTEMPTS = 3


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_checkpoint_dir(run: TrainingRun) -> Path:
    return conf.checkpoints_dir() / f"run-{run.id}"


def version_name_for(run: TrainingRun) -> str:
    return f"run-{run.id}"


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
        try:
            return services.run_lease_renew(run_id=self.run_id, owner=self.owner)
        except DatabaseError:
            # A database blip: two thirds of the lease are left to try again; the progress writes
            # of the training thread renew it too.
            log.warning("run %s: could not renew the lease", self.run_id, exc_info=True)
            connections.close_all()
            return True


def run_execute(*, run_id: int, owner: str | None = None) -> TrainingRun | None:
    """Build, train, evaluate: the whole run, resumable. What the Celery task calls."""
    owner = owner or default_owner()
    run = services.run_claim(run_id=run_id, owner=owner)
    if run is None:
        return None
    if run.attempts > MAX_ATTEMPTS:
        services.run_finish(run=run, owner=owner, status=Status.FAILED, error=f"gave up after {MAX_ATTEMPTS} attempts")
        return TrainingRun.objects.get(id=run_id)
    from .training import Cancelled, CheckpointUnusable

    try:
        if run.cancel_requested:
            raise Cancelled()
        with LeaseKeeper(run.id, owner) as keeper:
            _pipeline(run, owner, keeper)
    except Cancelled:
        services.run_finish(run=run, owner=owner, status=Status.CANCELLED)
        shutil.rmtree(run_checkpoint_dir(run), ignore_errors=True)
    except LeaseLost:
        log.warning("run %s: lease lost, leaving it to its new owner", run_id)
    except CheckpointUnusable as error:
        services.run_finish(run=run, owner=owner, status=Status.FAILED, error=f"could not resume: {error}")
    except Exception as error:
        log.exception("training run %s failed", run_id)
        services.run_finish(run=run, owner=owner, status=Status.FAILED, error=f"{type(error).__name__}: {error}"[:2000])
    return TrainingRun.objects.get(id=run_id)


def _pipeline(run: TrainingRun, owner: str, keeper: LeaseKeeper) -> None:
    from . import datasets, training
    from .base import base_model_path, load_tokenizer

    name = version_name_for(run)
    done = ModelVersion.objects.filter(name=name).first()
    if done is not None:
        # An earlier attempt finished and died before saying so: its version may serve already.
        # It is never trained again, reset to candidate nor written into.
        services.run_finish(run=run, owner=owner, status=Status.SUCCEEDED, version=done)
        return
    config = training.TrainingConfig.from_dict(training_defaults() | run.config)
    model_path = base_model_path()
    tokenizer = load_tokenizer(model_path)
    options = datasets.options_from_settings(max_seq_len=config.max_seq_len)
    if run.snapshot_id is None:
        _snapshot_for(run, owner, keeper, model_path=model_path, tokenizer=tokenizer, options=options)
    assert run.snapshot is not None
    result = _train(run, owner, keeper, model_path=model_path, tokenizer=tokenizer, config=config, name=name)
    run.loss_history = result.loss_history
    try:
        services.run_update(run=run, owner=owner, phase="evaluating", loss_history=result.loss_history, eta_s=0)
        version = ModelVersion(
            name=name, base_model=model_path, adapter_path=str(result.adapter_path), snapshot=run.snapshot
        )
        version.metrics = _metrics(version, result, tokenizer=tokenizer, config=config, options=options)
        keeper.check()
        services.run_succeed(run=run, owner=owner, version=version)
    except BaseException:
        shutil.rmtree(result.adapter_path, ignore_errors=True)  # no version points at it
        raise
    shutil.rmtree(run_checkpoint_dir(run), ignore_errors=True)


def training_defaults() -> dict[str, Any]:
    """The settings' part of a run's config; what the run was started with overrides them."""
    return {"dpo_steps": conf.dpo_steps(), "dpo_beta": conf.dpo_beta(), "dpo_sft_weight": conf.dpo_sft_weight()}


def _snapshot_for(
    run: TrainingRun,
    owner: str,
    keeper: LeaseKeeper,
    *,
    model_path: str,
    tokenizer: PreTrainedTokenizerBase,
    options: BuildOptions,
) -> None:
    services.run_update(run=run, owner=owner, phase="building")
    run.snapshot = _snapshot_build(model_path=model_path, tokenizer=tokenizer, options=options, check=keeper.check)
    keeper.check()
    services.run_update(run=run, owner=owner, snapshot=run.snapshot)


# Told each phase of a dataset build as it begins (a key of DatasetBuild.PHASES).
OnPhase = Callable[[str], None]


def _snapshot_build(
    *,
    model_path: str,
    tokenizer: PreTrainedTokenizerBase,
    options: BuildOptions,
    check: Callable[[], None],
    on_phase: OnPhase | None = None,
) -> DatasetSnapshot:
    """The base model's general replies (``check`` once they are made: the slow part), then the
    snapshot of conversations they are mixed into, with the base model's rewordings of the
    corrected questions. The model is loaded once, and only when a cache misses."""
    from . import datasets
    from .base import load_model

    phase = on_phase or (lambda _: None)

    loaded: list[Any] = []

    def load() -> Any:
        if not loaded:
            loaded.append(load_model(model_path))
        return loaded[0]

    phase("general")
    general = datasets.general_replies(
        model_path=model_path,
        tokenizer=tokenizer,
        system_prompt=options.system_prompt,
        count=options.general_examples,
        load=load,
    )
    check()
    phase("examples")
    rephrase = datasets.model_rephrase(
        model_path=model_path, tokenizer=tokenizer, per_question=options.paraphrases, load=load, seed=options.seed
    )

    def checked(questions: Sequence[str]) -> list[list[str]]:
        drafts = rephrase(questions)
        check()
        return drafts

    return datasets.snapshot_build(tokenizer=tokenizer, options=options, general_replies=general, rephrase=checked)


def _train(
    run: TrainingRun,
    owner: str,
    keeper: LeaseKeeper,
    *,
    model_path: str,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainingConfig,
    name: str,
) -> TrainResult:
    """Train an adapter on the snapshot's training split (its stored pairs for the preference
    steps), storing progress after every step."""
    from . import datasets, training
    from .base import load_model

    snapshot = run.snapshot
    assert snapshot is not None
    train = snapshot.examples.filter(split=Example.Split.TRAIN)
    train_rows = list(train.values_list("prompt", "completion"))
    preferences = datasets.preference_triples(
        train.exclude(rejected="").values_list("prompt", "completion", "reply", "rejected"), tokenizer
    )
    if not snapshot.examples.filter(split=Example.Split.TRAIN).exclude(source=Example.Source.GENERAL).exists():
        raise training.TrainingDataEmpty("the snapshot holds no examples from conversations to learn from")

    services.run_update(run=run, owner=owner, phase="training")

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
        services.run_update(
            run=run,
            owner=owner,
            step=progress.step,
            total_steps=progress.total_steps,
            loss_history=history,
            tokens_per_s=round(progress.tokens_per_s, 1),
            eta_s=round(progress.eta_s, 1),
        )

    def on_resume(step: int, history: list[list[float]]) -> None:
        # Steps after the checkpoint were lost with the worker that ran them: they run again.
        run.loss_history = history
        services.run_update(run=run, owner=owner, resumed_from_step=step, step=step, loss_history=history)

    def should_cancel() -> bool:
        keeper.check()  # a lost lease stops training as LeaseLost, never as a cancel that cleans up
        return selectors.run_cancel_requested(run.id)

    # A folder of its own for every attempt: an adapter, once written, is never written into again.
    return training.train(
        model=load_model(model_path),
        tokenizer=tokenizer,
        pairs=train_rows,
        preferences=preferences,
        output_dir=conf.adapters_dir() / f"{name}-{uuid.uuid4().hex[:8]}",
        checkpoint_dir=run_checkpoint_dir(run),
        config=config,
        on_progress=on_progress,
        should_cancel=should_cancel,
        on_resume=on_resume,
    )


def _metrics(
    version: ModelVersion,
    result: TrainResult,
    *,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainingConfig,
    options: BuildOptions,
) -> dict[str, Any]:
    """The version's evaluation, with how its training went."""
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
    return metrics


def version_evaluate(
    *, version: ModelVersion, tokenizer: PreTrainedTokenizerBase, config: TrainingConfig, options: BuildOptions
) -> dict[str, Any]:
    """Evaluate ``version`` against the version in service on its snapshot's held-out examples
    and on probes: paraphrases of the facts it was taught, and unrelated prompts."""
    from . import evaluation, probes
    from .base import load_model

    snapshot = version.snapshot
    assert snapshot is not None
    heldout = [
        evaluation.HeldOut(e.prompt, e.completion, e.reply, e.source, _last_question(e.chat))
        for e in snapshot.examples.filter(split=Example.Split.HELDOUT)
    ]
    taught_replies = list(snapshot.examples.exclude(source=Example.Source.GENERAL).values_list("reply", flat=True))
    general = list(snapshot.examples.filter(source=Example.Source.GENERAL).values_list("reply", flat=True))
    taught = probes.taught_terms(taught_replies, general)
    active = selectors.version_active()
    active_path = active.adapter_path if active is not None and active.id != version.id else None
    contenders = evaluation.Contenders(load_model(version.base_model), version.adapter_path, active_path or None)
    metrics = evaluation.evaluate(
        contenders=contenders,
        tokenizer=tokenizer,
        heldout=heldout,
        taught=taught,
        probes=_fact_probes(snapshot, contenders, tokenizer, taught),
        unrelated=probes.UNRELATED[: conf.probe_unrelated() or None],
        system_prompt=options.system_prompt,
        max_seq_len=config.max_seq_len,
        max_new_tokens=conf.eval_max_new_tokens(),
        max_replays=conf.eval_max_replays(),
        min_examples=conf.check_min_examples(),
        ground=_knowledge_ground(),
    )
    metrics["compared_with"] = active.name if active is not None and active.id != version.id else "base model"
    return metrics


def _knowledge_ground() -> Ground | None:
    """How the worker grounds a question on the knowledge served now; None when none is, and the
    probes run without knowledge only."""
    from conversations.knowledge import retrieval

    index = retrieval.current()
    if not index.entries:
        return None

    def ground(question: str) -> tuple[list[Reference], str]:
        grounding = retrieval.ground_text(index, question)
        return grounding.references, retrieval.lead_for(grounding)

    return ground


def _fact_probes(
    snapshot: DatasetSnapshot, contenders: Contenders, tokenizer: PreTrainedTokenizerBase, taught: set[str]
) -> list[FactProbe]:
    """Each trained correction's question, reworded by the base model in words no training example used."""
    from . import paraphrases, probes

    train = snapshot.examples.filter(split=Example.Split.TRAIN)
    facts = [
        probes.TaughtFact(_last_question(e.chat), e.reply, e.conversation_id)
        for e in train.filter(source=Example.Source.CORRECTION)[: conf.probe_max_facts()]
    ]
    trained = {paraphrases.normalised(_last_question(chat)) for chat in train.values_list("chat", flat=True)}
    with contenders.bare() as model:
        reworded = paraphrases.paraphrases(
            model,
            tokenizer,
            [fact.question for fact in facts],
            trained=trained,
            per_question=conf.probe_paraphrases(),
            minimum=conf.probe_min_similarity(),
        )
    return probes.fact_probes(facts, reworded, taught)


def _last_question(chat: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")


def snapshot_build_now(on_phase: OnPhase | None = None) -> DatasetSnapshot:
    """A snapshot built in this process, for the admin to browse before training."""
    from . import datasets
    from .base import base_model_path, load_tokenizer

    phase = on_phase or (lambda _: None)
    phase("tokenizer")
    model_path = base_model_path()
    return _snapshot_build(
        model_path=model_path,
        tokenizer=load_tokenizer(model_path),
        options=datasets.options_from_settings(),
        check=lambda: None,
        on_phase=on_phase,
    )


# Builds a snapshot, telling each phase as it begins: snapshot_build_now, or a test's own.
Builder = Callable[[OnPhase], DatasetSnapshot]


def build_execute(*, build_id: int, builder: Builder = snapshot_build_now) -> DatasetBuild | None:
    """A dataset build from its click to its snapshot: what the Celery task calls. None when the
    build is not queued (a second copy of its message, or a build failed as lost meanwhile)."""
    build = services.build_claim(build_id=build_id)
    if build is None:
        return None
    order = list(DatasetBuild.PHASES)

    def on_phase(phase: str) -> None:
        services.build_phase(build=build, phase=phase, done=order.index(phase))

    try:
        snapshot = builder(on_phase)
    except Exception as error:
        log.exception("dataset build %s failed", build_id)
        services.build_fail(build=build, error=f"{type(error).__name__}: {error}")
    else:
        services.build_ready(build=build, snapshot=snapshot, phases=len(order))
    return DatasetBuild.objects.get(id=build_id)
