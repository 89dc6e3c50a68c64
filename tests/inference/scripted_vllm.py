"""A small OpenAI-compatible server of the tests' own, speaking the parts of vLLM's API the
``VllmEngine`` uses: ``/v1/models``, streamed ``/v1/completions`` (server-sent events), and the
runtime LoRA endpoints. Plain asyncio on a free port, in a thread, so the engine's real httpx
client talks real HTTP to it; it records every request and notices a client that hangs up.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    disconnected: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class ScriptedVllm:
    """``words``: what every completion streams, one word per event (``max_tokens`` cuts it short);
    ``delay_s`` between events; ``fail_completions``: a status and message to answer instead."""

    def __init__(
        self,
        *,
        model: str = "/models/SmolLM2-135M-Instruct",
        extra_models: tuple[str, ...] = (),
        max_model_len: int = 1024,
        words: tuple[str, ...] = ("Hello", " there", ",", " how", " can", " I", " help", "?"),
        delay_s: float = 0.0,
    ) -> None:
        self.model = model
        self.extra_models = extra_models
        self.max_model_len = max_model_len
        self.words = words
        self.delay_s = delay_s
        self.fail_completions: tuple[int, str] | None = None
        self.usage = True  # send continuous usage stats; False: the client must count events
        self.adapters: dict[str, str] = {}
        self.seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="scripted-vllm")
        self._thread.start()
        self._started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._started.set()
        self._loop.run_forever()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def completions(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/v1/completions"]

    # -- HTTP -------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        body = json.loads(raw) if raw else {}
        seen = Seen(path, body)
        self.seen.append(seen)
        try:
            if method == "GET" and path == "/v1/models":
                await self._json(writer, 200, self._models())
            elif path == "/v1/completions":
                await self._complete(reader, writer, seen)
            elif path == "/v1/load_lora_adapter":
                await self._load(writer, body)
            elif path == "/v1/unload_lora_adapter":
                await self._unload(writer, body)
            else:
                await self._json(writer, 404, {"error": {"message": f"no route {path}"}})
        except ConnectionError:
            seen.disconnected.set()
        finally:
            seen.finished.set()
            writer.close()

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    def _models(self) -> dict[str, Any]:
        models = [
            {"id": m, "object": "model", "max_model_len": self.max_model_len, "parent": None}
            for m in (self.model, *self.extra_models)
        ]
        models += [
            {"id": name, "object": "model", "parent": self.model, "root": path} for name, path in self.adapters.items()
        ]
        return {"object": "list", "data": models}

    async def _complete(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        body = seen.body
        if self.fail_completions is not None:
            status, message = self.fail_completions
            await self._json(writer, status, {"error": {"message": message, "code": status}})
            return
        if body.get("model") not in (self.model, *self.adapters):
            message = f"The model `{body.get('model')}` does not exist."
            await self._json(writer, 404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        await writer.drain()
        hangup = asyncio.ensure_future(reader.read(1))  # b"" once the client closes its end
        words = list(self.words[: int(body.get("max_tokens", 16))])
        prompt_tokens = len(body.get("prompt", []))
        for index, word in enumerate(words):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if hangup.done():
                seen.disconnected.set()
                return
            last = index == len(words) - 1
            reason = ("length" if len(words) < len(self.words) else "stop") if last else None
            event: dict[str, Any] = {"id": "cmpl-1", "object": "text_completion", "created": int(time.time())}
            event["choices"] = [{"index": 0, "text": word, "finish_reason": reason}]
            if self.usage:
                event["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": index + 1}
            writer.write(f"data: {json.dumps(event)}\n\n".encode())
            await writer.drain()
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        hangup.cancel()

    async def _load(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        name, path = body.get("lora_name", ""), body.get("lora_path", "")
        if name in self.adapters:
            await self._json(writer, 400, {"error": {"message": f"The lora adapter '{name}' has already been loaded."}})
        elif not (Path(path) / "adapter_config.json").is_file():
            message = f"Loading lora {name} failed: No adapter found for <path>"  # as vLLM 0.32 says it
            await self._json(writer, 404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
        else:
            self.adapters[name] = path
            await self._json(writer, 200, f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        name = body.get("lora_name", "")
        if self.adapters.pop(name, None) is None:
            await self._json(writer, 404, {"error": {"message": f"The lora adapter '{name}' cannot be found."}})
        else:
            await self._json(writer, 200, f"Success: LoRA adapter '{name}' removed successfully.")
