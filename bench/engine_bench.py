"""The engine against plain ``generate``, on this machine. Run by hand, not in CI:

    .venv/bin/python bench/engine_bench.py            # the full run (about 10-15 minutes on 2 cores)
    .venv/bin/python bench/engine_bench.py --quick    # a smaller run (about 2-3 minutes)

Same model (the packaged SmolLM2-135M-Instruct), same prompts, greedy, fixed output lengths (EOS
ignored so every method does the same work). One load, one warm-up, then rounds in which the
methods run interleaved (A, B, C, A, B, C, ...); tables show the median over rounds.

1. All requests at once, concurrency 1/4/16/32: sequential ``generate`` per request, one static
   padded ``generate`` batch, the engine. Aggregate tokens/s, TTFT and TPOT p50/p95.
2. Poisson arrivals, output lengths uniform in 8..128: static batching (each batch takes what has
   arrived, runs to its longest reply) against the engine. Throughput and TTFT.
3. The roofline: weight bytes read per decode step against the measured memory bandwidth (a
   probe in this bench: the best of five ``torch.sum`` over a 512 MB fp32 buffer, far beyond the
   caches, on the bench's threads).
4. One conversation's turns, with and without the prefix cache.
5. fp32 against bf16 (``--dtypes``): the engine at concurrency 1 and 16, and its batch-1 step as
   a share of each dtype's roofline (bf16 reads half the bytes).
6. A running vLLM server (``--vllm-url``, e.g. ``python -m chatbot.vllm_server serve``) on the
   same jobs: 16 requests at once, greedy, EOS ignored.

The last two lines printed are ``engine_vs_vllm_16=<ratio>`` (``n/a (no vLLM server)`` without
``--vllm-url``) and ``engine_vs_sequential_16=<ratio>``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vllm_client import throughput as vllm_throughput  # noqa: E402
from conversations.inference.engine import Engine, load_engine  # noqa: E402
from conversations.inference.metrics import percentile  # noqa: E402
from conversations.inference.types import GenerationRequest, SamplingParams  # noqa: E402

MESSAGES = (
    "How do I reset my password? The reset email never arrives.",
    "My order arrived damaged, the box was crushed. What are my options?",
    "Can I change the delivery address of an order that has already shipped?",
    "Explain your refund policy for digital products.",
    "Hi! Do you ship to Canada, and how long does it take?",
    "I was charged twice for the same subscription this month. Please help.",
    "What is the difference between the basic and the premium plan?",
    "How can I delete my account and all my personal data?",
)


PREFIX_CACHE_TOKENS = 4096  # the worker's default (INFERENCE_PREFIX_CACHE_TOKENS)


@dataclass
class Timeline:
    """When each request arrived, and when each of its tokens came out."""

    arrivals: dict[str, float] = field(default_factory=dict)
    token_times: dict[str, list[float]] = field(default_factory=dict)

    def tokens(self) -> int:
        return sum(len(t) for t in self.token_times.values())

    def ttft(self) -> list[float]:
        return [times[0] - self.arrivals[r] for r, times in self.token_times.items() if times]

    def tpot(self) -> list[float]:
        return [(t[-1] - t[0]) / (len(t) - 1) for t in self.token_times.values() if len(t) > 1]

    def throughput(self) -> float:
        start = min(self.arrivals.values())
        end = max(t[-1] for t in self.token_times.values() if t)
        return self.tokens() / (end - start)

    def summary(self) -> dict[str, float]:
        ttft, tpot = self.ttft(), self.tpot()
        return {
            "tok/s": self.throughput(),
            "ttft_p50": percentile(ttft, 50) or 0.0,
            "ttft_p95": percentile(ttft, 95) or 0.0,
            "tpot_p50": percentile(tpot, 50) or 0.0,
            "tpot_p95": percentile(tpot, 95) or 0.0,
        }


@dataclass
class Job:
    request_id: str
    prompt: tuple[int, ...]
    new_tokens: int
    arrival: float = 0.0  # seconds after the start of the run


class StepClock(StoppingCriteria):
    """Timestamps every decoding step of ``generate`` (it is called once per new token)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def generate_batch(engine: Engine, jobs: list[Job]) -> list[list[float]]:
    """One padded ``generate`` call for all jobs; each job's token times (its own length counted)."""
    model, tokenizer = engine._adapters.model, engine.tokenizer
    longest = max(len(j.prompt) for j in jobs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Left padding, as generate wants for a decoder-only batch.
    input_ids = torch.tensor([[pad] * (longest - len(j.prompt)) + list(j.prompt) for j in jobs])
    attention_mask = torch.tensor([[0] * (longest - len(j.prompt)) + [1] * len(j.prompt) for j in jobs])
    steps = max(j.new_tokens for j in jobs)
    clock = StepClock()
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=steps,
            min_new_tokens=steps,
            pad_token_id=pad,
            stopping_criteria=StoppingCriteriaList([clock]),
        )
    return [clock.times[: j.new_tokens] for j in jobs]


