"""The cost model checked against measured runs: from one rank's measured decode (every op of
every layer, `aios run`'s own profile) and this machine's measured gloo link
(`allreduce_bench`), predict the end-to-end time per token of the same model at TP=2 and at
PP=2, then run those layouts for real (`profilers.dist_run`) and compare.

The prediction uses nothing from the runs it is compared with:
  TP=t   each layer's head- and MLP-split ops (projections, RoPE, attention, SiLU) take 1/t of
         their one-rank time, but no less than one rank running them on t threads: the t ranks
         of one host share its memory bus and its cores, so t ranks can go no faster than one
         rank with t threads (a memory-bound matmul cannot halve by splitting over the same
         DRAM; an op bound by dispatching it does not shrink at all). Its norms take their
         whole one-rank time. Plus 2 all-reduces a layer of the hidden state
         (`parallel.ring_allreduce_s`), the work outside the layers (embedding, final norm,
         lm_head, sampling: one rank's, replicated), and the sampled token's broadcast (one hop).
  PP=p   the layers' one-rank time (at batch 1 the stages run one after another: the bubble is
         (p-1)/p of every rank's time), plus p-1 hops of the hidden state (`parallel.p2p_s`),
         the work outside the layers, and the broadcast.
The links: the bandwidths fitted to back-to-back collectives (`measure_links`), the per-step
latencies measured as a pass meets them, after compute (`measure_in_pass`): a rank that
reaches a collective first blocks, and waking it costs this VM several times what the
back-to-back figure says (`pass_links`). Both are measured each round before the split runs.

The one-rank run and the split runs use one thread a rank, so a rank's compute is what the
one-rank profile measured; a second one-rank run on t threads gives the TP bound. The layouts
run in turns (one rank, the link, TP, PP, again), so a change in the machine's load touches all
of them; each figure is the median over the rounds.
"""

from __future__ import annotations

import statistics

import numpy as np

from engines.ops import OPS

from .parallel import p2p_s, ring_allreduce_s

# ops a tensor-parallel rank runs on its share of the heads or the MLP (the rest of a layer, the
# norms, runs whole on every rank)
SPLIT_OPS = ("qkv_proj", "qk_norm", "rope", "attn_scores", "attn_softmax", "attn_mix", "attention", "o_proj",
             "gate_up_proj", "silu_mul", "down_proj")
_SPLIT = np.array([op.name in SPLIT_OPS for op in OPS])
_COMM = np.array([op.kind == "comm" for op in OPS])


def decode_profile(rec) -> dict:
    """One rank's decode seconds per token: `split` and `whole` per layer, and `outside` (the
    ops outside the layers, and the time no op claimed)."""
    dec = [s for s in rec.decode_steps if s.durs_ns is not None]
    if not dec:
        raise ValueError("the one-rank run has no op-level decode steps")
    L = rec.config.num_layers
    split, whole, outside = np.zeros(L), np.zeros(L), 0.0
    for s in dec:
        secs = s.durs_ns * 1e-9
        inside = s.layers >= 0
        keep = ~_COMM[s.ops]  # a one-rank run's broadcast (to itself) is not work a split run repeats
        np.add.at(split, s.layers[inside & _SPLIT[s.ops] & keep], secs[inside & _SPLIT[s.ops] & keep])
        np.add.at(whole, s.layers[inside & ~_SPLIT[s.ops] & keep], secs[inside & ~_SPLIT[s.ops] & keep])
        outside += float(secs[~inside & keep].sum()) + max(0.0, s.wall_s - float(secs.sum()))
    n = len(dec)
    return {"split": split / n, "whole": whole / n, "outside": outside / n}


def predict_tp(prof: dict, prof_threads: dict, tp: int, hidden_bytes: float, allreduce_link, bcast_s: float) -> dict:
    """`prof`: one rank on one thread; `prof_threads`: one rank on `tp` threads."""
    split = np.maximum(prof["split"] / tp, prof_threads["split"])
    compute = float((split + prof["whole"]).sum())
    ar = 2 * len(prof["split"]) * ring_allreduce_s(hidden_bytes, tp, allreduce_link)
    return {"compute_s": compute, "comm_s": ar + bcast_s, "outside_s": prof["outside"],
            "total_s": compute + ar + bcast_s + prof["outside"]}


def predict_pp(prof: dict, pp: int, hidden_bytes: float, hop_link, bcast_s: float) -> dict:
    compute = float((prof["split"] + prof["whole"]).sum())
    comm = (pp - 1) * p2p_s(hidden_bytes, hop_link) + bcast_s
    return {"compute_s": compute, "comm_s": comm, "outside_s": prof["outside"],
            "total_s": compute + comm + prof["outside"]}


def pass_links(links: dict, nbytes: int):
    """The ring and hop links the prediction prices with: the bandwidths fitted back to back
    (`measure_links`), the per-step latencies from the collectives as a pass meets them
    (`measure_in_pass`: a rank blocked in a collective must be woken, which on this VM costs
    more than the transfer), solved from the ring and hop formulas at `nbytes`."""
    from .links import Link

    ar, p2p, inp = links["allreduce"], links["p2p"], links["in_pass"]
    ring_bytes = ring_allreduce_s(nbytes, 2, Link("", ar.bandwidth, 0.0, ""))
    ring = Link("gloo in a pass", ar.bandwidth, max(0.0, inp["allreduce"]["median_s"] - ring_bytes) / 2,
                "all-reduce: fitted bandwidth, latency as a pass meets it")
    hop = Link("gloo hop in a pass", p2p.bandwidth, max(0.0, inp["p2p"]["median_s"] - nbytes / p2p.bandwidth),
               "send/recv: fitted bandwidth, latency as a pass meets it")
    return ring, hop


