"""The customer chat end to end on vLLM: browser protocol → uvicorn → Redis → the real inference
worker with ``INFERENCE_BACKEND=vllm`` → the real vLLM server → database. The properties the
built-in path proves (tests/e2e/test_chat_real_model.py, tests/faults): a reply streams, Stop
stops it (and vLLM with it), a trained adapter serves and a reply names its version, a refused
adapter fails only its replies, a killed worker's reply is finished by another worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from conversations.events import REPLY_FAILED_TEXT
from conversations.models import Message

from .checks import streamed_and_stored
from .client import ChatClient
from .live import LiveSystem
from .vllm import requests_running, wait_requests_running

pytestmark = [pytest.mark.vllm, pytest.mark.django_db(transaction=True)]

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def system(vllm_server: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    # A prefix of its own: the session's built-in live system (tests/conftest.py) may be up too,
    # and its worker must not answer these replies.
    env = {"INFERENCE_BACKEND": "vllm", "VLLM_URL": vllm_server.url, "GENERATION_MAX_NEW_TOKENS": "64"}
    live = LiveSystem(prefix=f"{settings.REDIS_KEY_PREFIX}:vllm", env=env)
    yield live
    live.stop()


def served(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}


def wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


async def test_a_reply_streams_from_vllm_through_the_worker_and_is_stored(system: LiveSystem) -> None:
    async with ChatClient(system.url) as chat:
        exchange = await chat.ask("Hello! What can you help me with?", timeout=240)
    reply = await streamed_and_stored(exchange)
    assert reply.model_name == MODEL


async def test_stop_ends_the_reply_and_vllm_stops_generating(system: LiveSystem, vllm_server: Any) -> None:
    async with ChatClient(system.url) as chat:
        first = await chat.ask("Tell me a long story about a brave little dragon.", until="delta", timeout=240)
        await chat.send({"type": "stop"})
        exchange = await chat.collect(first, timeout=30)
    done = exchange.done
    assert done["status"] == "cancelled" and done["text"]
    reply = await asyncio.to_thread(Message.objects.get, id=done["message_id"])
    assert reply.status == "cancelled" and reply.token_count < 64
    running = await asyncio.to_thread(wait_requests_running, vllm_server.url, 0, 5)
    assert running == 0, "vLLM went on generating the stopped reply"


def test_a_trained_adapter_serves_a_reply_naming_its_version_and_is_unloaded_when_retired(
    system: LiveSystem, vllm_server: Any, trained_adapter: Path
) -> None:
    from finetuning.models import ModelVersion

    version = ModelVersion.objects.create(
        name="v-trained", base_model=MODEL, adapter_path=str(trained_adapter), status="active"
    )

    async def ask() -> dict[str, Any]:
        async with ChatClient(system.url) as chat:
            return (await chat.ask("What are your opening hours?", timeout=240)).done

    done = asyncio.run(ask())
    assert done["status"] == "complete" and done["text"].strip()
    reply = Message.objects.get(id=done["message_id"])
    assert reply.model_name == f"{MODEL}+v-trained" and reply.model_version_id == version.id
    assert "v-trained" in served(vllm_server.url)
    version.status = "retired"  # a rollback to the base model
    version.save(update_fields=["status"])
    assert wait_until(lambda: "v-trained" not in served(vllm_server.url), 30), "the retired adapter stayed loaded"


def test_an_adapter_vllm_refuses_fails_only_its_replies(system: LiveSystem, tmp_path: Path) -> None:
    from finetuning.models import ModelVersion

    (tmp_path / "v-bad").mkdir()  # no adapter_config.json: vLLM cannot load it
    bad = ModelVersion.objects.create(
        name="v-bad", base_model=MODEL, adapter_path=str(tmp_path / "v-bad"), status="active"
    )

    async def ask(text: str) -> dict[str, Any]:
        async with ChatClient(system.url) as chat:
            return (await chat.ask(text, timeout=240)).done

    failed = asyncio.run(ask("hello"))
    assert failed["status"] == "failed" and failed["error"] == REPLY_FAILED_TEXT
    assert "v-bad" in Message.objects.get(id=failed["message_id"]).error
    bad.refresh_from_db()
    assert "No adapter found" in bad.serve_error, "the version page should say what vLLM said"
    answered = asyncio.run(ask("are you there?"))  # the next customer gets the base model
    assert answered["status"] == "complete" and answered["text"].strip()
    assert Message.objects.get(id=answered["message_id"]).model_version_id is None
    assert system.worker.poll() is None


async def test_a_killed_workers_reply_is_finished_by_another_worker(system: LiveSystem, vllm_server: Any) -> None:
    async with ChatClient(system.url) as chat:
        first = await chat.ask("Tell me a long story about a brave little dragon.", until="delta", timeout=240)
        reply_id = first.deltas[0]["message_id"]
        system.kill_worker()
        # Another worker, on the same server named by its option rather than the environment.
        command = ["manage.py", "inference_worker", "--consumer", f"e2e-{system.port}-b", "--vllm-url", vllm_server.url]
        system.worker = system._spawn("worker-b", command, {"VLLM_URL": "http://127.0.0.1:9"})
        exchange = await chat.collect(first, timeout=240)
    assert exchange.done["message_id"] == reply_id and exchange.done["status"] == "complete"
    reply = await asyncio.to_thread(Message.objects.get, id=reply_id)
    assert reply.status == "complete" and reply.text == exchange.done["text"]
    assert reply.claimed_by == f"e2e-{system.port}-b"
    assert requests_running(vllm_server.url) == 0
