"""Serving throughput: a workload of requests driven through the batched engine (or, as the
baseline, one request at a time through the batch-1 engine), and what it measured.

Workload (`synthetic`, `from_jsonl`): prompts of random ids or from a ShareGPT-style JSONL file,
lengths uniform over ranges, arrivals all at once (`rate=inf`) or a Poisson process at `rate`
requests per second (exponential gaps, seeded), as vLLM's benchmarks draw them.

Metrics (vLLM's names): over the run, from the first arrival to the last token,
  output tok/s = generated tokens / duration;  total tok/s = (prompt + generated) / duration;
and per request, each at p50/p90/p99:
  TTFT  first token - arrival;   TPOT  (finish - first token) / (output tokens - 1);
  ITL   every gap between two consecutive tokens of a request;   E2E  finish - arrival.
Per step: prefill tokens, decode sequences, running and waiting requests, KV blocks used and
free, the scheduler's seconds and, with a probe, seconds per op.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import UserError


@dataclass
class WorkItem:
    prompt_ids: list[int]
    max_new_tokens: int
    arrival_s: float  # offset from the start of the run


def parse_range(text: str, flag: str) -> tuple[int, int]:
    """`16:64` -> (16, 64); `32` -> (32, 32)."""
    parts = text.split(":")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or lo < 1 or hi < lo:
        raise UserError(f"{flag} takes A:B (whole numbers, 1 <= A <= B) or one number, got {text!r}",
                        f"e.g. {flag} 16:64")
    return lo, hi


def arrivals(n: int, rate: float, rng) -> np.ndarray:
    """Arrival offsets: all 0 for rate inf, else a Poisson process (exponential gaps, mean 1/rate)."""
    if math.isinf(rate):
        return np.zeros(n)
    return np.cumsum(rng.exponential(1.0 / rate, n))


def synthetic(n: int, input_len: tuple[int, int], output_len: tuple[int, int], rate: float, vocab_size: int,
              seed: int = 0, prefix_len: int = 0) -> list[WorkItem]:
    """Random prompts; with `prefix_len`, every prompt starts with the same `prefix_len` random
    ids (a shared system prompt, vLLM's ``--random-prefix-len``), before its own input_len ids."""
    rng = np.random.default_rng(seed)
    at = arrivals(n, rate, rng)
    prefix = [int(t) for t in np.random.default_rng((seed, 1)).integers(0, vocab_size, prefix_len)]
    out = []
    for i in range(n):
        p = int(rng.integers(input_len[0], input_len[1] + 1))
        o = int(rng.integers(output_len[0], output_len[1] + 1))
        out.append(WorkItem(prefix + [int(t) for t in rng.integers(0, vocab_size, p)], o, float(at[i])))
    return out


def from_jsonl(path: str, tokenizer, n: int, output_len: tuple[int, int] | None, rate: float, seed: int = 0,
               max_prompt: int | None = None) -> list[WorkItem]:
    """Requests from a JSONL file, one object a line: ShareGPT's ``{"conversations": [{"from":
    "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}`` (the first human turn is the
    prompt, the reply's token count the output length, as vLLM's benchmark takes them), or
    ``{"prompt": ..., "output_len": N}``. `output_len` overrides the lengths from the file."""
    from engines.model.tokenizer import encode

    if tokenizer is None:
        raise UserError("--dataset needs the model's tokenizer, and this model has none",
                        "use a model with a tokenizer, or --input-len for random prompts")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--dataset {path}: no such file", "give the path of a JSONL file")
    rng = np.random.default_rng(seed)
    items = []
    with p.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"--dataset {path}, line {lineno}: not JSON ({e.msg})",
                                "give one JSON object a line (ShareGPT conversations or prompt/output_len)")
            prompt, reply_len = _prompt_of(obj)
            if prompt is None:
                continue
            ids = encode(tokenizer, prompt)
            if not ids or (max_prompt and len(ids) > max_prompt):
                continue
            if output_len is not None:
                o = int(rng.integers(output_len[0], output_len[1] + 1))
            elif reply_len is not None:
                o = reply_len if isinstance(reply_len, int) else max(1, len(encode(tokenizer, reply_len)))
            else:
                o = 128
            items.append((ids, max(1, o)))
            if len(items) >= n:
                break
    if not items:
        raise UserError(f"--dataset {path}: no usable prompt in it",
                        "each line needs conversations with a human turn, or a prompt")
    at = arrivals(len(items), rate, rng)
    return [WorkItem(ids, o, float(a)) for (ids, o), a in zip(items, at)]


