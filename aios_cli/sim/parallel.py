"""`aios sim parallel`: the cost model of tensor and pipeline parallelism (profilers.sim.parallel)
over a grid of layouts, with where TP stops paying per model, and optionally this machine's gloo
link measured against the model's all-reduce formula (profilers.sim.allreduce_bench)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .. import console
from ..errors import fail, guarded
from ..grid import parse_list
from ..outputs import check_format

FORMATS = ("table", "csv", "json", "md")
_SHAPE = "Model and layouts"
_HW = "Hardware (a model: see README)"
_WORK = "Work"
_OUT = "Output"
_VALIDATE = "Validation against measured runs"
MAX_TP = 64  # the crossover search goes up to here
MAX_DEGREE = 1024  # --tp and --pp: a bound that keeps a typo (--tp 100000000) from pricing forever

ROW_COLUMNS = ("model", "accelerator", "tp", "pp", "gpus", "gpus_per_node", "tp_link", "pp_link", "tp_valid",
               "memory_per_gpu_bytes", "fits", "context", "prompt_tokens",
               "decode_s", "decode_compute_s", "decode_allreduce_s", "decode_hops_s", "decode_bubble_s",
               "decode_other_s", "decode_bubble_fraction", "decode_bound",
               "prefill_s", "prefill_compute_s", "prefill_allreduce_s", "prefill_hops_s", "prefill_bubble_s",
               "prefill_other_s", "prefill_bubble_fraction", "prefill_bound", "prefill_microbatches",
               "crossover_tp", "estimate")


@guarded
def parallel(
    model: Annotated[str, typer.Option("--model", "-m", help="Model shapes, comma-separated: qwen2.5-0.5b, qwen2.5-7b, qwen2.5-72b (or any preset).", rich_help_panel=_SHAPE)] = "qwen2.5-0.5b,qwen2.5-7b,qwen2.5-72b",
    tp: Annotated[str, typer.Option("--tp", help="Tensor-parallel degrees, comma-separated.", rich_help_panel=_SHAPE)] = "1,2,4,8",
    pp: Annotated[str, typer.Option("--pp", help="Pipeline stages, comma-separated.", rich_help_panel=_SHAPE)] = "1",
    accelerator: Annotated[str, typer.Option("--accelerator", "-a", help="h100 or h200 (datasheet figures).", rich_help_panel=_HW)] = "h100",
    link: Annotated[str, typer.Option("--link", help="The link inside a node: nvlink, pcie, infiniband, ethernet or gloo.", rich_help_panel=_HW)] = "nvlink",
    inter_link: Annotated[str, typer.Option("--inter-link", help="The link between nodes (same choices).", rich_help_panel=_HW)] = "infiniband",
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs behind one intra-node link; a TP group larger than this crosses nodes.", rich_help_panel=_HW)] = 8,
    context: Annotated[int, typer.Option("--context", help="Decode: tokens already in the KV cache.", rich_help_panel=_WORK)] = 2048,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Prefill: tokens in the prompt.", rich_help_panel=_WORK)] = 2048,
    microbatches: Annotated[int, typer.Option("--microbatches", help="Prefill under PP: equal microbatches the prompt is cut into (GPipe).", rich_help_panel=_WORK)] = 8,
    measure_links: Annotated[bool, typer.Option("--measure-links", help="Measure gloo's all-reduce and send/recv between 2 ranks on this machine, fit a link, and show measured against fitted per message size (~10 s); --link gloo then uses the fit.", rich_help_panel=_WORK)] = False,
    validate: Annotated[bool, typer.Option("--validate", help="Check the model against measured runs here: from one rank's measured decode and this machine's measured gloo link, predict the time per token at TP=2 and PP=2, run both for real (gloo, 1 thread a rank, in turns with the one-rank run), and print prediction, measurement and error.", rich_help_panel=_VALIDATE)] = False,
    validate_model: Annotated[str, typer.Option("--validate-model", help="The preset --validate runs (its KV heads must split in 2).", rich_help_panel=_VALIDATE)] = "tiny-gqa",
    rounds: Annotated[int, typer.Option("--rounds", help="--validate: rounds of (link, one rank, TP=2, PP=2); medians over them.", rich_help_panel=_VALIDATE)] = 3,
    new_tokens: Annotated[int, typer.Option("--new-tokens", help="--validate: tokens each run decodes.", rich_help_panel=_VALIDATE)] = 24,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md: one row per model x layout.", rich_help_panel=_OUT)] = "table",
) -> None:
    """Estimate tensor- and pipeline-parallel inference on a cluster: per-token decode and
    prefill time per layout, broken into compute, TP all-reduces, pipeline hops and the bubble,
    and the TP degree where all-reduces cost more than they save. A model, not a measurement."""
    check_format(format, FORMATS)
    if validate:
        _validate(validate_model, rounds, new_tokens, format)
        return
    from profilers.sim import parallel as P
    from profilers.sim.links import ACCELERATORS, LINKS

    if measure_links and format == "csv":
        fail("--measure-links prints a second table, which CSV cannot hold — use -f table, md or json")
    names = parse_list(model, "--model", kind=str)
    cfgs = [P.shape(n) for n in names]
    tps, pps = parse_list(tp, "--tp"), parse_list(pp, "--pp")
    if accelerator not in ACCELERATORS:
        fail(f"unknown --accelerator {accelerator!r} — choose from: {', '.join(ACCELERATORS)}")
    for flag, v in (("--link", link), ("--inter-link", inter_link)):
        if v not in LINKS:
            fail(f"unknown {flag} {v!r} — choose from: {', '.join(LINKS)}")
    for flag, v, lo in (("--gpus-per-node", gpus_per_node, 1), ("--context", context, 0),
                        ("--prompt-tokens", prompt_tokens, 1), ("--microbatches", microbatches, 1)):
        if v < lo:
            fail(f"{flag} must be {lo} or more, got {v}")
    if microbatches > prompt_tokens:
        fail(f"--microbatches {microbatches} exceeds --prompt-tokens {prompt_tokens} — a microbatch needs a token")
    for cfg in cfgs:
        if max(pps) > cfg.num_layers:
            fail(f"--pp {max(pps)} exceeds {cfg.name}'s {cfg.num_layers} layers — use at most one stage per layer")
    for flag, vals in (("--tp", tps), ("--pp", pps)):
        if max(vals) > MAX_DEGREE:
            fail(f"{flag} {max(vals)} is more than this model prices — use at most {MAX_DEGREE}")

    measured = None
    links = dict(LINKS)
    if measure_links:
        from profilers.sim.allreduce_bench import measure_links as measure

        err = console.stderr()
        with err.status("measuring gloo all-reduce and send/recv between 2 ranks on this machine", spinner="dots"):
            measured = measure()
        links["gloo"] = measured["allreduce"]
    accel, intra, inter = ACCELERATORS[accelerator], links[link], links[inter_link]
    preds = [P.predict(cfg, t, p, accel, intra, inter, gpus_per_node, context=context, prompt_tokens=prompt_tokens,
                       microbatches=microbatches) for cfg in cfgs for p in pps for t in tps]
    cross = {cfg.name: (P.crossover(cfg, accel, intra, context=context, max_tp=MAX_TP),
                        P.crossover(cfg, accel, inter, context=context, max_tp=MAX_TP)) for cfg in cfgs}
    rows = [{**pr.row(), "crossover_tp": cross[pr.model][0].tp, "estimate": "model"} for pr in preds]
    if format == "csv":
        from profilers.export import csv_value, to_csv

        sys.stdout.write(to_csv([{k: csv_value(r.get(k)) for k in ROW_COLUMNS} for r in rows], ROW_COLUMNS))
        return
    if format == "json":
        from dataclasses import asdict

        out = {"estimate": "model", "accelerator": asdict(accel), "gpus_per_node": gpus_per_node,
               "intra_link": _link_json(intra), "inter_link": _link_json(inter),
               "rows": [{k: r.get(k) for k in ROW_COLUMNS} for r in rows],
               "crossover": [{"intra": a.row(), "inter": b.row()} for a, b in cross.values()],
               "measured": None if measured is None else _measured_json(measured)}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    md = format == "md"
    out = []
    if measured is not None:
        out += _measured_lines(measured, md)
    out += [_title(accel, intra, inter, gpus_per_node, context, prompt_tokens, microbatches, pps), ""]
    if md:
        out += _markdown(preds, links)
        out += [""] + [f"- {ln}" for ln in _crossover_lines(cross, gpus_per_node)] + [""] + [_notes(intra, inter)]
        sys.stdout.write("\n".join(out) + "\n")
        return
    c = console.stdout()
    for ln in out:
        c.print(ln, soft_wrap=True, highlight=False, markup=False)
    c.print(_table(preds, links))
    for ln in _crossover_lines(cross, gpus_per_node):
        c.print(ln, soft_wrap=True, highlight=False, markup=False)
    c.print(_notes(intra, inter), style="dim", soft_wrap=True, highlight=False, markup=False)


# --- presentation ---------------------------------------------------------------------------

def _t(s: float) -> str:
    from ..fmt import fmt_time

    return fmt_time(s)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def _short(name: str, links: dict) -> str:
    """A link's key in the table (nvlink, infiniband), or its name (a measured one)."""
    if not name:
        return "—"
    return next((k for k, ln in links.items() if ln.name == name), name)


