"""The vLLM client against a scripted OpenAI-compatible server (tests/inference/scripted_vllm.py):
the request mapping, the stream's parsing and batching, Stop, timeouts, server errors and adapter
refusals. The same client against the real vLLM: tests/inference/test_vllm_server.py."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conversations.inference.fake import WordTokenizer
from conversations.inference.types import GenerationRequest, QueueFull, SamplingParams, TokenChunk
from conversations.inference.vllm import VllmEngine, VllmError, completion_body, sse_data

from .scripted_vllm import ScriptedVllm


@pytest.fixture
def server() -> Iterator[ScriptedVllm]:
    scripted = ScriptedVllm()
    yield scripted
    scripted.close()


class Running:
    """An engine's ``run`` on a thread of its own, its batches collected."""

    def __init__(self, engine: VllmEngine) -> None:
        self.engine = engine
        self.batches: list[list[TokenChunk]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=engine.run, args=(self._emit, self.stop), daemon=True)
        self.thread.start()

    def _emit(self, batch: list[TokenChunk]) -> None:
        with self.lock:
            self.batches.append(batch)

    def chunks(self, request_id: str) -> list[TokenChunk]:
        with self.lock:
            return [c for b in self.batches for c in b if c.request_id == request_id]

    def wait_finished(self, request_id: str, timeout: float = 10) -> TokenChunk:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [c for c in self.chunks(request_id) if c.finished]
            if done:
                return done[0]
            time.sleep(0.01)
        raise AssertionError(f"{request_id} did not finish; chunks: {self.chunks(request_id)}")

    def text(self, request_id: str) -> str:
        return "".join(c.text for c in self.chunks(request_id))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def running(server: ScriptedVllm) -> Iterator[Running]:
    engine = VllmEngine(server.url, tokenizer=WordTokenizer(), tick_s=0.02)
    run = Running(engine)
    yield run
    run.close()


def request(request_id: str, **sampling: Any) -> GenerationRequest:
    adapter = sampling.pop("adapter", None)
    timeout_s = sampling.pop("timeout_s", None)
    return GenerationRequest(request_id, (1, 2, 3), SamplingParams(**sampling), adapter=adapter, timeout_s=timeout_s)


def test_the_request_maps_the_sampling_settings_and_the_prompt_ids() -> None:
    sampling = SamplingParams(
        temperature=0.5, top_p=0.8, top_k=0, repetition_penalty=1.2, max_new_tokens=7, stop=("\n\n",), seed=3
    )
    body = completion_body(GenerationRequest("1", (5, 6), sampling, adapter="v7"), "/m/base")
    assert body["model"] == "v7" and body["prompt"] == [5, 6] and body["stream"] is True
    assert body["top_k"] == -1, "top_k 0 is off here, -1 is off in vLLM"
    assert (body["temperature"], body["top_p"], body["repetition_penalty"], body["max_tokens"]) == (0.5, 0.8, 1.2, 7)
    assert body["stop"] == ["\n\n"] and body["seed"] == 3 and body["ignore_eos"] is False
    assert body["stream_options"]["include_usage"] is True
    greedy = completion_body(
        GenerationRequest("2", (5,), SamplingParams(temperature=0, top_k=40, ignore_eos=True)), "/m/base"
    )
    assert greedy["model"] == "/m/base" and greedy["top_k"] == 40 and greedy["ignore_eos"] is True
    assert "stop" not in greedy and "seed" not in greedy


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_server_sent_events_are_split_on_blank_lines_and_comments_skipped() -> None:
    lines = _lines(": keep-alive", "", "data: one", "", "data: two", "data: lines", "", "event: x", "data:three")
    assert [d async for d in sse_data(lines)] == ["one", "two\nlines", "three"]


def test_it_finds_the_served_model_and_its_context(server: ScriptedVllm) -> None:
    engine = VllmEngine(server.url, tokenizer=WordTokenizer())
    assert engine.served_model == "/models/SmolLM2-135M-Instruct"
    assert engine.model_name == "SmolLM2-135M-Instruct", "a reply names the model as the built-in engine does"
    assert engine.max_positions == 1024


