"""A dataset build as the overview follows it: queued on the click, building phase by phase on the
worker, then ready with its snapshot or failed with its error; one at a time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from finetuning import pipeline, services
from finetuning.models import DatasetBuild, DatasetSnapshot
from finetuning.pipeline import OnPhase

from .conftest import race


@pytest.fixture
def staff(agent: Any) -> Client:
    client = Client()
    client.force_login(agent)
    return client


def recording_builder(seen: list[tuple[str, str, int]]) -> pipeline.Builder:
    """A builder that walks the real phases and, at each, notes what the build's row says."""

    def build(on_phase: OnPhase) -> DatasetSnapshot:
        for phase in DatasetBuild.PHASES:
            on_phase(phase)
            row = DatasetBuild.objects.get()
            seen.append((row.status, row.phase, row.phases_done))
        return DatasetSnapshot.objects.create(content_hash="f" * 64, counts={"examples": 7})

    return build


def failing_builder(on_phase: OnPhase) -> DatasetSnapshot:
    on_phase("tokenizer")
    on_phase("general")
    raise OSError("the base model folder is unreadable")


def test_a_build_goes_from_queued_through_its_phases_to_ready(agent: Any) -> None:
    build = services.build_start(requested_by=agent)
    assert build.status == DatasetBuild.Status.QUEUED
    seen: list[tuple[str, str, int]] = []

    done = pipeline.build_execute(build_id=build.id, builder=recording_builder(seen))

    assert seen == [("building", "tokenizer", 0), ("building", "general", 1), ("building", "examples", 2)]
    assert done is not None and done.status == DatasetBuild.Status.READY
    assert done.snapshot is not None and done.snapshot.counts["examples"] == 7
    assert done.phases_done == 3 and done.started_at is not None and done.finished_at is not None


def test_a_failed_build_keeps_its_error_and_the_phase_it_failed_in(db: Any) -> None:
    build = services.build_start()
    done = pipeline.build_execute(build_id=build.id, builder=failing_builder)
    assert done is not None and done.status == DatasetBuild.Status.FAILED
    assert done.error == "OSError: the base model folder is unreadable"
    assert done.phase == "general" and done.snapshot is None


def test_a_second_copy_of_the_message_builds_nothing(db: Any) -> None:
    build = services.build_start()
    seen: list[tuple[str, str, int]] = []
    pipeline.build_execute(build_id=build.id, builder=recording_builder(seen))
    assert pipeline.build_execute(build_id=build.id, builder=recording_builder(seen)) is None
    assert DatasetSnapshot.objects.count() == 1


def test_a_second_build_is_refused_while_one_runs(db: Any) -> None:
    first = services.build_start()
    with pytest.raises(services.BuildAlreadyActive) as refused:
        services.build_start()
    assert refused.value.build == first and "started no second build" in str(refused.value)
    services.build_claim(build_id=first.id)
    with pytest.raises(services.BuildAlreadyActive):
        services.build_start()
    assert DatasetBuild.objects.count() == 1


def test_another_build_may_start_once_the_last_one_finished(db: Any) -> None:
    first = services.build_start()
    pipeline.build_execute(build_id=first.id, builder=failing_builder)
    second = services.build_start()
    assert second.id != first.id and second.status == DatasetBuild.Status.QUEUED


def test_a_build_whose_worker_was_lost_fails_and_no_longer_blocks(db: Any, settings: Any) -> None:
    settings.FINETUNING_BUILD_STALE_S = 600
    lost = services.build_start()
    services.build_claim(build_id=lost.id)
    DatasetBuild.objects.filter(id=lost.id).update(updated_at=timezone.now() - timedelta(seconds=601))
    lost.refresh_from_db()
    from finetuning.selectors import build_payload

    assert build_payload(lost)["status"] == "failed" and "stopped answering" in build_payload(lost)["error"]
    fresh = services.build_start()
    lost.refresh_from_db()
    assert lost.status == DatasetBuild.Status.FAILED and "no progress for 10 minutes" in lost.error
    assert fresh.status == DatasetBuild.Status.QUEUED


def test_the_button_queues_a_build_after_the_commit(staff: Client, django_capture_on_commit_callbacks: Any) -> None:
    with (
        mock.patch("finetuning.tasks.dataset_build.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = staff.post("/training/datasets/new")
    build = DatasetBuild.objects.get()
    assert response["Location"] == "/training/"
    delay.assert_called_once_with(build.id)
    page = staff.get("/training/").content.decode()
    assert 'id="build-status" class="badge queued">queued' in page
    assert "Queued: waiting for a worker on the finetuning queue" in page
    assert 'id="build-start" disabled' in page


def test_a_second_click_says_a_build_runs_and_starts_nothing(staff: Client) -> None:
    with mock.patch("finetuning.tasks.dataset_build.delay") as delay:
        staff.post("/training/datasets/new")
        page = staff.post("/training/datasets/new", follow=True).content.decode()
    assert DatasetBuild.objects.count() == 1
    assert "A dataset is already being built" in page and "this click started no second build" in page
    assert delay.call_count <= 1


def test_the_status_view_says_the_phase_then_links_the_dataset(staff: Client) -> None:
    build = services.build_start()
    url = f"/training/datasets/builds/{build.id}.json"
    queued = staff.get(url).json()
    assert (queued["status"], queued["finished"], queued["progress"], queued["snapshot"]) == ("queued", False, 0, None)
    assert queued["status_url"] == url

    services.build_claim(build_id=build.id)
    services.build_phase(build=build, phase="general", done=1)
    building = staff.get(url).json()
    assert building["phase_text"] == "The base model writes its general replies…"
    assert (building["phases_done"], building["phases_total"], building["progress"]) == (1, 3, 0.3333)

    snapshot = DatasetSnapshot.objects.create(content_hash="abcdef0123456789", counts={"examples": 12})
    services.build_ready(build=build, snapshot=snapshot, phases=3)
    ready = staff.get(url).json()
    assert ready["finished"] and ready["phase_text"] == "Built." and ready["progress"] == 1
    assert ready["snapshot"] == {
        "id": snapshot.id,
        "name": "abcdef0123",
        "examples": 12,
        "url": f"/training/datasets/{snapshot.id}/",
    }


def test_the_status_view_is_for_staff_only(client: Client, db: Any) -> None:
    build = services.build_start()
    from django.contrib.auth.models import User

    assert client.get(f"/training/datasets/builds/{build.id}.json").status_code == 302
    client.force_login(User.objects.create_user("plain", password="x"))
    assert client.get(f"/training/datasets/builds/{build.id}.json").status_code == 302
    assert client.post("/training/datasets/new").status_code == 302
    assert DatasetBuild.objects.count() == 1


def test_two_concurrent_clicks_create_one_build(transactional_db: Any) -> None:
    results = race(services.build_start, services.build_start)
    assert DatasetBuild.objects.count() == 1
    assert sorted(type(r).__name__ for r in results) == ["BuildAlreadyActive", "DatasetBuild"]
