"""How many live chats the web tier holds: customers ramped up to a target, each sending a message at
once, and open idle sockets, per ASGI server and number of web processes, in one run. Run by hand,
not in CI (loopback only, bounded in count and time):

    .venv/bin/python bench/web_load.py [--databases sqlite,postgres] [--configs daphne:1,uvicorn:1,uvicorn:2]
        [--levels 100,200,300,500] [--idle 2000] [--mode ramped|burst] [--profile DIR]

For each database it makes a scratch one (an SQLite file, or a PostgreSQL database of its own next
to DATABASE_URL's, dropped at the end), the local Redis under a key prefix of its own, and a scripted
inference worker (a 7-word reply, ``--word-ms`` a word: the model costs nothing, so what is measured
is the web tier). For each configuration (server:processes) it starts the web tier as `serve` does
(chatbot/web.py) and, for each level of N customers:

  - ``ramped`` (default): the N customers open the page (their session) and the socket, ramped at
    ``--ramp-per-s``; once all are connected they each send one message at the same moment;
  - ``burst``: each opens the page and the socket and sends at once, all N together (issue 16's
    first table).

Figures, one line each: first chunk p50/p99 (the message sent to the reply's first text), gap p99
(between two frames of one reply's text), complete (replies finished in ``--timeout`` s), connect
p99, the CPU seconds and peak RSS of each web process and of the worker over the level, the client's
own CPU. Then ``--idle`` customers open a socket each and keep it open: the web processes' memory
with them, over the memory before. With ``--profile DIR`` a sampling profiler (py-spy) records the
web processes over the top level, and the top entries (own time, and time including callees) are
printed and written to DIR.

Each level also prints ``frames_p50_ms``: when each kind of frame first arrived after the send
(the customer's own message back, the pending reply, the first delta, the end), which tells the
web tier's share (the echo) from the worker's (echo to first delta).

The last lines compare configurations in this run with the first of each database:
``<config>_vs_<first>_capacity`` (the largest level that meets the targets: first chunk p99 <=
500 ms, gap p99 <= 150 ms, all complete) and ``<config>_vs_<first>_throughput`` (replies finished a
second at the top level). A ``base:SERVER:N`` configuration runs the code of an earlier commit,
checked out with ``git worktree add DIR REV`` and named with ``--baseline DIR``:

    git worktree add --detach ../base 622e452 && ln -s $PWD/.venv ../base/.venv
    .venv/bin/python bench/web_load.py --baseline ../base --configs base:daphne:1,daphne:1,uvicorn:1,uvicorn:2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatbot import web  # noqa: E402
from tests.e2e.live import LOOPBACK_LIMITS, free_port  # noqa: E402

REPLY = "Your parcel leaves our warehouse tomorrow morning."  # 7 words: 7 steps of the scripted engine
TARGET_FIRST_P99_S = 0.5
TARGET_GAP_P99_S = 0.15
MAX_CUSTOMERS = 3000  # bounded: loopback, one machine
MAX_IDLE = 5000

WORKER = """
import asyncio, os, signal, sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
django.setup()

from django.conf import settings

from conversations.inference.fake import FakeEngine
from conversations.worker import InferenceWorker

engine = FakeEngine(
    default_reply=os.environ["BENCH_REPLY"],
    step_delay_s=float(os.environ["BENCH_WORD_S"]),
    max_running=100000,
    max_queue=100000,
)
worker = InferenceWorker(engine, flush_ms=settings.CHAT_STREAM_FLUSH_MS)
worker.consumer = "bench-web-load"
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: worker.stop_event.set())
asyncio.run(worker.run())
"""


@dataclass
class Customer:
    connect_s: float | None = None
    first_s: float | None = None
    done_s: float | None = None
    gaps: list[float] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # the frames' types, for an error's report
    arrivals: dict[str, float] = field(default_factory=dict)  # each frame type's first, after sending
    error: str = ""


# --- the client: a page visit for the session, then the socket -----------------------------------


async def visit(host: str, port: int) -> str:
    """GET / as a browser would (HTTP/1.1, one connection); the Cookie header of the new session."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 200"):
        raise RuntimeError(f"GET / answered {head[0]!r}")
    cookies = [
        line.split(":", 1)[1].strip().split(";", 1)[0] for line in head[1:] if line.lower().startswith("set-cookie:")
    ]
    return "; ".join(cookies)