def _title(accel, intra, inter, gpus_per_node, context, prompt_tokens, microbatches, pps) -> str:
    pp = f", {microbatches} microbatches under PP" if max(pps) > 1 else ""
    return (f"sim parallel · model (estimate) · {accel.name} ({accel.flops / 1e12:,.0f} TFLOP/s bf16, "
            f"{accel.hbm_bandwidth / 1e12:.3g} TB/s HBM, {accel.memory_bytes / 1e9:.0f} GB) · {gpus_per_node} GPU{'' if gpus_per_node == 1 else 's'} a node, "
            f"{intra.name} inside, {inter.name} between · decode: batch 1 over {context:,} cached tokens · "
            f"prefill: {prompt_tokens:,} tokens{pp}")


_HEADS = (("model", "left"), ("TP", "right"), ("PP", "right"), ("GPUs", "right"), ("TP over", "left"),
          ("PP over", "left"), ("decode/token", "right"), ("compute", "right"), ("all-reduce", "right"),
          ("hops", "right"), ("bubble", "right"), ("other", "right"), ("prefill", "right"), ("compute", "right"),
          ("all-reduce", "right"), ("hops", "right"), ("bubble", "right"), ("memory/GPU", "right"))
_PP_ONLY = {5, 9, 10, 15, 16}  # columns (by index) left out when no layout has a pipeline