def run_sequential(engine: Engine, jobs: list[Job]) -> Timeline:
    timeline = Timeline()
    start = time.perf_counter()
    for job in jobs:
        timeline.arrivals[job.request_id] = start
    for job in jobs:
        timeline.token_times[job.request_id] = generate_batch(engine, [job])[0]
    return timeline


def run_static_at_once(engine: Engine, jobs: list[Job]) -> Timeline:
    timeline = Timeline()
    start = time.perf_counter()
    for job in jobs:
        timeline.arrivals[job.request_id] = start
    for job, times in zip(jobs, generate_batch(engine, jobs), strict=True):
        timeline.token_times[job.request_id] = times
    return timeline


def run_static_staggered(engine: Engine, jobs: list[Job], max_batch: int = 32) -> Timeline:
    """Classic static batching: when idle, take whatever has arrived and run it to completion."""
    timeline = Timeline()
    start = time.perf_counter()
    pending = sorted(jobs, key=lambda j: j.arrival)
    while pending:
        now = time.perf_counter() - start
        if pending[0].arrival > now:
            time.sleep(pending[0].arrival - now)
            continue
        batch = [j for j in pending if j.arrival <= now][:max_batch]
        pending = [j for j in pending if j not in batch]
        for job, times in zip(batch, generate_batch(engine, batch), strict=True):
            timeline.arrivals[job.request_id] = start + job.arrival
            timeline.token_times[job.request_id] = times
    return timeline


def run_engine(engine: Engine, jobs: list[Job]) -> Timeline:
    timeline = Timeline()
    start = time.perf_counter()
    pending = sorted(jobs, key=lambda j: j.arrival)
    while pending or engine.has_work():
        now = time.perf_counter() - start
        while pending and pending[0].arrival <= now:
            job = pending.pop(0)
            timeline.arrivals[job.request_id] = start + job.arrival
            timeline.token_times[job.request_id] = []
            sampling = SamplingParams(
                temperature=0.0, repetition_penalty=1.0, max_new_tokens=job.new_tokens, ignore_eos=True
            )
            engine.submit(GenerationRequest(job.request_id, job.prompt, sampling))
        if not engine.has_work():
            time.sleep(max(0.0, pending[0].arrival - (time.perf_counter() - start)))
            continue
        chunks = engine.step()
        stamp = time.perf_counter()
        for chunk in chunks:
            times = timeline.token_times[chunk.request_id]
            times.extend([stamp] * (chunk.token_count - len(times)))
    return timeline


def median_summary(runs: list[Timeline]) -> dict[str, float]:
    summaries = [r.summary() for r in runs]
    return {key: statistics.median(s[key] for s in summaries) for key in summaries[0]}


def print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'':<28}{'tok/s':>9}{'ttft p50':>10}{'ttft p95':>10}{'tpot p50':>10}{'tpot p95':>10}")
    for label, s in rows:
        print(
            f"{label:<28}{s['tok/s']:>9.1f}{s['ttft_p50']:>9.3f}s{s['ttft_p95']:>9.3f}s"
            f"{s['tpot_p50'] * 1000:>8.1f}ms{s['tpot_p95'] * 1000:>8.1f}ms"
        )
    sys.stdout.flush()


