"""The step record holds steps that emit 0..n tokens, in any phase, from any engine and rank.

A real run's decode passes are regrouped into synthetic speculative rounds (a `draft` step by a
draft engine that emits nothing, then a `verify` step by the target that emits the tokens of
several passes): the record must count the same tokens in the same time, slice the generated
ids by tokens emitted (not by steps), and carry the engine, rank and tokens of every step into
each export, with the CSV's columns only appended to. The oracle is the same run read as
one-token steps.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import replace

import numpy as np
import pytest

from engines import engine_class
from profilers import export
from profilers.harness import RunOptions, start_run
from profilers.probe import PHASES, Probe, Step

# The tidy CSV's columns before the step record was generalised: a contract for scripts.
COLUMNS_BEFORE = ("run_id", "backend", "model", "phase", "token_index", "layer", "op", "kind", "seconds", "flops",
                  "bytes", "aios_version", "git_commit", "python_version", "numpy_version", "numba_version",
                  "torch_version", "threads", "threads_source", "threading_layer", "load_avg_1m", "busy_cpus")


@pytest.fixture(scope="module")
def run(tiny):
    engine = engine_class("simd")(tiny)
    r = start_run(tiny, "simd", [1, 2, 3, 4], RunOptions(max_new_tokens=7, ignore_eos=True), engine=engine)
    for _ in r:
        pass
    return r


def merged(steps: list[Step], phase: str, engine: str, emitted: int) -> Step:
    """One step made of consecutive op-level passes: their laps end to end, their walls added."""
    offsets = np.cumsum([0] + [int(s.wall_s * 1e9) for s in steps[:-1]])
    return Step(phase, steps[0].token_index, sum(s.n_tokens for s in steps), steps[0].past,
                wall_s=sum(s.wall_s for s in steps), start_s=steps[0].start_s,
                layers=np.concatenate([s.layers for s in steps]), ops=np.concatenate([s.ops for s in steps]),
                starts_ns=np.concatenate([s.starts_ns + o for s, o in zip(steps, offsets)]),
                durs_ns=np.concatenate([s.durs_ns for s in steps]), op_counts=sum(s.op_counts for s in steps),
                emitted=emitted, engine=engine, rank=1)


def test_the_columns_are_only_appended_to():
    assert export.EVENT_COLUMNS[:len(COLUMNS_BEFORE)] == COLUMNS_BEFORE
    assert export.EVENT_COLUMNS[len(COLUMNS_BEFORE):] == ("engine", "rank", "emitted")


def test_a_run_of_one_token_steps_reads_as_before(run):
    rec = run.record()
    assert [s.emitted for s in rec.steps] == [1] * 7 and {s.engine for s in rec.steps} == {""}
    s = rec.summary()
    assert s["decode_tokens"] == 6 == len(rec.decode_steps)
    assert s["decode_tokens_per_s"] == pytest.approx(6 / sum(st.wall_s for st in rec.decode_steps))


def test_multi_token_steps_count_tokens_not_steps(run):
    one = run.record()
    pre, dec = one.steps[0], one.decode_steps
    # two rounds: a draft step by the drafter (emits nothing), then a verify step by the target
    # (emits the accepted tokens and one more); 4 + 2 tokens, the 6 the decode passes made
    rounds = [merged(dec[:1], "draft", "draft", 0), merged(dec[1:4], "verify", "target", 4),
              merged(dec[4:5], "draft", "draft", 0), merged(dec[5:], "verify", "target", 2)]
    run.steps[:] = [pre] + rounds
    try:
        rec = run.record()
    finally:
        run.steps[:] = [pre] + dec
    assert rec.generated_ids == one.generated_ids  # 1 + 0 + 4 + 0 + 2 tokens emitted
    run.steps[:] = [pre] + rounds[:2]
    try:
        assert run.record().generated_ids == one.generated_ids[:5]  # a run cut after its first round
    finally:
        run.steps[:] = [pre] + dec
    s, s1 = rec.summary(), one.summary()
    assert s["decode_tokens"] == s1["decode_tokens"] == 6
    assert s["decode_tokens_per_s"] == pytest.approx(s1["decode_tokens_per_s"])
    # per token: each round's wall (its draft included) over the tokens it emitted
    w = [st.wall_s for st in dec]
    per_token = [sum(w[:4]) / 4, sum(w[4:]) / 2]
    assert s["decode_ms_median"] == pytest.approx(statistics.median(per_token) * 1e3)
    assert (s["decode_ms_min"], s["decode_ms_max"]) == pytest.approx((min(per_token) * 1e3, max(per_token) * 1e3))
    assert s["barrier_time_share"] == pytest.approx(s1["barrier_time_share"])  # the same laps in the same time
    rows = list(csv.DictReader(io.StringIO("".join(export.events_csv_chunks([rec])))))
    assert tuple(rows[0]) == export.EVENT_COLUMNS
    by_phase = {}
    for row in rows:
        by_phase.setdefault(row["phase"], set()).add((row["engine"], row["rank"], row["emitted"]))
    assert by_phase == {"prefill": {("", "0", "1")}, "draft": {("draft", "1", "0")},
                        "verify": {("target", "1", "4"), ("target", "1", "2")}}
    # the per-op seconds are the same laps, regrouped
    secs = sum(float(r["seconds"]) for r in rows if r["op"] != "other" and r["phase"] != "prefill")
    assert secs == pytest.approx(sum(float(st.durs_ns.sum()) * 1e-9 for st in dec))
    tokens = rec.to_json()["tokens"]
    assert [(t["phase"], t["emitted"], t["engine"], t["rank"]) for t in tokens] == [
        ("prefill", 1, "", 0), ("draft", 0, "draft", 1), ("verify", 4, "target", 1), ("draft", 0, "draft", 1),
        ("verify", 2, "target", 1)]
    trace = json.loads(export.chrome_trace([rec]))
    lanes = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "thread_name"}
    # a lane pair per engine, named after it ("" is the run's one engine)
    assert sorted(lanes.values()) == ["ops", "ops · draft", "ops · target", "tokens", "tokens · draft",
                                      "tokens · target"]
    slices = sorted((e for e in trace["traceEvents"] if e["ph"] == "X" and lanes[e["tid"]].startswith("tokens")),
                    key=lambda e: e["ts"])
    assert [e["args"]["emitted"] for e in slices] == [1, 0, 4, 0, 2]
    assert [lanes[e["tid"]] for e in slices] == ["tokens", "tokens · draft", "tokens · target", "tokens · draft",
                                                 "tokens · target"]


def test_the_probe_labels_steps_and_takes_the_count_at_the_end():
    p = Probe("op", engine="target", rank=2)
    p.begin_step("verify", 5, 4, 10, emitted=0)
    p.lap(0, 1)
    st = p.end_step(emitted=3)
    assert (st.phase, st.emitted, st.engine, st.rank, len(st.ops)) == ("verify", 3, "target", 2, 1)
    p.begin_step("draft", 5, 1, 10, emitted=0, engine="draft")
    assert p.end_step().engine == "draft"
    with pytest.raises(ValueError, match="unknown phase"):
        p.begin_step("speculate", 0, 1, 0)
    assert {"prefill", "decode", "draft", "verify", "forward", "backward", "optimizer"} <= set(PHASES)


def test_a_step_copy_keeps_its_labels():
    st = replace(Step("verify", 0, 3, 0), emitted=2, engine="target", rank=1)
    assert (st.emitted, st.engine, st.rank) == (2, "target", 1)


def test_a_batched_step_records_the_tokens_it_emitted(tiny):
    from engines.batch.engine import BatchEngine

    be = BatchEngine(engine_class("torch")(tiny), num_blocks=16, block_size=4)
    for p in ([1, 2, 3], [4, 5], [6, 7, 8, 9]):
        be.add_request(p, 3)
    probe = Probe("op")
    be.set_lap(probe.lap)
    outs = []
    while be.has_unfinished():
        outs.append(be.step(probe))
    assert [o.probe_step.emitted for o in outs] == [len(o.tokens) for o in outs]
    assert sum(o.probe_step.emitted for o in outs) == 9 and {o.probe_step.phase for o in outs} == {"batch"}