def _columns(preds) -> list[int]:
    pipelined = any(pr.pp > 1 for pr in preds)
    return [i for i in range(len(_HEADS)) if pipelined or i not in _PP_ONLY]


def _d(s: float) -> str:
    """A part of a breakdown: `—` where it is nothing (no all-reduce at TP 1, no hop at PP 1)."""
    return "—" if s == 0 else _t(s)


def _cells(pr, links) -> list[str]:
    d, f = pr.decode, pr.prefill
    return [pr.model, f"{pr.tp}{'' if pr.tp_valid else ' ✗'}", str(pr.pp), str(pr.gpus), _short(pr.tp_link, links),
            _short(pr.pp_link, links), _t(d.total_s), _d(d.compute_s), _d(d.allreduce_s), _d(d.hops_s),
            _d(d.bubble_s), _d(d.other_s), _t(f.total_s), _d(f.compute_s), _d(f.allreduce_s), _d(f.hops_s),
            _d(f.bubble_s), f"{_gb(pr.memory_per_gpu_bytes)}{'' if pr.fits else ' ✗'}"]


def _table(preds, links):
    from rich import box
    from rich.table import Table

    cols = _columns(preds)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for i in cols:
        t.add_column(_HEADS[i][0], justify=_HEADS[i][1], no_wrap=True)
    last = None
    for pr in preds:
        if last is not None and pr.model != last:
            t.add_section()
        last = pr.model
        cells = _cells(pr, links)
        t.add_row(*(cells[i] for i in cols))
    return t


