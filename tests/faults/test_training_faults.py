"""Faults in the learning loop, caused for real: a Celery worker killed with SIGKILL mid-training and
started again inside its lease, and promotes and rollbacks racing each other on the real database
(on PostgreSQL the races are real; on SQLite its write lock orders them).

Each asserts the state a person would expect: the run finishes once with one version, and exactly
one version (or none, for the base model) serves, the one the winner of each race asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from finetuning import services
from finetuning.models import ModelVersion, Promotion, TrainingRun
from finetuning.selectors import version_active
from tests.e2e.live import database_url, free_port
from tests.finetuning.conftest import race

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 4  # each race several times: one lucky ordering proves little
EVALUATED = {"checks": {"replay_f1_no_worse": True}}


@pytest.fixture(autouse=True)
def _private_folders(settings: Any, tmp_path: Path) -> None:
    settings.ADAPTERS_DIR = tmp_path / "adapters"
    settings.FINETUNING_CHECKPOINTS_DIR = str(tmp_path / "checkpoints")


def versions(tmp_path: Path, *names: str) -> list[ModelVersion]:
    made = []
    for name in names:
        (tmp_path / name).mkdir()
        made.append(
            ModelVersion.objects.create(
                name=name, base_model="base", adapter_path=str(tmp_path / name), metrics=EVALUATED
            )
        )
    return made


def active_versions() -> list[str]:
    return list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("name", flat=True))


def reset() -> None:
    Promotion.objects.all().delete()
    ModelVersion.objects.all().delete()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_concurrent_promotes_leave_one_version_active(tmp_path: Path, round_: int) -> None:
    first, second = versions(tmp_path, "v1", "v2")
    results = race(
        lambda: services.version_promote(version=first, expected=services.BASE),
        lambda: services.version_promote(version=second, expected=services.BASE),
    )
    winners = [r for r in results if isinstance(r, ModelVersion)]
    losers = [r for r in results if isinstance(r, services.VersionChanged)]
    assert len(winners) == len(losers) == 1, results
    assert active_versions() == [winners[0].name]
    assert Promotion.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_promote_racing_a_rollback_does_one_or_the_other(tmp_path: Path, round_: int) -> None:
    first, second, third = versions(tmp_path, "v1", "v2", "v3")
    services.version_promote(version=first)
    services.version_promote(version=second)
    promoted, rolled_back = race(
        lambda: services.version_promote(version=third, expected="v2"),
        lambda: services.version_rollback(expected="v2"),
    )
    if isinstance(promoted, ModelVersion):
        assert isinstance(rolled_back, services.VersionChanged), rolled_back
        assert active_versions() == ["v3"]
        assert services.version_rollback() == second  # the stack holds what served, in turn
    else:
        assert isinstance(promoted, services.VersionChanged), promoted
        assert rolled_back == first
        assert active_versions() == ["v1"]
        assert services.version_rollback() is None
    assert active_versions() in ([], ["v2"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_double_rollback_goes_back_one_version(tmp_path: Path, round_: int) -> None:
    for each in versions(tmp_path, "v1", "v2", "v3"):
        services.version_promote(version=each)
    results = race(
        lambda: services.version_rollback(expected="v3"),
        lambda: services.version_rollback(expected="v3"),
    )
    assert sorted(type(r).__name__ for r in results) == ["ModelVersion", "VersionChanged"], results
    assert active_versions() == ["v2"]
    assert version_active() == ModelVersion.objects.get(name="v2")


@pytest.mark.django_db(transaction=True)
def test_two_people_rolling_back_the_base_model_each_get_a_clear_answer(tmp_path: Path) -> None:
    (only,) = versions(tmp_path, "v1")
    services.version_promote(version=only)
    results = race(lambda: services.version_rollback(expected="v1"), lambda: services.version_rollback(expected="v1"))
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "VersionChanged"], results
    assert active_versions() == []


@pytest.fixture
def broker() -> Iterator[str]:
    """A redis-server of the test's own as the Celery broker: the killed worker's unacknowledged
    message stays there (Redis would redeliver it only after an hour), and no other test's worker
    can take the run's message."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the test's redis-server did not start"
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(10)


