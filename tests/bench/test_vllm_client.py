"""The engine bench's vLLM client, against a scripted OpenAI-compatible server on a loopback port.

The real server is slow to start and lives in its own venv; what this checks is the bench's side:
the prompt goes as token ids, greedy, exactly ``max_tokens`` with EOS ignored, all requests in
flight at once, and throughput counts the tokens the server reports.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench.vllm_client import served_model, throughput


class ScriptedServer(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []
    expected = 0
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "SmolLM2-135M-Instruct"}, {"id": "v7"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.bodies.append(body)
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        # Hold every answer until all expected requests are in (or 5 s passed): a client that
        # sent them one after another would never get there, and would take 5 s for each.
        deadline = time.monotonic() + 5.0
        while len(cls.bodies) < cls.expected and time.monotonic() < deadline:
            time.sleep(0.01)
        with cls.lock:
            cls.in_flight -= 1
        self._send({"usage": {"completion_tokens": body["max_tokens"], "prompt_tokens": len(body["prompt"])}})


@pytest.fixture
def server_url() -> Iterator[str]:
    ScriptedServer.bodies, ScriptedServer.in_flight, ScriptedServer.most_in_flight = [], 0, 0
    ScriptedServer.expected = 16
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_it_names_the_servers_first_model(server_url: str) -> None:
    assert served_model(server_url + "/") == "SmolLM2-135M-Instruct"


def test_it_sends_every_prompt_at_once_as_greedy_token_ids(server_url: str) -> None:
    prompts = [(1, 2, 3 + i) for i in range(16)]
    tokps = throughput(server_url, prompts, 32)
    assert ScriptedServer.most_in_flight == 16
    assert sorted(tuple(b["prompt"]) for b in ScriptedServer.bodies) == sorted(prompts)
    body = ScriptedServer.bodies[0]
    assert body["model"] == "SmolLM2-135M-Instruct"
    assert (body["max_tokens"], body["min_tokens"], body["temperature"], body["ignore_eos"]) == (32, 32, 0.0, True)
    assert tokps > 16 * 32 / 5.0  # one round, not sixteen rounds of up to 5 s each
