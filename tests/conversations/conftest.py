"""The inference worker as the conversation tests run it: in this process, on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from conversations.inference.fake import FakeEngine
from conversations.worker import InferenceWorker


class RunningWorker:
    def __init__(self, engine: FakeEngine, consumer: str) -> None:
        self.worker = InferenceWorker(engine, consumer=consumer, flush_ms=20)
        self.task = asyncio.create_task(self.worker.run())

    async def stop(self) -> None:
        self.worker.stop_event.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., RunningWorker]]:
    started: list[RunningWorker] = []

    def start(engine: FakeEngine | None = None, consumer: str = "test-worker") -> RunningWorker:
        started.append(RunningWorker(engine or FakeEngine(), consumer))
        return started[-1]

    yield start
    for running in started:
        if not running.task.done():
            await running.stop()
