"""Exporters: tidy per-op CSV, summary CSV, JSON, Markdown and Chrome trace-event JSON of a
batch-1 run; the step CSV, request CSV and trace of a batched (serving) run; `to_csv` for any
table of rows.

The callers write them with `engines.files.atomic_write`: into a temporary file beside the
target, then renamed over it, so a reader never sees half a file and a failed run leaves
nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from typing import Iterable

from engines.ops import OPS

from .ranks import RANK_FIELDS
from .record import PROVENANCE_FIELDS, RunRecord
from .sysinfo import cpu_model

# One source of truth for the tidy per-op CSV (`aios run --csv FILE`, `aios top` export).
# Every row also says what made it (versions, threads, machine load), so files from several
# machines or versions can be concatenated.
# The step's engine (draft or target in a speculative run; empty with one engine), its rank in a
# distributed run, and the tokens it emitted (0..n) come last: columns are only ever appended.
EVENT_COLUMNS = ("run_id", "backend", "model", "phase", "token_index", "layer", "op", "kind", "seconds", "flops",
                 "bytes", *PROVENANCE_FIELDS, "engine", "rank", "emitted")

# A batched run (`aios bench throughput --steps-csv / --requests-csv`, `aios serve --csv /
# --requests-csv`, `aios top --serve`'s export): one row per engine step (then one `<op>_s`
# column per op that ran), and one row per request.
STEP_COLUMNS = ("step", "start_s", "wall_s", "schedule_s", "prefill_tokens", "decode_seqs", "running", "waiting",
                "blocks_used", "blocks_free", "preempted")
REQUEST_COLUMNS = ("mode", "id", "prompt_tokens", "output_tokens", "arrival_s", "first_token_s", "finished_s",
                   "ttft_ms", "tpot_ms", "e2e_ms", "preemptions", "cached_tokens", "finish_reason")

# `--format csv`: one row per backend, carrying the whole configuration (as llama-bench does)
# so rows from different machines can be concatenated.
SUMMARY_COLUMNS = (
    "run_id", "host", "cpu", "device", "backend", "model", "arch", "dtype", "quant", "weight_format",
    "bits_per_weight", "quant_dot", "profile", "num_layers", "hidden_size",
    "num_params", "sampling", "prompt_tokens", "new_tokens", "load_s", "jit_s", "ttft_s", "prefill_tokens_per_s",
    "decode_tokens", "decode_tokens_per_s", "decode_ms_median", "decode_ms_min", "decode_ms_max",
    "reduction_barriers_per_token", "barrier_time_share", "op_time_share", "decode_bytes_per_token",
    "achieved_bandwidth_bytes_per_s", "bandwidth_share_of_peak", "peak_rss_bytes", "weight_bytes",
    "kv_cache_bytes", "device_peak_bytes", *PROVENANCE_FIELDS,
    # --speculate: appended, empty without it
    "speculate", "spec_k", "acceptance_rate", "tokens_per_verify_step", "draft_s_per_token", "verify_s_per_token",
    "baseline_decode_tokens_per_s", "spec_speedup",
    # --tp / --pp: one row a rank (profilers.ranks), empty on one rank
    *RANK_FIELDS,
)


def csv_value(v):
    """A cell as the CSV exports write it: floats at full precision, NaN and None empty, a list
    as its items separated by spaces."""
    if isinstance(v, list):
        return " ".join(repr(x) for x in v)
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return "" if v is None else v


def to_csv(rows: list[dict], columns) -> str:
    """`rows` as CSV text with exactly `columns` (a missing or None cell is empty)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def machine_fields() -> dict:
    return {"host": platform.node(), "cpu": cpu_model()}


def summary_rows(records: Iterable[RunRecord]) -> list[dict]:
    m = machine_fields()
    return [{**m, **r.summary()} for r in records]


