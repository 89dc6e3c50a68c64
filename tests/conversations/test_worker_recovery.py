"""The inference worker's loops recover from what breaks under them, or stop the worker for good."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations import dispatch
from conversations.events import REPLY_FAILED_TEXT
from conversations.inference.fake import FakeEngine
from conversations.worker import ConsumerNameTaken, InferenceWorker
from conversations.worker import services as worker_services
from tests.sockets import receive_until

from .test_worker import LONG_REPLY, open_chat, stored, wait_for_heartbeat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]


async def test_it_recreates_the_group_when_redis_loses_it(customer: Any, start_worker: Any, clean_redis: Any) -> None:
    start_worker(FakeEngine(default_reply="Still here."))
    await wait_for_heartbeat(clean_redis)
    clean_redis.delete(dispatch.key(dispatch.GENERATE_STREAM))  # what a Redis restarted empty leaves: NOGROUP
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hello?"})
    done = (await receive_until(socket, "done", timeout=15))[-1]
    assert done["status"] == "complete" and done["text"] == "Still here."
    await socket.disconnect()


async def test_it_records_which_worker_claimed_a_reply(customer: Any, start_worker: Any) -> None:
    start_worker(FakeEngine(), consumer="worker-one")
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hi"})
    done = (await receive_until(socket, "done"))[-1]
    assert (await stored(done["message_id"])).claimed_by == "worker-one"
    await socket.disconnect()


async def test_it_refuses_a_consumer_name_a_live_worker_has(start_worker: Any, clean_redis: Any) -> None:
    start_worker(FakeEngine(), consumer="twin")
    await wait_for_heartbeat(clean_redis)
    second = InferenceWorker(FakeEngine(), consumer="twin", flush_ms=20)
    with pytest.raises(ConsumerNameTaken, match="twin"):
        await asyncio.wait_for(second.run(), 30)


async def test_a_loop_failing_past_the_limit_stops_the_worker_and_its_heartbeat(
    start_worker: Any, clean_redis: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conversations import selectors
    from conversations.worker import loops

    def broken(**_: Any) -> list[tuple[int, str]]:
        raise RuntimeError("the sweep keeps failing")

    monkeypatch.setattr(loops, "RECOVER_TICK_S", 0.05)
    monkeypatch.setattr(loops, "RECOVER_SWEEP_EVERY", 1)
    monkeypatch.setattr(selectors, "replies_unqueued", broken)
    settings.INFERENCE_LOOP_FAIL_LIMIT_S = 1.0
    running = start_worker(FakeEngine())
    await asyncio.wait_for(running.task, 30)
    assert running.worker.exit_status == 1
    assert not clean_redis.exists(dispatch.key(dispatch.HEARTBEAT))
    assert not clean_redis.exists(dispatch.alive_key("test-worker"))


async def test_a_loop_that_fails_now_and_then_goes_on(
    customer: Any, start_worker: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = iter([True, True, True])
    progress = worker_services.reply_progress

    def flaky(**kwargs: Any) -> set[int]:
        if next(failures, False):
            raise RuntimeError("a passing fault")
        return progress(**kwargs)

    monkeypatch.setattr(worker_services, "reply_progress", flaky)
    settings.INFERENCE_LOOP_FAIL_LIMIT_S = 30.0
    running = start_worker(FakeEngine(default_reply="Got there in the end."))
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hi"})
    done = (await receive_until(socket, "done", timeout=15))[-1]
    assert done["status"] == "complete" and done["text"] == "Got there in the end."
    assert not running.task.done()
    await socket.disconnect()


def an_active_version(name: str, folder: Path, *, servable: bool, serve_error: str = "") -> Any:
    """New replies ask for it."""
    from finetuning.models import ModelVersion

    folder.mkdir()
    if servable:
        (folder / "adapter_config.json").write_text("{}")
    return ModelVersion.objects.create(
        name=name, base_model="x", adapter_path=str(folder), status="active", serve_error=serve_error
    )


async def test_an_adapter_that_will_not_load_fails_only_its_replies(
    customer: Any, second_customer: Any, start_worker: Any, tmp_path: Path
) -> None:
    start_worker(FakeEngine(default_reply=LONG_REPLY[:80], step_delay_s=0.02))
    base_socket = await open_chat(second_customer)
    await base_socket.send_json_to({"type": "message", "text": "hello"})  # asked before a version is active
    await receive_until(base_socket, "delta")
    bad = await database_sync_to_async(an_active_version)("v-bad", tmp_path / "bad", servable=False)
    bad_socket = await open_chat(customer)
    await bad_socket.send_json_to({"type": "message", "text": "hi"})
    failed = (await receive_until(bad_socket, "done", timeout=15))[-1]
    assert failed["status"] == "failed" and failed["error"] == REPLY_FAILED_TEXT
    assert "v-bad" in (await stored(failed["message_id"])).error  # agents see which version, no paths
    assert str(tmp_path) not in (await stored(failed["message_id"])).error
    answered = (await receive_until(base_socket, "done", timeout=15))[-1]
    assert answered["status"] == "complete" and answered["text"] == LONG_REPLY[:80]
    await bad.arefresh_from_db()
    assert "adapter_config.json" in bad.serve_error
    await bad_socket.disconnect()
    await base_socket.disconnect()


async def test_while_the_active_version_is_marked_unservable_customers_get_the_base_model(
    customer: Any, start_worker: Any, tmp_path: Path
) -> None:
    await database_sync_to_async(an_active_version)(
        "v-good", tmp_path / "good", servable=True, serve_error="it would not load yesterday"
    )
    engine = FakeEngine(default_reply="From the base model.")
    start_worker(engine)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hi"})
    done = (await receive_until(socket, "done", timeout=15))[-1]
    assert done["status"] == "complete" and done["text"] == "From the base model."
    assert (await stored(done["message_id"])).model_version_id is None
    assert engine.adapters == {}
    await socket.disconnect()


async def test_a_reply_queued_for_a_version_since_marked_unservable_fails_at_once(
    customer: Any, start_worker: Any, tmp_path: Path
) -> None:
    from finetuning.services import version_mark_unservable

    await database_sync_to_async(an_active_version)("v-good", tmp_path / "good", servable=True)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hi"})  # queued on v-good; no worker yet
    await receive_until(socket, "message")
    await database_sync_to_async(version_mark_unservable)(name="v-good", error="it would not load")
    engine = FakeEngine()
    start_worker(engine)
    done = (await receive_until(socket, "done", timeout=15))[-1]
    assert done["status"] == "failed" and done["error"] == REPLY_FAILED_TEXT
    assert "v-good" in (await stored(done["message_id"])).error
    assert engine.adapters == {} and engine.submitted == []
    await socket.disconnect()


def a_promote(retired: Any, name: str, folder: Path) -> Any:
    """``retired`` stops serving and a new version does, as a promote leaves them."""
    retired.status = "retired"
    retired.save(update_fields=["status"])
    return an_active_version(name, folder, servable=True)


async def test_a_retired_versions_adapter_is_unloaded_once_no_reply_runs_on_it(
    customer: Any, second_customer: Any, start_worker: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from conversations.worker import loops

    monkeypatch.setattr(loops, "RECOVER_TICK_S", 0.2)
    one = await database_sync_to_async(an_active_version)("v-one", tmp_path / "one", servable=True)
    engine = FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.03)
    start_worker(engine)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hi"})
    await receive_until(socket, "delta")
    await database_sync_to_async(a_promote)(one, "v-two", tmp_path / "two")
    await asyncio.sleep(0.6)  # recover ticks go by while the reply still runs on v-one
    assert "v-one" in engine.adapters, "an adapter was unloaded under a reply still using it"
    done = (await receive_until(socket, "done", timeout=15))[-1]
    assert done["status"] == "complete" and done["text"] == LONG_REPLY
    for _ in range(50):
        if "v-one" not in engine.adapters:
            break
        await asyncio.sleep(0.1)
    assert engine.adapters == {}, "the retired version's adapter stayed loaded"
    other = await open_chat(second_customer)
    await other.send_json_to({"type": "message", "text": "hello"})
    answered = (await receive_until(other, "done", timeout=15))[-1]
    assert answered["status"] == "complete" and set(engine.adapters) == {"v-two"}
    await asyncio.sleep(0.6)
    assert set(engine.adapters) == {"v-two"}, "the version in service was unloaded"
    await socket.disconnect()
    await other.disconnect()