def test_several_models_need_vllm_model_and_an_unknown_one_is_refused() -> None:
    scripted = ScriptedVllm(extra_models=("other",))
    try:
        with pytest.raises(VllmError, match="set VLLM_MODEL"):
            VllmEngine(scripted.url, tokenizer=WordTokenizer())
        assert VllmEngine(scripted.url, model="other", tokenizer=WordTokenizer()).served_model == "other"
        with pytest.raises(VllmError, match="not VLLM_MODEL='nope'"):
            VllmEngine(scripted.url, model="nope", tokenizer=WordTokenizer())
    finally:
        scripted.close()


def test_a_server_that_does_not_answer_is_a_clear_error() -> None:
    from tests.e2e.live import free_port

    with pytest.raises(VllmError, match="does not answer"):
        VllmEngine(f"http://127.0.0.1:{free_port()}", tokenizer=WordTokenizer(), connect_timeout_s=1)


def test_a_reply_streams_in_batches_with_its_token_count(server: ScriptedVllm, running: Running) -> None:
    running.engine.submit(request("1", max_new_tokens=50))
    done = running.wait_finished("1")
    assert done.finish_reason == "stop" and done.token_count == len(server.words)
    assert running.text("1") == "".join(server.words)
    counts = [c.token_count for c in running.chunks("1")]
    assert counts == sorted(counts) and counts[0] >= 1
    assert len(running.batches) < len(server.words), "each event was emitted alone instead of per tick"
    assert server.completions()[0].body["prompt"] == [1, 2, 3]
    metrics = running.engine.metrics()
    assert metrics["requests_total"] == 1 and metrics["running"] == 0 and metrics["backend"] == "vllm"


def test_max_tokens_ends_it_with_length_and_without_usage_the_events_are_counted(
    server: ScriptedVllm, running: Running
) -> None:
    server.usage = False
    running.engine.submit(request("1", max_new_tokens=3))
    done = running.wait_finished("1")
    assert done.finish_reason == "length" and done.token_count == 3
    assert running.text("1") == "".join(server.words[:3])


def test_stop_closes_the_stream_and_the_server_sees_the_client_go(server: ScriptedVllm, running: Running) -> None:
    server.words = tuple(f" w{i}" for i in range(200))
    server.delay_s = 0.05
    running.engine.submit(request("1", max_new_tokens=200))
    deadline = time.monotonic() + 10
    while not running.text("1") and time.monotonic() < deadline:
        time.sleep(0.01)
    running.engine.cancel("1")
    done = running.wait_finished("1", timeout=2)
    assert done.finish_reason == "cancelled" and 0 < done.token_count < 200
    assert server.completions()[0].disconnected.wait(2), "the server kept streaming to a closed request"
    assert running.engine.metrics()["running"] == 0


def test_a_request_stopped_before_it_starts_never_reaches_the_server(server: ScriptedVllm) -> None:
    engine = VllmEngine(server.url, tokenizer=WordTokenizer())
    engine.submit(request("1"))
    engine.cancel("1")
    run = Running(engine)
    try:
        assert run.wait_finished("1").finish_reason == "cancelled"
        assert not server.completions()
    finally:
        run.close()


def test_a_reply_past_its_timeout_ends_with_timeout_and_the_stream_closes(
    server: ScriptedVllm, running: Running
) -> None:
    server.words = tuple(f" w{i}" for i in range(100))
    server.delay_s = 0.05
    running.engine.submit(request("1", max_new_tokens=100, timeout_s=0.4))
    done = running.wait_finished("1", timeout=5)
    assert done.finish_reason == "timeout" and done.token_count < 100
    assert server.completions()[0].disconnected.wait(2)


def test_a_server_error_fails_that_reply_alone_with_what_vllm_said(server: ScriptedVllm, running: Running) -> None:
    server.fail_completions = (500, "EngineCore encountered an issue")
    running.engine.submit(request("1"))
    done = running.wait_finished("1")
    assert done.finish_reason == "error" and "EngineCore encountered an issue" in (done.error or "")
    server.fail_completions = None
    running.engine.submit(request("2"))
    assert running.wait_finished("2").finish_reason == "stop"


def test_a_model_the_server_does_not_hold_fails_only_its_reply(server: ScriptedVllm, running: Running) -> None:
    server.delay_s = 0.02
    running.engine.submit(request("1", adapter="v-unknown"))
    running.engine.submit(request("2"))
    failed, served = running.wait_finished("1"), running.wait_finished("2")
    assert failed.finish_reason == "error" and "does not exist" in (failed.error or "")
    assert served.finish_reason == "stop" and running.text("2") == "".join(server.words)