class Prompts:
    """Chat prompts as the worker builds them: the model's system prompt, then a customer message.

    Every request gets a ticket number of its own at the start of its message, so two requests
    share only the system prompt, as two customers do. (Repeating the same eight prompts would let
    the engine's prefix cache skip whole prompts, which real traffic never allows.)
    """

    def __init__(self, engine: Engine) -> None:
        self.tokenizer = engine.tokenizer
        self.tickets = itertools.count(1000)

    def new(self, index: int) -> tuple[int, ...]:
        message = f"Ticket {next(self.tickets)}: {MESSAGES[index % len(MESSAGES)]}"
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
        return tuple(ids if isinstance(ids, list) else ids["input_ids"])


def jobs_at_once(prompts: Prompts, n: int, new_tokens: int, tag: str) -> list[Job]:
    return [Job(f"{tag}-{i}", prompts.new(i), new_tokens) for i in range(n)]


def jobs_poisson(prompts: Prompts, n: int, rate_per_s: float, seed: int) -> list[Job]:
    rng = random.Random(seed)
    t, jobs = 0.0, []
    for i in range(n):
        jobs.append(Job(f"p{seed}-{i}", prompts.new(rng.randrange(len(MESSAGES))), rng.randint(8, 128), arrival=t))
        t += rng.expovariate(rate_per_s)
    return jobs


def at_once(engine: Engine, prompts: Prompts, args: argparse.Namespace) -> dict[int, dict[str, dict]]:
    methods: dict[str, Callable[[Engine, list[Job]], Timeline]] = {
        "sequential generate": run_sequential,
        "static batched generate": run_static_at_once,
        "engine": run_engine,
    }
    results: dict[int, dict[str, dict]] = {}
    for concurrency in args.concurrency:
        runs: dict[str, list[Timeline]] = {name: [] for name in methods}
        for round_ in range(args.rounds):
            for name, method in methods.items():  # interleaved, so drift hits every method alike
                jobs = jobs_at_once(prompts, concurrency, args.new_tokens, f"c{concurrency}r{round_}{name[:3]}")
                runs[name].append(method(engine, jobs))
        results[concurrency] = {name: median_summary(r) for name, r in runs.items()}
        print_table(
            f"[1] all at once, concurrency {concurrency}, {args.new_tokens} new tokens each, median of {args.rounds}",
            list(results[concurrency].items()),
        )
    return results


def staggered(engine: Engine, prompts: Prompts, args: argparse.Namespace) -> dict[str, dict]:
    runs: dict[str, list[Timeline]] = {"static batching": [], "engine": [], "engine, no prefix cache": []}
    for round_ in range(args.rounds):
        jobs = jobs_poisson(prompts, args.poisson_requests, args.poisson_rate, seed=round_)
        runs["static batching"].append(run_static_staggered(engine, jobs))
        for name, tag, cache_tokens in (("engine", "e", PREFIX_CACHE_TOKENS), ("engine, no prefix cache", "n", 0)):
            engine.configure_prefix_cache(cache_tokens)  # empty: the run starts as cold as the others
            runs[name].append(
                run_engine(engine, [Job(j.request_id + tag, j.prompt, j.new_tokens, j.arrival) for j in jobs])
            )
        engine.configure_prefix_cache(PREFIX_CACHE_TOKENS)
    results = {name: median_summary(r) for name, r in runs.items()}
    print_table(
        f"[2] Poisson arrivals, {args.poisson_requests} requests at {args.poisson_rate}/s, "
        f"8..128 new tokens, median of {args.rounds}",
        list(results.items()),
    )
    return results