async def open_chat(base: str, host: str, port: int) -> Any:
    cookie = await visit(host, port)
    socket = await websockets.connect(
        f"ws://{host}:{port}/ws/chat/",
        additional_headers={"Cookie": cookie, "Origin": base},
        max_size=2**22,
        open_timeout=60,
        ping_interval=None,
    )
    history = json.loads(await socket.recv())
    if history.get("type") != "history":
        raise RuntimeError(f"expected the history frame, got {history.get('type')!r}")
    return socket


async def chat(socket: Any, customer: Customer, timeout: float) -> None:
    sent = time.perf_counter()
    await socket.send(json.dumps({"type": "message", "text": "Where is my parcel?", "client_id": uuid.uuid4().hex}))
    last: float | None = None
    deadline = sent + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), max(deadline - time.perf_counter(), 0.01)))
        now = time.perf_counter()
        kind = frame.get("type")
        customer.seen.append(str(kind))
        customer.arrivals.setdefault(
            f"{kind}:{frame.get('message', {}).get('role', '')}" if kind == "message" else str(kind), now - sent
        )
        if kind == "error":
            raise RuntimeError(f"refused: {frame.get('code')}")
        if kind == "delta":
            if customer.first_s is None:
                customer.first_s = now - sent
            elif last is not None:
                customer.gaps.append(now - last)
            last = now
        elif kind == "done":
            if last is not None:
                customer.gaps.append(now - last)
            customer.done_s = now - sent
            return


async def one_customer(
    base: str, host: str, port: int, go: asyncio.Event | None, connected: list[int], timeout: float
) -> Customer:
    customer = Customer()
    started = time.perf_counter()
    socket = None
    try:
        socket = await open_chat(base, host, port)
        customer.connect_s = time.perf_counter() - started
        connected[0] += 1
        if go is not None:
            await go.wait()
        await chat(socket, customer, timeout)
    except (TimeoutError, OSError, RuntimeError, websockets.exceptions.WebSocketException) as error:
        customer.error = f"{type(error).__name__}: {error}"[:160]
    finally:
        if socket is not None:
            await socket.close()
    return customer


async def run_level(args: argparse.Namespace, base: str, count: int, on_go: Any = None) -> list[Customer]:
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    connected = [0]
    if args.mode == "burst":
        tasks = [one_customer(base, host, port, None, connected, args.timeout) for _ in range(count)]
        return list(await asyncio.gather(*tasks))
    go = asyncio.Event()
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.ensure_future(one_customer(base, host, port, go, connected, args.timeout)))
        await asyncio.sleep(1 / args.ramp_per_s)
    deadline = time.monotonic() + args.timeout
    while connected[0] + sum(1 for t in tasks if t.done()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the last history frames and joins settle
    if on_go is not None:
        on_go()
    go.set()
    return list(await asyncio.gather(*tasks))


async def hold_idle(args: argparse.Namespace, base: str, count: int, measure: Any) -> tuple[int, Any]:
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    sockets: list[Any] = []

    async def open_one() -> None:
        try:
            sockets.append(await open_chat(base, host, port))
        except (TimeoutError, OSError, RuntimeError, websockets.exceptions.WebSocketException):
            pass

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.ensure_future(open_one()))
        await asyncio.sleep(1 / args.idle_ramp_per_s)
    await asyncio.gather(*tasks)
    await asyncio.sleep(2)
    figures = measure()
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    return len(sockets), figures


# --- the system -------------------------------------------------------------------------------------


