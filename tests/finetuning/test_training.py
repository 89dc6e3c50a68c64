from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from finetuning import pipeline, services
from finetuning.datasets import BuildOptions, snapshot_build
from finetuning.evaluation import CHECK_EXAMPLES
from finetuning.models import ModelVersion, TrainingRun
from finetuning.training import IGNORE, TrainingConfig, tokenize

from .conftest import chat, correct

ROOT = Path(__file__).resolve().parents[2]
TINY = {"epochs": 2, "batch_size": 2, "max_seq_len": 96, "checkpoint_every": 2, "rank": 4, "alpha": 8}


def test_the_loss_counts_only_the_reply_tokens(tokenizer: Any) -> None:
    [example] = tokenize(
        [("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "Hello!<|im_end|>\n")], tokenizer, 64
    )
    reply = [token for token in example.labels if token != IGNORE]
    assert tokenizer.decode(reply) == "Hello!<|im_end|>\n"
    assert example.labels[: len(example.labels) - len(reply)] == [IGNORE] * (len(example.labels) - len(reply))


def test_it_cuts_long_contexts_from_the_front(tokenizer: Any) -> None:
    [example] = tokenize([("word " * 200, "Short reply.")], tokenizer, 32)
    assert len(example.input_ids) == 32
    assert tokenizer.decode([t for t in example.labels if t != IGNORE]) == "Short reply."


def test_settings_round_trip_through_the_runs_json() -> None:
    config = TrainingConfig(rank=4, target_modules=("q_proj",))
    assert TrainingConfig.from_dict(config.to_dict() | {"unknown": 1}) == config


def tiny_run(customer: Any, tokenizer: Any, **config: Any) -> TrainingRun:
    """A run over a prebuilt snapshot of six short corrections: a few seconds per step on a CPU."""
    for number in range(6):
        _, bad = chat(customer, [("customer", f"Question {number}?"), ("bot", "No idea.")])
        correct(bad, f"The answer is {number}.")
    options = BuildOptions(system_prompt="Be brief.", max_seq_len=96, heldout_fraction=0.0, general_examples=0)
    snapshot = snapshot_build(tokenizer=tokenizer, options=options)
    run = services.run_start(config=TINY | config)
    TrainingRun.objects.filter(id=run.id).update(snapshot=snapshot)
    return run


@pytest.fixture
def fast_evaluation(settings: Any) -> None:
    settings.FINETUNING_EVAL_MAX_NEW_TOKENS = 2
    settings.FINETUNING_EVAL_MAX_REPLAYS = 1
    settings.FINETUNING_PROBE_MAX_FACTS = 1
    settings.FINETUNING_PROBE_PARAPHRASES = 1
    settings.FINETUNING_PROBE_UNRELATED = 2


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.model
@pytest.mark.django_db(transaction=True)
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(
    customer: Any, tokenizer: Any, torch_threads: None, fast_evaluation: None, tmp_path: Path
) -> None:
    run = tiny_run(customer, tokenizer)
    checkpoints = Path(settings.FINETUNING_CHECKPOINTS_DIR) / f"run-{run.id}"
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "chatbot.settings",
        "DATABASE_URL": database_url(),
        "ADAPTERS_DIR": str(settings.ADAPTERS_DIR),
        "FINETUNING_CHECKPOINTS_DIR": settings.FINETUNING_CHECKPOINTS_DIR,
        "OMP_NUM_THREADS": "1",
    }
    script = (
        "import django; django.setup(); from finetuning import pipeline; "
        f"pipeline.run_execute(run_id={run.id}, owner='doomed')"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # Kill it after a step beyond the checkpoint, so that step's work is lost and redone.
        while not (
            list(checkpoints.glob("step-*/state.json")) and TrainingRun.objects.filter(id=run.id, step__gte=3).exists()
        ):
            assert worker.poll() is None, "the worker ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within four minutes"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.lease_owner == "doomed"
    assert not (Path(settings.ADAPTERS_DIR) / f"run-{run.id}").exists()

    with pytest.raises(services.LeaseHeld):  # the dead worker's lease still stands: nobody doubles up
        pipeline.run_execute(run_id=run.id, owner="successor")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=run.created_at)

    run = pipeline.run_execute(run_id=run.id, owner="successor")
    assert run is not None and run.status == TrainingRun.Status.SUCCEEDED, run.error if run else None
    assert run.resumed_from_step is not None and run.resumed_from_step >= 2
    assert run.step == run.total_steps and run.attempts == 2
    assert [step for step, _ in run.loss_history] == list(range(1, run.total_steps + 1))
    version = ModelVersion.objects.get(runs=run)
    assert (Path(version.adapter_path) / "adapter_model.safetensors").exists()
    assert version.metrics["training"]["resumed_from_step"] == run.resumed_from_step
    # Evaluated on probes as few as the settings ask: every check says too few, and the gate holds.
    assert version.metrics["unrelated_prompts"] == 2 and version.metrics["fact_probes"] <= 1
    assert set(version.metrics["not_enough_data"]) == set(CHECK_EXAMPLES)
    assert services.version_refused_checks(version) == sorted(CHECK_EXAMPLES)


@pytest.mark.model
@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_run_within_a_step(customer: Any, tokenizer: Any, torch_threads: None) -> None:
    run = tiny_run(customer, tokenizer, epochs=20)
    worker = threading.Thread(target=pipeline.run_execute, kwargs={"run_id": run.id, "owner": "w"})
    worker.start()
    deadline = time.monotonic() + 240
    while not TrainingRun.objects.filter(id=run.id, step__gte=1).exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    services.run_cancel(run=run)
    worker.join(timeout=120)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.step < run.total_steps
    assert run.version is None
    assert not (Path(settings.ADAPTERS_DIR) / f"run-{run.id}").exists()
    assert not (Path(settings.FINETUNING_CHECKPOINTS_DIR) / f"run-{run.id}").exists()