PERSONA = (
    "You are the assistant of Bramble & Finch, a homeware shop. Orders ship within two working days; "
    "express delivery takes one day and costs $9. Returns are free within 45 days of delivery, in the "
    "original packaging. Gift wrapping costs $4.50 per item. The shop in Leeds opens 9am to 6pm on "
    "weekdays and 9am to 2pm on Saturdays. Be brief and friendly, and never invent a policy."
)
CUSTOMER_TURNS = (
    "Hi, I ordered a teapot last week and it hasn't arrived yet.",
    "The order number is 48213. Can you check where it is?",
    "OK. If it arrives broken, can I send it back?",
    "And how much would gift wrapping have cost?",
)


def multi_turn(engine: Engine, rounds: int) -> dict[str, list[float]]:
    """Time to first token of each turn of one conversation, with the prefix cache and without.

    Turn k's prompt is the system prompt, the earlier turns with the engine's own replies, and the
    new message: the prefix cache computes only the reply and the new message since turn k-1.
    """
    results: dict[str, list[list[float]]] = {"prefix cache": [], "no prefix cache": []}
    sampling = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_new_tokens=48)
    for round_ in range(rounds):
        for name, cache_tokens in (("prefix cache", PREFIX_CACHE_TOKENS), ("no prefix cache", 0)):
            engine.configure_prefix_cache(cache_tokens)
            messages = [{"role": "system", "content": PERSONA}]
            ttfts = []
            for turn, text in enumerate(CUSTOMER_TURNS):
                messages.append({"role": "user", "content": text})
                ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
                prompt = tuple(ids if isinstance(ids, list) else ids["input_ids"])
                started = time.perf_counter()
                engine.submit(GenerationRequest(f"turn-{round_}-{name}-{turn}", prompt, sampling))
                reply = engine.step()  # the prefill: the first token comes out of it
                ttfts.append(time.perf_counter() - started)
                while engine.has_work():
                    reply += engine.step()
                messages.append({"role": "assistant", "content": "".join(c.text for c in reply).strip()})
            results[name].append(ttfts)
    medians = {
        name: [statistics.median(r[t] for r in runs) for t in range(len(CUSTOMER_TURNS))]
        for name, runs in results.items()
    }
    print(
        f"\n[4] one conversation, {len(CUSTOMER_TURNS)} turns, a {len(PERSONA.split())}-word system prompt: "
        f"time to first token per turn, median of {rounds}"
    )
    for name, values in medians.items():
        print(f"{name:<28}" + "".join(f"{v * 1000:>9.0f}ms" for v in values))
    sys.stdout.flush()
    return medians


def measure_bandwidth_gbs(size_mb: int = 512, repeats: int = 5) -> float:
    """Read bandwidth: the best of a few full reductions over a buffer far larger than the caches."""
    x = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def batch1_step_s(engine: Engine, prompt: tuple[int, ...], tokens: int = 32) -> float:
    """Median decode-step time of the engine with a single running reply."""
    sampling = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_new_tokens=tokens, ignore_eos=True)
    engine.submit(GenerationRequest("roofline", prompt, sampling))
    engine.step()  # the prefill
    times = []
    while engine.has_work():
        t = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def weight_bytes(engine: Engine) -> int:
    # Every parameter is read once per decode step; a tied embedding is one tensor, read by lm_head.
    return sum(p.numel() * p.element_size() for p in engine._adapters.model.parameters())


def roofline(engine: Engine, prompts: Prompts, at_once_results: dict[int, dict[str, dict]]) -> float:
    """Print section [3]; return the batch-1 step's share of the roofline."""
    model = engine._adapters.model
    bandwidth = measure_bandwidth_gbs()
    floor_s = weight_bytes(engine) / (bandwidth * 1e9)
    step_s = batch1_step_s(engine, prompts.new(0))
    print("\n[3] roofline (batch-1 decode is a memory-bound read of every weight)")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    dtype = next(model.parameters()).dtype
    threads = torch.get_num_threads()
    print(f"weight bytes per decode step   {weight_bytes(engine) / 1e6:8.1f} MB ({params:.1f} M params, {dtype})")
    print(f"measured read bandwidth        {bandwidth:8.1f} GB/s (torch sum over 512 MB, {threads} threads)")
    print(f"roofline floor, batch 1        {floor_s * 1000:8.1f} ms/token = {1 / floor_s:.1f} tok/s")
    print(
        f"measured engine step, batch 1  {step_s * 1000:8.1f} ms/token = {1 / step_s:.1f} tok/s "
        f"({floor_s / step_s:.0%} of the roofline)"
    )
    for concurrency, methods in at_once_results.items():
        tokps = methods["engine"]["tok/s"]
        print(
            f"engine at concurrency {concurrency:<3}     {tokps:8.1f} tok/s = {tokps * floor_s:.2f}x batch-1 roofline"
        )
    return floor_s / step_s