def summary_csv(records: Iterable[RunRecord]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in summary_rows(records):
        w.writerow({k: csv_value(row.get(k)) for k in SUMMARY_COLUMNS})
    return buf.getvalue()


def events_csv_chunks(records: Iterable[RunRecord]):
    """The tidy per-op CSV as text chunks (header, then one chunk per forward pass), for
    writing a long session without holding the whole file in memory."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EVENT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        for st_events in _events_by_step(r):
            for ev in st_events:
                ev["seconds"] = f"{ev['seconds']:.9f}"
                w.writerow(ev)
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _events_by_step(r: RunRecord):
    """r.events() grouped per forward pass (each ends with its `other` row)."""
    group = []
    for ev in r.events():
        group.append(ev)
        if ev["op"] == "other":
            yield group
            group = []
    if group:
        yield group


def to_json(records: list[RunRecord]) -> str:
    m = machine_fields()
    objs = [{**m, **r.to_json()} for r in records]
    return json.dumps(objs[0] if len(objs) == 1 else objs, indent=2, default=_json_default)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(type(o))


def chrome_trace(records: list[RunRecord]) -> str:
    """Trace-event JSON (opens in Perfetto / chrome://tracing): one process per backend (per rank
    of a distributed run, on one time axis), a
    `tokens` track with one slice per forward pass and an `ops` track with every op; a run with
    several engines (a speculative run's target and draft model) has the two tracks per engine,
    named after it. A draft model's ops carry no FLOPs or bytes: the record's costs are the
    target's shapes."""
    events: list[dict] = []
    shift = _rank_clock_shifts(records)
    for pid, r in enumerate(records, start=1):
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"{r.label} · {r.model}"}})
        lanes: dict[str, int] = {}
        for s in r.steps:
            if s.engine not in lanes:
                tid = 1 + 2 * len(lanes)
                lanes[s.engine] = tid
                suffix = f" · {s.engine}" if s.engine else ""
                events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": "tokens" + suffix}})
                events.append({"ph": "M", "pid": pid, "tid": tid + 1, "name": "thread_name", "args": {"name": "ops" + suffix}})
                events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
                events.append({"ph": "M", "pid": pid, "tid": tid + 1, "name": "thread_sort_index", "args": {"sort_index": tid + 1}})
        for s in r.steps:
            ts0 = s.start_s * 1e6 + shift[pid - 1]
            tid = lanes[s.engine]
            events.append({"ph": "X", "pid": pid, "tid": tid, "name": f"{s.phase} #{s.token_index}", "cat": s.phase,
                           "ts": ts0, "dur": s.wall_s * 1e6,
                           "args": {"n_tokens": s.n_tokens, "past": s.past, "reduction_barriers": s.barriers,
                                    "emitted": s.emitted, "engine": s.engine, "rank": s.rank}})
            if s.durs_ns is None:
                continue
            own = s.engine != "draft"  # the record's costs are its model's shapes
            c = r.step_costs(s)
            nbytes = c.event_bytes(s.layers, s.ops).tolist() if own else [None] * len(s.ops)
            for layer, op, start, dur, b in zip(s.layers.tolist(), s.ops.tolist(), s.starts_ns.tolist(),
                                                s.durs_ns.tolist(), nbytes):
                o = OPS[op]
                events.append({"ph": "X", "pid": pid, "tid": tid + 1, "name": o.name, "cat": o.kind,
                               "ts": ts0 + start / 1e3, "dur": dur / 1e3,
                               "args": {"layer": layer, "phase": s.phase, "token_index": s.token_index,
                                        "flops": int(c.flops[op]) if own else None, "bytes": int(b) if own else None}})
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms",
                       "otherData": {"tool": "aios", "runs": [r.run_id for r in records]}})


def _rank_clock_shifts(records: list[RunRecord]) -> list[float]:
    """Microseconds to add to each record's times so the ranks of a distributed run on one host
    share one time axis (their probes' origins are readings of one monotonic clock); zeros
    otherwise (other runs, or ranks on several hosts, whose clocks do not compare)."""
    dist = [r.meta.get("dist") for r in records]
    if not all(dist) or len({d.get("host") for d in dist}) != 1 or any("clock_origin_ns" not in d for d in dist):
        return [0.0] * len(records)
    first = min(d["clock_origin_ns"] for d in dist)
    return [(d["clock_origin_ns"] - first) / 1e3 for d in dist]