class Celery:
    """``celery worker -Q finetuning -P solo`` on the test database and the test's broker."""

    def __init__(self, broker: str, logs: Path, **env: str) -> None:
        self.broker, self.logs, self.env = broker, logs, env
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log = self.logs / f"celery-{self.starts}.log"
        command = [sys.executable, "-m", "celery", "-A", "chatbot", "worker", "-Q", "finetuning", "-P", "solo"]
        command += ["-l", "info", "-n", f"faults-{self.starts}-{os.getpid()}@%h"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = os.environ | {
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": self.broker,
            "ADAPTERS_DIR": str(settings.ADAPTERS_DIR),
            "FINETUNING_CHECKPOINTS_DIR": settings.FINETUNING_CHECKPOINTS_DIR,
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log.read_text(errors="replace"):
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Celery worker did not get ready"
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def wait_for(condition: Any, *, timeout: float, what: str, worker: Celery) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.process is not None and worker.process.poll() is None, worker.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.2)


def publish(broker: str, run_id: int) -> None:
    from chatbot.celery import app
    from finetuning import tasks

    with app.connection_for_write(broker) as connection:
        tasks.training_run.apply_async(args=[run_id], connection=connection)


LEASE_S = 20  # longer than a worker's start-up here, so the restarted worker is up inside it
SWEEP_S = 1
RESUMED_WITHIN_S = 180  # from the kill: the lease's expiry, one sweep, a model load, on two busy cores


@pytest.mark.model
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_killed_mid_training_and_restarted_inside_the_lease_resumes_the_run(
    customer: Any, broker: str, tmp_path: Path, settings: Any
) -> None:
    from finetuning.base import base_model_path, load_tokenizer
    from tests.finetuning.test_training import tiny_run

    run = tiny_run(customer, load_tokenizer(base_model_path()))
    worker = Celery(
        broker,
        tmp_path,
        FINETUNING_LEASE_S=str(LEASE_S),
        FINETUNING_SWEEP_S=str(SWEEP_S),
        FINETUNING_THREADS="2",
        FINETUNING_CPU_PRIORITY="normal",  # the test's own two cores are shared: nothing to yield to
        FINETUNING_EVAL_MAX_NEW_TOKENS="2",
        FINETUNING_EVAL_MAX_REPLAYS="1",
        FINETUNING_PROBE_MAX_FACTS="1",
        FINETUNING_PROBE_PARAPHRASES="1",
        FINETUNING_PROBE_UNRELATED="2",
    )
    checkpoints = Path(settings.FINETUNING_CHECKPOINTS_DIR) / f"run-{run.id}"
    try:
        worker.start()
        publish(broker, run.id)
        wait_for(
            lambda: (
                list(checkpoints.glob("step-*/state.json"))
                and TrainingRun.objects.filter(id=run.id, step__gte=3).exists()
            ),
            timeout=300,
            what="a checkpoint and a step beyond it",
            worker=worker,
        )
        worker.kill()
        killed_at = time.monotonic()
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.RUNNING and run.attempts == 1

        worker.start()
        worker.wait_ready()
        run.refresh_from_db()
        assert run.lease_expires_at is not None and run.attempts == 1
        from django.utils import timezone

        assert timezone.now() < run.lease_expires_at, "the worker should be back inside the dead one's lease"

        wait_for(
            lambda: TrainingRun.objects.filter(id=run.id, attempts=2).exists(),
            timeout=RESUMED_WITHIN_S - (time.monotonic() - killed_at),
            what="the run taken up again",
            worker=worker,
        )
        wait_for(
            lambda: not TrainingRun.objects.filter(id=run.id, status__in=TrainingRun.ACTIVE_STATUSES).exists(),
            timeout=300,
            what="the resumed run finished",
            worker=worker,
        )
    finally:
        worker.stop()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.attempts == 2 and run.resumed_from_step is not None and run.resumed_from_step >= 2
    assert [step for step, _ in run.loss_history] == list(range(1, run.total_steps + 1))
    [version] = ModelVersion.objects.all()
    assert run.version == version and version.status == ModelVersion.Status.CANDIDATE
    assert services.version_refused_checks(version) != [services.NOT_EVALUATED]
    adapters = [p for p in Path(settings.ADAPTERS_DIR).iterdir() if not p.name.startswith(".")]
    assert adapters == [Path(version.adapter_path)]


@pytest.mark.django_db(transaction=True)
def test_every_thread_of_a_celery_worker_yields_the_cpu_to_chat(broker: str, tmp_path: Path) -> None:
    from finetuning.priority import NICEST

    worker = Celery(broker, tmp_path, FINETUNING_CPU_PRIORITY="idle")
    try:
        worker.start()
        worker.wait_ready()
        assert worker.process is not None
        tasks = Path(f"/proc/{worker.process.pid}/task")
        policies = {}
        for task in tasks.iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            # Fields after the name, from state (3): nice is 19th, policy 41st.
            policies[task.name] = (int(fields[19 - 3]), int(fields[41 - 3]))
    finally:
        worker.stop()
    assert len(policies) > 1
    assert set(policies.values()) == {(NICEST, os.SCHED_IDLE)}, policies