def measured_token_s(records) -> float:
    """A distributed run's time per decode token: the slowest rank's mean (every rank waits on
    every token's broadcast, so they agree to within a lap)."""
    return max(sum(s.wall_s for s in r.decode_steps) / len(r.decode_steps) for r in records)


def validate(model: str = "tiny-gqa", layouts: tuple = ((2, 1), (1, 2)), new_tokens: int = 24, rounds: int = 3,
             prompt_ids: tuple = tuple(range(100, 116)), on_phase=None) -> dict:
    """Measure, predict, compare, in `rounds` rounds: each measures the link (the model's own
    message size among the sizes), then runs one rank and each layout; its predictions use its
    own link and one-rank profile. This machine's gloo latency drifts by 2x within minutes (a
    shared VM), so a link measured once would price runs made minutes later."""
    import os

    from engines.model.sources import open_model
    from engines.sampling import SamplingParams

    from ..dist_run import DistJob, spawn_run
    from ..harness import RunOptions
    from .allreduce_bench import DEFAULT_SIZES, measure_in_pass, measure_links

    say = on_phase or (lambda msg: None)
    cfg = open_model(model).config
    hidden_bytes = cfg.hidden_size * 4  # float32 activations on the CPU
    opts = RunOptions(max_new_tokens=new_tokens, sampling=SamplingParams(), warmup=True, ignore_eos=True)
    per_round, links_seen = [], []
    for i in range(rounds):
        got = {}
        wide = sorted({tp for tp, pp in layouts if tp > 1})  # one rank on t threads: the TP=t bound
        for key in ((1, 1), *((1, 1, t) for t in wide)):
            tp, pp, threads = (*key, 1)[:3]
            say(f"round {i + 1} of {rounds}: TP={tp} x PP={pp}" + (f", {threads} threads" if threads > 1 else ""))
            job = DistJob(model=model, backend="torch", prompt_ids=list(prompt_ids), opts=opts, tp=tp, pp=pp,
                          timeout_s=300)
            got[key] = spawn_run(job, threads=threads)
        prof = decode_profile(got[(1, 1)][0])
        layers = prof["split"] + prof["whole"]
        say(f"round {i + 1} of {rounds}: measuring gloo's all-reduce, send/recv and broadcast")
        links = measure_links(sizes_bytes=(hidden_bytes, *DEFAULT_SIZES[:3]), world=2, repeats=9)
        # and as a pass meets them: an all-reduce after half a layer's compute at TP=2, a hop
        # after a stage's compute at PP=2
        links["in_pass"] = measure_in_pass(hidden_bytes, float(layers.mean()) / 4, float(layers.sum()) / 2)
        links_seen.append(links)
        for key in layouts:
            tp, pp, threads = (*key, 1)[:3]
            say(f"round {i + 1} of {rounds}: TP={tp} x PP={pp}" + (f", {threads} threads" if threads > 1 else ""))
            job = DistJob(model=model, backend="torch", prompt_ids=list(prompt_ids), opts=opts, tp=tp, pp=pp,
                          timeout_s=300)
            got[key] = spawn_run(job, threads=threads)
        row = {(1, 1): {"measured_s": measured_token_s(got[(1, 1)]), "predicted_s": None,
                        "compute_s": float((prof["split"] + prof["whole"]).sum()), "comm_s": 0.0,
                        "outside_s": prof["outside"]}}
        ring, hop = pass_links(links, hidden_bytes)
        bcast = p2p_s(8, hop)  # one message to the one other rank
        for tp, pp in layouts:
            if pp == 1:
                pred = predict_tp(prof, decode_profile(got[(1, 1, tp)][0]), tp, hidden_bytes, ring, bcast)
            elif tp == 1:
                pred = predict_pp(prof, pp, hidden_bytes, hop, bcast)
            else:
                raise ValueError("validation predicts pure TP or pure PP layouts")
            row[(tp, pp)] = {"measured_s": measured_token_s(got[(tp, pp)]), "predicted_s": pred["total_s"],
                             **{k: pred[k] for k in ("compute_s", "comm_s", "outside_s")}}
        per_round.append(row)
    rows = []
    for tp, pp in ((1, 1), *layouts):
        rs = [r[(tp, pp)] for r in per_round]
        med = {k: statistics.median(r[k] for r in rs) for k in ("measured_s", "compute_s", "comm_s", "outside_s")}
        pred = None if tp * pp == 1 else statistics.median(r["predicted_s"] for r in rs)
        rows.append({"layout": "TP=1" if tp * pp == 1 else (f"TP={tp}" if pp == 1 else f"PP={pp}"), "tp": tp, "pp": pp,
                     "predicted_s": pred, **med,
                     "error_pct": None if pred is None else 100 * (pred - med["measured_s"]) / med["measured_s"],
                     "round_errors_pct": [None if pred is None else 100 * (r["predicted_s"] - r["measured_s"]) / r["measured_s"]
                                          for r in rs],
                     "measured_runs_s": [r["measured_s"] for r in rs]})
    return {"model": model, "new_tokens": new_tokens, "rounds": rounds, "threads_per_rank": 1,
            "hidden_bytes": hidden_bytes, "load_avg_1m": os.getloadavg()[0], "links": links_seen, "rows": rows}