def engine_tokps(engine: Engine, prompts: Prompts, concurrency: int, args: argparse.Namespace, tag: str) -> float:
    """Median over rounds of the engine's tokens/s with ``concurrency`` requests at once."""
    runs = [
        run_engine(engine, jobs_at_once(prompts, concurrency, args.new_tokens, f"{tag}c{concurrency}r{r}"))
        for r in range(args.rounds)
    ]
    return median_summary(runs)["tok/s"]


def dtypes(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Section [5]: the same engine in each dtype, batch 1 and 16, and batch 1 against its roofline."""
    bandwidth = measure_bandwidth_gbs()
    results: dict[str, dict[str, float]] = {}
    for name in names:
        engine = load_engine("", device="cpu", dtype=name, threads=args.threads, max_running=32)
        prompts = Prompts(engine)
        run_engine(engine, jobs_at_once(prompts, 4, 4, f"warm-{name}"))
        floor_s = weight_bytes(engine) / (bandwidth * 1e9)
        step_s = batch1_step_s(engine, prompts.new(0))
        results[name] = {
            "c1": engine_tokps(engine, prompts, 1, args, name),
            "c16": engine_tokps(engine, prompts, 16, args, name),
            "mb": weight_bytes(engine) / 1e6,
            "floor_ms": floor_s * 1000,
            "step_ms": step_s * 1000,
            "share": floor_s / step_s,
        }
    print(f"\n[5] dtypes, {args.new_tokens} new tokens, median of {args.rounds}; bandwidth {bandwidth:.1f} GB/s")
    print(f"{'':<8}{'weights':>10}{'floor':>10}{'b1 step':>10}{'roofline':>10}{'c1 tok/s':>10}{'c16 tok/s':>11}")
    for name, r in results.items():
        print(
            f"{name:<8}{r['mb']:>8.0f}MB{r['floor_ms']:>8.1f}ms{r['step_ms']:>8.1f}ms{r['share']:>10.0%}"
            f"{r['c1']:>10.1f}{r['c16']:>11.1f}"
        )
    sys.stdout.flush()
    return results


def vllm(url: str, prompts: Prompts, new_tokens: int) -> dict[int, float]:
    """Section [6]: the vLLM server's tokens/s at concurrency 1 and 16, on jobs shaped like [1]'s."""
    vllm_throughput(url, [prompts.new(0)], 4)  # warm-up
    results = {n: vllm_throughput(url, [prompts.new(i) for i in range(n)], new_tokens) for n in (1, 16)}
    print(f"\n[6] vLLM at {url}, {new_tokens} new tokens, all at once")
    for n, tokps in results.items():
        print(f"vLLM, concurrency {n:<3}          {tokps:8.1f} tok/s")
    sys.stdout.flush()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1,4,16; 1 round; shorter replies")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--poisson-rates",
        default="2,8",
        help="arrival rates (requests/s) for [2], comma-separated: a light load, and one above the "
        "engine's capacity (a busy hour), where throughput measures the server, not the arrivals",
    )
    parser.add_argument("--only-staggered", action="store_true", help="run [2] alone")
    parser.add_argument("--dtype", default="auto", help="the engine's dtype in [1]-[4] (auto: as served)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="the dtypes [5] compares; empty skips [5]")
    parser.add_argument("--concurrency", default="", help="[1]'s concurrencies, e.g. 1,16 (16 is required)")
    parser.add_argument("--vllm-url", default="", help="a running vLLM server for [6], e.g. http://127.0.0.1:8100")
    args = parser.parse_args()
    default_concurrency = [1, 4, 16] if args.quick else [1, 4, 16, 32]
    args.concurrency = [int(c) for c in args.concurrency.split(",")] if args.concurrency else default_concurrency
    args.rounds = 1 if args.quick else 3
    args.new_tokens = 16 if args.quick else 32
    args.poisson_requests = 16 if args.quick else 32

    engine = load_engine(
        "",
        device="cpu",
        dtype=args.dtype,
        threads=args.threads,
        max_running=32,
        max_queue=256,
        prefix_cache_tokens=PREFIX_CACHE_TOKENS,
    )
    print(
        f"model {engine.model_name} · torch {torch.__version__} · {torch.get_num_threads()} threads · "
        f"rounds {args.rounds} · {next(engine._adapters.model.parameters()).dtype}"
    )
    prompts = Prompts(engine)
    warm = jobs_at_once(prompts, 4, 4, "warm")
    run_sequential(engine, warm[:1]), run_static_at_once(engine, warm), run_engine(engine, warm)

    results = {} if args.only_staggered else at_once(engine, prompts, args)
    stags = {}
    for rate in (float(r) for r in args.poisson_rates.split(",") if r):
        args.poisson_rate = rate
        # Enough requests to keep the arrivals going for about 16 s at any rate.
        args.poisson_requests = max(16 if args.quick else 32, int(16 * rate))
        stags[rate] = staggered(engine, prompts, args)
    if not args.only_staggered:
        batch1_share = roofline(engine, prompts, results)
        turns = multi_turn(engine, args.rounds)
        by_dtype = dtypes([d for d in args.dtypes.split(",") if d], args)
        by_vllm = vllm(args.vllm_url, prompts, args.new_tokens) if args.vllm_url else {}

    print()
    for concurrency, methods in results.items():
        ratio = methods["engine"]["tok/s"] / methods["static batched generate"]["tok/s"]
        print(f"engine_vs_static_{concurrency}={ratio:.2f}")
    for rate, stag in stags.items():
        throughput = stag["engine"]["tok/s"] / stag["static batching"]["tok/s"]
        bare = stag["engine, no prefix cache"]["tok/s"] / stag["static batching"]["tok/s"]
        print(
            f"staggered_{rate:g}_per_s_engine_vs_static_throughput={throughput:.2f} "
            f"(no prefix cache {bare:.2f}) "
            f"ttft_p50_static={stag['static batching']['ttft_p50']:.3f}s "
            f"ttft_p50_engine={stag['engine']['ttft_p50']:.3f}s "
            f"ttft_p50_engine_no_prefix_cache={stag['engine, no prefix cache']['ttft_p50']:.3f}s"
        )
    if args.only_staggered:
        return
    last_turn = turns["no prefix cache"][-1] / turns["prefix cache"][-1]
    print(f"multi_turn_last_turn_ttft_no_cache_vs_cache={last_turn:.2f}")
    print(f"batch1_roofline_share={batch1_share:.2f}")
    for name, r in by_dtype.items():
        print(
            f"batch1_roofline_share_{name}={r['share']:.2f} "
            f"engine_{name}_1={r['c1']:.1f} engine_{name}_16={r['c16']:.1f}"
        )
    if {"fp32", "bf16"} <= by_dtype.keys():
        print(f"bf16_vs_fp32_16={by_dtype['bf16']['c16'] / by_dtype['fp32']['c16']:.2f}")
    engine_16 = results[16]["engine"]["tok/s"]
    if by_vllm:
        print(f"vllm_1={by_vllm[1]:.1f} vllm_16={by_vllm[16]:.1f} engine_16={engine_16:.1f}")
        print(f"engine_vs_vllm_16={engine_16 / by_vllm[16]:.2f}")
    else:
        print("engine_vs_vllm_16=n/a (no vLLM server)")
    ratio = engine_16 / results[16]["sequential generate"]["tok/s"]
    print(f"engine_vs_sequential_16={ratio:.2f}")


if __name__ == "__main__":
    main()