def steps_csv(run, ranks: list | None = None) -> str:
    """A batched run's steps (STEP_COLUMNS, then seconds per op that ran). `ranks`: the runs of
    every rank of a sharded engine instead, in rank order, each step row led by its rank."""
    runs = [run] if ranks is None else ranks
    ops = [op.name for op in OPS if any(op.name in s.op_seconds for r in runs for s in r.steps)]
    cols = ("rank",) * (ranks is not None) + STEP_COLUMNS + tuple(f"{o}_s" for o in ops)
    rows = []
    for rank, r in enumerate(runs):
        for s in r.steps:
            row = {"rank": rank, **{k: csv_value(getattr(s, k)) for k in STEP_COLUMNS}}
            row.update({f"{o}_s": csv_value(s.op_seconds.get(o, 0.0)) for o in ops})
            rows.append(row)
    return to_csv(rows, cols)


def request_row(mode: str, q) -> dict:
    """One request's `--requests-csv` row (REQUEST_COLUMNS)."""
    return {"mode": mode, "id": q.id, "prompt_tokens": q.prompt_tokens,
            "output_tokens": q.output_tokens, "arrival_s": csv_value(q.arrival_s),
            "first_token_s": csv_value(q.first_token_s), "finished_s": csv_value(q.finished_s),
            "ttft_ms": csv_value(None if q.ttft is None else q.ttft * 1e3),
            "tpot_ms": csv_value(None if q.tpot is None else q.tpot * 1e3),
            "e2e_ms": csv_value(None if q.e2e is None else q.e2e * 1e3),
            "preemptions": q.preemptions, "cached_tokens": q.cached_tokens,
            "finish_reason": q.finish_reason or ""}


def requests_csv_text(rows: list[dict]) -> str:
    """Rows made by `request_row` as the request CSV."""
    return to_csv(rows, REQUEST_COLUMNS)


def requests_csv(runs) -> str:
    """Every request of batched runs (each run's `mode` in the first column)."""
    return requests_csv_text([request_row(run.mode, q) for run in runs for q in run.requests])


def serving_trace(run, meta) -> str:
    """Chrome trace-event JSON: process 1 the engine's steps, process 2 one lane per request
    (waiting for its first token, then generating)."""
    ev = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": f"engine steps ({meta['backend']})"}},
          {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "requests"}}]
    us = 1e6
    for s in run.steps:
        ev.append({"ph": "X", "pid": 1, "tid": 0, "name": f"step {s.step}", "ts": s.start_s * us, "dur": s.wall_s * us,
                   "args": {"prefill_tokens": s.prefill_tokens, "decode_seqs": s.decode_seqs, "running": s.running,
                            "waiting": s.waiting, "blocks_used": s.blocks_used, "preempted": s.preempted}})
        ev.append({"ph": "C", "pid": 1, "name": "KV blocks used", "ts": s.start_s * us, "args": {"used": s.blocks_used}})
        ev.append({"ph": "C", "pid": 1, "name": "batch", "ts": s.start_s * us,
                   "args": {"running": s.running, "waiting": s.waiting}})
    for k, q in enumerate(run.requests):
        ev.append({"ph": "M", "pid": 2, "tid": k, "name": "thread_name", "args": {"name": q.id}})
        if q.first_token_s is not None:
            ev.append({"ph": "X", "pid": 2, "tid": k, "name": "to first token", "ts": q.arrival_s * us,
                       "dur": (q.first_token_s - q.arrival_s) * us, "args": {"prompt_tokens": q.prompt_tokens,
                                                                          "cached_tokens": q.cached_tokens}})
        if q.finished_s is not None and q.first_token_s is not None:
            ev.append({"ph": "X", "pid": 2, "tid": k, "name": "generating", "ts": q.first_token_s * us,
                       "dur": (q.finished_s - q.first_token_s) * us,
                       "args": {"output_tokens": q.output_tokens, "preemptions": q.preemptions}})
    return json.dumps({"traceEvents": ev, "displayTimeUnit": "ms"})