def _markdown(preds, links) -> list[str]:
    cols = _columns(preds)
    out = ["| " + " | ".join(_HEADS[i][0] for i in cols) + " |",
           "|" + "|".join("---" if _HEADS[i][1] == "left" else "---:" for i in cols) + "|"]
    for pr in preds:
        cells = _cells(pr, links)
        out.append("| " + " | ".join(cells[i] for i in cols) + " |")
    return out


def _crossover_lines(cross, gpus_per_node) -> list[str]:
    out = []
    for name, (a, b) in cross.items():
        if a.tp is None:
            at = f"TP keeps paying up to {a.max_tp} on {a.link}"
        else:
            at = (f"TP stops paying at {a.tp} on {a.link} (per layer at decode: all-reduce {_t(a.allreduce_s)} ≥ "
                  f"compute {_t(a.compute_s)})")
        across = f"across nodes on {b.link} at {b.tp}" if b.tp is not None else f"on {b.link} not up to {b.max_tp}"
        paying = "still pays" if a.tp is None or a.largest_valid < a.tp else f"past it; {a.largest_paying} still pays"
        kv = f"{a.valid[-1]}" if a.valid else "none"
        out.append(f"{name}: {at}; {across}. Real TP divides the KV heads: largest valid TP {kv} ({paying}).")
    return out


def _notes(intra, inter) -> str:
    return ("model (estimate): each layer max(FLOPs/peak, bytes/HBM) on 1/TP of the weights (a roofline with overlap); "
            "2 ring all-reduces of T·H·2 B a layer, 2(n−1)/n·B/bandwidth + 2(n−1)·latency; PP: a hop "
            "latency + B/bandwidth per stage boundary, and the busiest stage waits for the others (the bubble; "
            "decode at batch 1 waits (p−1)/p of the token); other = embedding, final norm, lm_head (replicated). "
            "✗ after TP: it does not divide the KV heads (real TP cannot run it; KV heads replicated here). "
            "✗ after memory: weights + KV cache exceed the GPU. "
            f"Links: {intra.name} {_bw(intra)}, {intra.latency * 1e6:.3g} µs a step ({intra.what}); "
            f"{inter.name} {_bw(inter)}, {inter.latency * 1e6:.3g} µs a step ({inter.what}).")


def _link_json(ln) -> dict:
    """A link as JSON: an unresolved (infinite) bandwidth is null, as JSON has no infinity."""
    import math
    from dataclasses import asdict

    return {**asdict(ln), "bandwidth": ln.bandwidth if math.isfinite(ln.bandwidth) else None}


def _measured_json(m: dict) -> dict:
    return {**{k: v for k, v in m.items() if k not in ("allreduce", "p2p")}, "allreduce": _link_json(m["allreduce"]),
            "p2p": _link_json(m["p2p"])}  # --validate's rounds add "in_pass": plain numbers


def _bw(ln) -> str:
    import math

    return f"{ln.bandwidth / 1e9:.3g} GB/s" if math.isfinite(ln.bandwidth) else "bandwidth unresolved"


def _measured_lines(m: dict, md: bool) -> list[str]:
    """Measured medians against the fitted link's prediction, per op and message size."""
    from ..fmt import fmt_bytes

    lb, la = m["load_before"][0], m["load_after"][0]
    head = (f"gloo over loopback, MEASURED on this machine: world {m['world']}, {m['threads']} thread a rank, "
            f"{m['cpus']} CPUs, load {lb:.2f} → {la:.2f}, {m['repeats']} repeats after {m['warmup']} warm-up, "
            f"{m['wall_s']:.1f} s" + ("" if m["correct"] else " · THE ALL-REDUCE RETURNED WRONG SUMS"))
    cols = ("op", "bytes", "median", "min", "max", "fit", "error")
    lines = [head, ""]
    rows = [[r["op"], fmt_bytes(r["bytes"]), _t(r["median_s"]), _t(r["min_s"]), _t(r["max_s"]), _t(r["fit_s"]),
             f"{r['error_pct']:+.0f}%"] for r in m["rows"]]
    if md:
        lines += ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]

        def line(cells) -> str:
            return "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        lines += [line(cols)] + [line(r) for r in rows]
    ar, p2p = m["allreduce"], m["p2p"]
    fitted = (f"fitted: all-reduce as a ring link {_bw(ar)}, {ar.latency * 1e6:.0f} µs a step (--link gloo uses it); "
              f"one hop {_bw(p2p)}, {p2p.latency * 1e6:.0f} µs")
    lines += ["", fitted, ""]
    return lines