class Database:
    def __init__(self, kind: str, scratch: Path) -> None:
        self.kind = kind
        self.name = f"web_load_{os.getpid()}"
        if kind == "sqlite":
            self.url = f"sqlite:///{scratch / 'web_load.sqlite3'}"
            return
        import psycopg

        server = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        self.admin = server
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = server.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        if self.kind != "postgres":
            return
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class System:
    def __init__(self, args: argparse.Namespace, database: Database, scratch: Path) -> None:
        self.prefix = f"bench-web-{uuid.uuid4().hex[:6]}"
        self.scratch = scratch
        self.env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "REDIS_KEY_PREFIX": self.prefix,
            "CHANNEL_PREFIX": self.prefix,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            **LOOPBACK_LIMITS,
            "INFERENCE_MAX_WAITING": "100000",
            "BENCH_REPLY": REPLY,
            "BENCH_WORD_S": str(args.word_ms / 1000),
            "PYTHONUNBUFFERED": "1",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        self.log = open(scratch / "system.log", "ab")  # noqa: SIM115 - lives as long as the system
        self.worker: subprocess.Popen[bytes] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start_web(self, server: str, processes: int, root: Path = ROOT) -> str:
        """The web tier and the scripted worker, both from the checkout at ``root`` (this one, or
        ``--baseline``'s)."""
        self.worker = subprocess.Popen(
            [sys.executable, "-c", WORKER], cwd=root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.port = free_port()
        command = web.command(host="127.0.0.1", port=self.port, processes=processes, server=server)
        self.web = subprocess.Popen(command, cwd=root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                    if json.load(response).get("worker_online"):
                        break
            except OSError:
                pass
            if self.web.poll() is not None:
                raise RuntimeError(f"the web server exited; see {self.scratch / 'system.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError("the web server or the worker did not come up")
            time.sleep(0.2)
        # uvicorn's supervisor starts its processes one by one: wait for all of them.
        while len(self.web_processes()) < processes and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        return base

    def web_processes(self) -> list[psutil.Process]:
        """The processes that serve (uvicorn's supervisor does not, when it has workers)."""
        assert self.web is not None
        parent = psutil.Process(self.web.pid)
        children = [
            c
            for c in parent.children(recursive=True)
            if "multiprocessing.resource_tracker" not in " ".join(c.cmdline())
        ]
        return children or [parent]

    def stop_web(self) -> None:
        if self.web is not None and self.web.poll() is None:
            self.web.send_signal(signal.SIGINT)
            try:
                self.web.wait(20)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait()

    def stop(self) -> None:
        self.stop_web()
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
            self.worker = None


# --- figures ------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def cpu_seconds(processes: list[psutil.Process]) -> list[float]:
    out = []
    for process in processes:
        try:
            times = process.cpu_times()
            out.append(times.user + times.system)
        except psutil.NoSuchProcess:
            out.append(float("nan"))
    return out


def rss_mb(processes: list[psutil.Process]) -> list[float]:
    out = []
    for process in processes:
        try:
            out.append(process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            out.append(float("nan"))
    return out


# Where a sample's time goes, by the innermost frame that names one of these (first match wins).
COMPONENTS = [
    ("JSON", ("json/", "orjson")),
    ("database (Django ORM, driver)", ("django/db/", "sqlite3", "psycopg")),
    ("Redis (channel layer, limits, stream)", ("channels_redis/", "redis/", "msgpack")),
    (
        "websocket and HTTP I/O (uvicorn, websockets, daphne)",
        ("websockets/", "uvicorn/", "daphne/", "autobahn/", "twisted/", "httptools", "asyncio/streams"),
    ),
    (
        "templates and pages (Django)",
        ("django/template", "django/core/handlers", "django/middleware", "django/contrib"),
    ),
    ("thread hops (asgiref)", ("asgiref/", "concurrent/futures")),
    ("our code", ("conversations/", "chatbot/", "finetuning/")),
    ("Channels (routing, consumers)", ("channels/",)),
]


def profile_summary(raw: Path, top: int = 15) -> str:
    """py-spy's collapsed stacks (``frame;frame;... count``): the share of samples by component (the
    innermost frame that names one), the top frames by own samples, and our functions by samples
    including what they call."""
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in {f for f in frames if any(p in f for p in ("conversations/", "chatbot/", "finetuning/"))}:
            ours[frame] += count
        part = next(
            (name for frame in reversed(frames) for name, marks in COMPONENTS if any(m in frame for m in marks)),
            "other (the event loop, the interpreter)",
        )
        parts[part] += count
    total = max(total, 1)
    lines = [f"{total} samples (only while holding the GIL)", "by component:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in parts.most_common()]
    lines.append("own time:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("our functions, including what they call:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in ours.most_common(top)]
    return "\n".join(lines)


def level_figures(customers: list[Customer]) -> dict[str, float]:
    firsts = [c.first_s for c in customers if c.first_s is not None]
    gaps = [g for c in customers for g in c.gaps]
    connects = [c.connect_s for c in customers if c.connect_s is not None]
    return {
        "first_chunk_p50_ms": 1000 * percentile(firsts, 0.5),
        "first_chunk_p99_ms": 1000 * percentile(firsts, 0.99),
        "gap_p99_ms": 1000 * percentile(gaps, 0.99),
        "connect_p99_ms": 1000 * percentile(connects, 0.99),
        "complete": sum(1 for c in customers if c.done_s is not None),
        # replies finished a second, from the messages going out to the last reply's end
        "throughput_per_s": len(dones) / max(dones) if (dones := [c.done_s for c in customers if c.done_s]) else 0.0,
    }


def meets_targets(figures: dict[str, float], count: int) -> bool:
    return (
        figures["complete"] == count
        and figures["first_chunk_p99_ms"] <= 1000 * TARGET_FIRST_P99_S
        and figures["gap_p99_ms"] <= 1000 * TARGET_GAP_P99_S
    )


def run_config(
    args: argparse.Namespace, system: System, label: str, server: str, processes: int, root: Path = ROOT
) -> tuple[int, float]:
    base = system.start_web(server, processes, root)
    webs = system.web_processes()
    worker = psutil.Process(system.worker.pid)  # type: ignore[union-attr]
    me = psutil.Process()
    capacity = 0
    rows = []
    try:
        for count in args.levels:
            profiler: list[subprocess.Popen[bytes]] = []
            at_go: list[list[float]] = []

            def go(
                count: int = count, profiler: list[subprocess.Popen[bytes]] = profiler, at_go: list[list[float]] = at_go
            ) -> None:
                """The messages go out: the connect phase's CPU ends here, the profile starts."""
                at_go.append(cpu_seconds(webs))
                if args.profile and count == max(args.levels):
                    raw = args.profile / f"{label}-{count}.txt"
                    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--gil"]
                    command += ["--rate", "250", "--output", str(raw), "--nonblocking", "--subprocesses"]
                    command += ["--pid", str(system.web.pid)]  # type: ignore[union-attr]
                    profiler.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
                    worker_raw = args.profile / f"{label}-{count}-worker.txt"
                    command = [*command[:-2], "--pid", str(system.worker.pid)]  # type: ignore[union-attr]
                    command[command.index("--output") + 1] = str(worker_raw)
                    profiler.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))

            before = cpu_seconds(webs), cpu_seconds([worker])[0], cpu_seconds([me])[0]
            started = time.perf_counter()
            customers = asyncio.run(run_level(args, base, count, go))
            wall = time.perf_counter() - started
            after = cpu_seconds(webs), cpu_seconds([worker])[0], cpu_seconds([me])[0]
            if at_go:
                connect_cpu = [b - a for a, b in zip(before[0], at_go[0], strict=True)]
                message_cpu = [b - a for a, b in zip(at_go[0], after[0], strict=True)]
                per_connect, per_message = 1000 * sum(connect_cpu) / count, 1000 * sum(message_cpu) / count
                print(f"{label} {count} web_cpu_ms_per_customer connect={per_connect:.1f} message={per_message:.1f}")
            for process in profiler:
                process.send_signal(signal.SIGINT)
                process.wait(30)
            if profiler:
                summary = profile_summary(args.profile / f"{label}-{count}.txt")
                (args.profile / f"{label}-{count}.top.txt").write_text(summary + "\n")
                print(f"# profile of {label} at {count} customers:\n{summary}")
                summary = profile_summary(args.profile / f"{label}-{count}-worker.txt")
                (args.profile / f"{label}-{count}-worker.top.txt").write_text(summary + "\n")
                print(f"# profile of the worker at {count} customers:\n{summary}")
            figures = level_figures(customers)
            web_cpu = [b - a for a, b in zip(before[0], after[0], strict=True)]
            name = f"{label} {count}"
            for key, value in figures.items():
                print(f"{name} {key}={value:.0f}")
            print(f"{name} web_cpu_s={'/'.join(f'{c:.1f}' for c in web_cpu)} over {wall:.1f} s")
            print(f"{name} web_rss_mb={'/'.join(f'{m:.0f}' for m in rss_mb(webs))}")
            print(f"{name} worker_cpu_s={after[1] - before[1]:.1f} client_cpu_s={after[2] - before[2]:.1f}")
            kinds = sorted({k for c in customers for k in c.arrivals})
            print(
                f"{name} frames_p50_ms "
                + " ".join(
                    f"{k}={1000 * percentile([c.arrivals[k] for c in customers if k in c.arrivals], 0.5):.0f}"
                    for k in kinds
                )
            )
            errors = Counter(c.error.split(":")[0] for c in customers if c.error)
            if errors:
                print(f"{name} errors={dict(errors)}")
                for failed in [c for c in customers if c.error][:3]:
                    print(f"{name}   {failed.error}; frames after sending: {' '.join(failed.seen) or 'none'}")
            rows.append((count, figures))
            if meets_targets(figures, count):
                capacity = max(capacity, count)
            time.sleep(2)
        if args.idle:
            idle_before = sum(rss_mb(webs))
            held, rss = asyncio.run(hold_idle(args, base, args.idle, lambda: rss_mb(webs)))
            extra = sum(rss) - idle_before
            print(f"{label} idle_sockets={held} web_rss_mb={sum(rss):.0f} (before {idle_before:.0f})")
            print(f"{label} idle_extra_mb={extra:.0f} per_socket_kb={1024 * extra / max(held, 1):.0f}")
    finally:
        system.stop()
    print(f"\n| {label} | first chunk p50 | first chunk p99 | gap p99 | complete |")
    print("|---|---|---|---|---|")
    for count, figures in rows:
        print(
            f"| {count} | {figures['first_chunk_p50_ms'] / 1000:.2f} s | {figures['first_chunk_p99_ms'] / 1000:.2f} s"
            f" | {figures['gap_p99_ms'] / 1000:.2f} s | {figures['complete']:.0f} |"
        )
    top = rows[-1][1] if rows else {}
    print(f"{label} capacity={capacity} throughput_per_s={top.get('throughput_per_s', 0):.1f}\n")
    return capacity, float(top.get("throughput_per_s", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite", help="comma-separated: sqlite, postgres")
    parser.add_argument("--configs", default="daphne:1,uvicorn:1,uvicorn:2", help="server:processes, comma-separated")
    parser.add_argument("--levels", default="100,200,300,500")
    parser.add_argument("--idle", type=int, default=2000, help="open idle sockets to hold (0: skip)")
    parser.add_argument("--mode", choices=("ramped", "burst"), default="ramped")
    parser.add_argument("--ramp-per-s", type=float, default=200.0, help="new customers a second while ramping")
    parser.add_argument("--idle-ramp-per-s", type=float, default=50.0, help="new idle sockets a second")
    parser.add_argument("--word-ms", type=float, default=10.0, help="the scripted worker's time per word")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a level may take")
    parser.add_argument("--profile", type=Path, default=None, help="record the top level with py-spy into DIR")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of an earlier commit (git worktree add DIR REV): base:SERVER:N configurations run from it",
    )
    parser.add_argument("--logs", type=Path, default=None, help="keep the database and the processes' log in DIR")
    args = parser.parse_args()
    args.levels = sorted(int(n) for n in args.levels.split(","))
    if max(args.levels) > MAX_CUSTOMERS or args.idle > MAX_IDLE:
        parser.error(f"at most {MAX_CUSTOMERS} customers a level and {MAX_IDLE} idle sockets (loopback, one machine)")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the web processes inherit it
    configs = []
    for item in args.configs.split(","):
        parts = item.split(":")
        baseline = parts[0] == "base"
        if baseline:
            parts = parts[1:]
            if args.baseline is None:
                parser.error(f"{item}: a base: configuration needs --baseline DIR")
        configs.append((parts[0], int(parts[1] if len(parts) > 1 else 1), baseline))
    results: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="web-load-") as tmp:
        scratch = args.logs or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        for kind in args.databases.split(","):
            database = Database(kind, scratch)
            system = System(args, database, scratch)
            try:
                for server, processes, baseline in configs:
                    label = f"{kind}-{'base-' if baseline else ''}{server}-x{processes}"
                    root = args.baseline if baseline else ROOT
                    results[label] = run_config(args, system, label, server, processes, root)
            finally:
                system.stop()
                database.drop()
    # The comparisons, last: each configuration against the first of its database, by the
    # largest level that met the targets and by the replies a second it finished at the top level.
    firsts: dict[str, tuple[str, tuple[int, float]]] = {}
    for label, (capacity, throughput) in results.items():
        kind = label.split("-", 1)[0]
        first_label, (first_capacity, first_throughput) = firsts.setdefault(kind, (label, (capacity, throughput)))
        if label == first_label:
            continue
        ratio = capacity / first_capacity if first_capacity else float("nan")
        print(f"{label}_vs_{first_label}_capacity={ratio:.2f}")
        ratio = throughput / first_throughput if first_throughput else float("nan")
        print(f"{label}_vs_{first_label}_throughput={ratio:.2f}")


if __name__ == "__main__":
    main()