def test_the_queue_bound_refuses_with_queue_full(server: ScriptedVllm) -> None:
    engine = VllmEngine(server.url, tokenizer=WordTokenizer(), max_running=2)
    engine.submit(request("1"))
    engine.submit(request("2"))
    with pytest.raises(QueueFull):
        engine.submit(request("3"))
    assert engine.metrics()["rejected_total"] == 1


def adapter_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_adapters_load_by_version_name_and_a_refusal_says_what_vllm_said(
    server: ScriptedVllm, running: Running, tmp_path: Path
) -> None:
    engine = running.engine
    engine.load_adapter("v1", adapter_folder(tmp_path, "v1"))
    assert server.adapters == {"v1": str(tmp_path / "v1")}
    engine.load_adapter("v1", tmp_path / "v1")  # another worker on the same server loaded it: served as is
    (tmp_path / "broken").mkdir()
    with pytest.raises(VllmError, match="No adapter found for") as refused:
        engine.load_adapter("v2", tmp_path / "broken")
    assert "v2" in str(refused.value)
    engine.submit(request("1", adapter="v1"))
    assert running.wait_finished("1").finish_reason == "stop"
    assert server.completions()[0].body["model"] == "v1"
    engine.unload_adapter("v1")
    assert server.adapters == {}
    engine.unload_adapter("v1")  # already gone: nothing to do
    assert engine.metrics()["adapters"] == []


def test_relative_adapter_paths_lie_in_the_adapters_folder_as_the_server_sees_it(server: ScriptedVllm) -> None:
    local = VllmEngine(server.url, tokenizer=WordTokenizer(), adapters_dir=Path("/srv/adapters"))
    assert local.server_path("v3") == "/srv/adapters/v3"
    remote = VllmEngine(
        server.url, tokenizer=WordTokenizer(), adapters_dir=Path("/srv/adapters"), server_adapters_dir="/adapters"
    )
    assert remote.server_path("v3") == "/adapters/v3"
    assert remote.server_path("/srv/adapters/v3") == "/adapters/v3"
    assert remote.server_path("/elsewhere/v3") == "/elsewhere/v3"


def test_an_adapter_the_server_lost_is_loaded_again_once(
    server: ScriptedVllm, running: Running, tmp_path: Path
) -> None:
    running.engine.load_adapter("v1", adapter_folder(tmp_path, "v1"))
    server.adapters.clear()  # the server restarted
    running.engine.submit(request("1", adapter="v1"))
    assert running.wait_finished("1").finish_reason == "stop"
    assert server.adapters == {"v1": str(tmp_path / "v1")}
    loads = [s for s in server.seen if s.path == "/v1/load_lora_adapter"]
    assert len(loads) == 2 and len(server.completions()) == 2


def test_the_backend_setting_picks_the_engine(server: ScriptedVllm, settings: Any) -> None:
    from conversations.inference.backends import engine_from_settings

    settings.INFERENCE_BACKEND, settings.VLLM_URL = "vllm", server.url
    engine = engine_from_settings()
    assert isinstance(engine, VllmEngine) and engine.url == server.url
    settings.INFERENCE_BACKEND = "builtin"
    assert isinstance(engine_from_settings(vllm_url=server.url), VllmEngine), "--vllm-url implies vLLM"
    settings.INFERENCE_BACKEND = "tgi"
    with pytest.raises(ValueError, match="builtin, vllm"):
        engine_from_settings()


def test_the_worker_command_names_its_server_and_stops_clearly_when_it_does_not_answer() -> None:
    from django.core.management import CommandError, call_command

    from tests.e2e.live import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match=f"vLLM at {url} does not answer"):
        call_command("inference_worker", "--vllm-url", url)


def test_an_event_it_cannot_read_fails_that_reply_instead_of_leaving_it_open(
    server: ScriptedVllm, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: VllmEngine, stream: Any, event: dict[str, Any]) -> bool:
        raise KeyError("choices")

    monkeypatch.setattr(VllmEngine, "_take_event", broken)
    running.engine.submit(request("1"))
    done = running.wait_finished("1")
    assert done.finish_reason == "error" and "KeyError" in (done.error or "")