# --- --validate -----------------------------------------------------------------------------

VALIDATE_COLUMNS = ("model", "layout", "predicted_s", "measured_s", "error_pct", "round_errors_pct", "measured_runs_s",
                    "compute_s", "comm_s", "outside_s", "rounds", "new_tokens", "threads_per_rank", "load_avg_1m")


def _validate(model: str, rounds: int, new_tokens: int, format: str) -> None:
    from engines.model.shards import tp_sizes

    from profilers.sim.parallel import shape
    from profilers.sim.validate import validate

    if rounds < 1 or new_tokens < 2:
        fail(f"--validate needs --rounds >= 1 and --new-tokens >= 2, got {rounds} and {new_tokens}")
    from engines.model.config import PRESETS

    if model not in PRESETS:
        fail(f"--validate-model runs a preset, got {model!r} — choose from: {', '.join(PRESETS)}")
    cfg = shape(model)
    if 2 not in tp_sizes(cfg):
        fail(f"--validate runs TP=2, which does not split {model}'s {cfg.num_kv_heads} KV heads evenly — "
             "use --validate-model tiny-gqa (or a preset with an even number of KV heads)")
    if cfg.num_layers < 2:
        fail(f"--validate-model {model} has one layer, so PP=2 cannot split it — choose another preset")
    err = console.stderr()
    with err.status(f"validating on {model}", spinner="dots") as st:
        v = validate(model, new_tokens=new_tokens, rounds=rounds, on_phase=lambda msg: st.update(f"validating on {model}: {msg}"))
    rows = [{**r, "model": model, "rounds": rounds, "new_tokens": new_tokens, "threads_per_rank": 1,
             "load_avg_1m": v["load_avg_1m"]} for r in v["rows"]]
    if format == "json":
        out = {**{k: v[k] for k in ("model", "new_tokens", "rounds", "threads_per_rank", "hidden_bytes", "load_avg_1m")},
               "rows": [{k: r.get(k) for k in VALIDATE_COLUMNS} for r in rows],
               "links": [_measured_json(m) for m in v["links"]]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    if format == "csv":
        from profilers.export import csv_value, to_csv

        sys.stdout.write(to_csv([{k: csv_value(r.get(k)) for k in VALIDATE_COLUMNS} for r in rows], VALIDATE_COLUMNS))
        return
    md = format == "md"
    cols = ("layout", "predicted", "measured", "error", "error by round", "measured by round")
    cells = [[r["layout"], _t(r["predicted_s"]) if r["predicted_s"] else "(the input)", _t(r["measured_s"]),
              f"{r['error_pct']:+.0f}%" if r["error_pct"] is not None else "",
              " ".join(f"{e:+.0f}%" for e in r["round_errors_pct"] if e is not None),
              " ".join(_t(x) for x in r["measured_runs_s"])] for r in rows]
    head = (f"the cost model against MEASURED runs: {model}, time per decode token (median of {rounds} rounds, "
            f"{new_tokens} tokens each, 1 thread a rank, gloo over loopback, load {v['load_avg_1m']:.2f})")
    us = lambda xs: ", ".join(f"{x * 1e6:.0f}" for x in xs) + " µs"  # noqa: E731
    inp = [m["in_pass"] for m in v["links"]]
    link = (f"links measured each round, {v['hidden_bytes']} bytes: as a pass meets them (after compute) an all-reduce "
            f"{us(m['allreduce']['median_s'] for m in inp)}, a hop {us(m['p2p']['median_s'] for m in inp)}; "
            f"back to back an all-reduce step {us(m['allreduce'].latency for m in v['links'])}, a hop "
            f"{us(m['p2p'].latency for m in v['links'])}")
    lines = [head, ""]
    if md:
        lines += ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
    else:
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
        lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in [list(cols)] + cells]
    lines += ["", link]
    out = console.stdout()
    for ln in lines:
        out.print(ln, soft_wrap=True, highlight=False, markup=False)