def _prompt_of(obj):
    if not isinstance(obj, dict):
        return None, None
    if isinstance(obj.get("prompt"), str):
        ol = obj.get("output_len")
        return obj["prompt"], ol if isinstance(ol, int) and ol > 0 else None
    conv = obj.get("conversations") or obj.get("conversation")
    if isinstance(conv, list):
        turns = [t for t in conv if isinstance(t, dict) and isinstance(t.get("value"), str)]
        for i, t in enumerate(turns):
            if t.get("from") in ("human", "user"):
                reply = turns[i + 1]["value"] if i + 1 < len(turns) else None
                return t["value"], reply
    return None, None


# --- results -------------------------------------------------------------------------------------

@dataclass
class RequestResult:
    id: str
    prompt_tokens: int
    output_tokens: int
    arrival_s: float  # all times: seconds since the start of the run
    first_token_s: float | None
    finished_s: float | None
    token_s: list[float]
    preemptions: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot(self) -> float | None:
        if self.output_tokens < 2 or self.finished_s is None:
            return None
        return (self.finished_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def e2e(self) -> float | None:
        return None if self.finished_s is None else self.finished_s - self.arrival_s

    @property
    def itl(self) -> list[float]:
        return list(np.diff(self.token_s)) if len(self.token_s) > 1 else []


@dataclass
class StepRecord:
    step: int
    start_s: float
    wall_s: float
    schedule_s: float
    prefill_tokens: int
    decode_seqs: int
    running: int
    waiting: int
    blocks_used: int
    blocks_free: int
    preempted: int
    op_seconds: dict = field(default_factory=dict)  # op name -> seconds (with a probe)
    items: int = 0  # requests the step computed tokens of


@dataclass
class ThroughputRun:
    mode: str  # batched | baseline
    requests: list[RequestResult]
    steps: list[StepRecord]
    duration_s: float
    preemptions: int = 0
    prefix_hits: int = 0
    prefix_lookups: int = 0
    kv_blocks: int = 0
    block_size: int = 0

    def summary(self) -> dict:
        out_tok = sum(r.output_tokens for r in self.requests)
        in_tok = sum(r.prompt_tokens for r in self.requests)
        d = self.duration_s or float("nan")
        s = {"mode": self.mode, "requests": len(self.requests), "duration_s": self.duration_s,
             "prompt_tokens": in_tok, "output_tokens": out_tok,
             "output_tokens_per_s": out_tok / d, "total_tokens_per_s": (in_tok + out_tok) / d,
             "request_throughput_per_s": len(self.requests) / d, "preemptions": self.preemptions,
             "prefix_cache_hit_rate": (self.prefix_hits / self.prefix_lookups) if self.prefix_lookups else None,
             "steps": len(self.steps), "kv_blocks": self.kv_blocks or None, "block_size": self.block_size or None}
        s["mean_batch_size"] = float(np.mean([st.running for st in self.steps])) if self.steps else 1.0
        s["max_batch_size"] = max((st.running for st in self.steps), default=1)
        s["max_blocks_used"] = max((st.blocks_used for st in self.steps), default=None)
        for name, vals in (("ttft", [r.ttft for r in self.requests]), ("tpot", [r.tpot for r in self.requests]),
                           ("itl", [x for r in self.requests for x in r.itl]),
                           ("e2e", [r.e2e for r in self.requests])):
            v = np.asarray([x for x in vals if x is not None], float)
            for p in (50, 90, 99):
                s[f"{name}_ms_p{p}"] = float(np.percentile(v, p) * 1e3) if v.size else None
            s[f"{name}_ms_mean"] = float(v.mean() * 1e3) if v.size else None
        return s


def warm_up(be, engine=None) -> None:
    """One untimed request through the batched engine (and, given `engine`, the batch-1 one):
    first-touch pages, allocator and kernel caches; the engine's counters start again."""
    from engines.generate import Generation
    from engines.sampling import SamplingParams

    be.add_request([0, 1, 2, 3], 2, request_id="warm-up")
    be.run_all()
    be.blocks.hits = be.blocks.lookups = 0
    be.scheduler.preemptions = 0
    be.steps = 0
    if engine is not None:
        g = Generation(engine, [0, 1, 2, 3], 2, engine.make_sampler(SamplingParams()))
        while not g.done:
            g.step()


def default_kv_blocks(work: list[WorkItem], block_size: int) -> int:
    """A pool for every request of `work` at its longest: no preemption unless the workload
    outgrows what fits at once."""
    return sum(-(-(len(w.prompt_ids) + w.max_new_tokens) // block_size) for w in work)


def run_batched(be, work: list[WorkItem], probe=None, on_step=None, realtime: bool = True,
                on_idle=None, id_prefix: str = "req-", agree=None) -> ThroughputRun:
    """Drive `work` through the batch engine `be`: each request is added when its arrival time
    comes (`realtime`; otherwise every request is there from the start), and steps run while any
    is unfinished; when the engine is idle and a request is still to come, the loop sleeps until
    it, calling `on_idle()` at least every 0.1 s of that wait. `agree(k)` (the ranks of a
    sharded engine: one clock decides) turns the count of requests this process has seen
    arrive into the count every rank adds."""
    order = sorted(range(len(work)), key=lambda i: work[i].arrival_s)
    reqs = [None] * len(work)
    steps: list[StepRecord] = []
    t0 = time.perf_counter()
    nxt = 0
    if probe is not None:
        be.set_lap(probe.lap)
    try:
        while nxt < len(order) or be.has_unfinished():
            now = time.perf_counter() - t0
            come = nxt
            while come < len(order) and (not realtime or work[order[come]].arrival_s <= now):
                come += 1
            if agree is not None:
                come = agree(come)
            while nxt < come:
                i = order[nxt]
                w = work[i]
                reqs[i] = be.add_request(w.prompt_ids, w.max_new_tokens, request_id=f"{id_prefix}{i}",
                                         arrival_s=t0 + (w.arrival_s if realtime else 0.0))
                nxt += 1
            if not be.has_unfinished():
                if on_idle is not None:
                    on_idle()
                time.sleep(min(0.1, max(0.0, work[order[nxt]].arrival_s - (time.perf_counter() - t0))))
                continue
            start = time.perf_counter() - t0
            out = be.step(probe)
            steps.append(step_record(out, start))
            if on_step is not None:
                on_step(out, steps[-1])
    finally:
        if probe is not None:
            be.set_lap(None)
    return batched_run(be, [r for r in reqs if r is not None], steps, t0)


def step_record(out, start_s: float) -> StepRecord:
    """A StepRecord of one `BatchEngine.step()` output that began `start_s` into the run."""
    from engines.ops import OPS

    ops = {}
    st = out.probe_step
    if st is not None and st.durs_ns is not None:
        secs = np.bincount(st.ops, weights=st.durs_ns * 1e-9, minlength=len(OPS))
        ops = {OPS[k].name: float(secs[k]) for k in np.nonzero(secs)[0]}
    return StepRecord(out.index, start_s, out.wall_s, out.schedule_s, out.scheduled.prefill_tokens,
                      out.scheduled.decode_seqs, out.running, out.waiting, out.blocks_used, out.blocks_free,
                      len(out.scheduled.preempted), ops, len(out.scheduled.items))


def batched_run(be, reqs, steps: list[StepRecord], t0: float) -> ThroughputRun:
    """The ThroughputRun of requests `reqs` served by `be` (times relative to `t0`)."""
    end = max((r.finished_s for r in reqs if r.finished_s is not None), default=t0)
    first = min((r.arrival_s for r in reqs), default=t0)
    results = [RequestResult(r.id, len(r.prompt_ids), len(r.output_ids), r.arrival_s - t0,
                             None if r.first_token_s is None else r.first_token_s - t0,
                             None if r.finished_s is None else r.finished_s - t0,
                             [t - t0 for t in r.token_s], r.preemptions, r.num_cached, r.finish_reason)
               for r in reqs]
    bm = be.blocks
    return ThroughputRun("batched", results, steps, end - first, be.scheduler.preemptions, bm.hits, bm.lookups,
                         bm.num_blocks, bm.block_size)


def run_baseline(engine, work: list[WorkItem], on_request=None, realtime: bool = True) -> ThroughputRun:
    """The same requests one at a time through the batch-1 engine (`engines.generate`), in order
    of arrival, each starting when it has arrived and the one before it has finished."""
    from engines.generate import Generation
    from engines.sampling import SamplingParams

    order = sorted(range(len(work)), key=lambda i: work[i].arrival_s)
    results: list[RequestResult | None] = [None] * len(work)
    t0 = time.perf_counter()
    for k, i in enumerate(order):
        w = work[i]
        if realtime:
            wait = w.arrival_s - (time.perf_counter() - t0)
            if wait > 0:
                time.sleep(wait)
        gen = Generation(engine, w.prompt_ids, w.max_new_tokens, engine.make_sampler(SamplingParams()))
        times = []
        while not gen.done:
            gen.step()
            times.append(time.perf_counter() - t0)
        arrival = w.arrival_s if realtime else 0.0
        results[i] = RequestResult(f"req-{i}", len(w.prompt_ids), len(gen.generated_ids), arrival, times[0], times[-1],
                                   times, 0, 0, "length" if len(gen.generated_ids) >= w.max_new_tokens else "stop")
        if on_request is not None:
            on_request(k + 1, len(order))
    res = [r for r in results if r is not None]
    end = max(r.finished_s for r in res)
    first = min(r.arrival_s for r in res)
    return ThroughputRun("baseline", res, [], end - first)
