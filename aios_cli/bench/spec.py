"""`aios bench spec`: what speculative decoding buys, per drafter and per k, against the same
generation without it, interleaved repetition by repetition (`profilers.spec_bench`), with
llama.cpp's prompt lookup beside it where a llama-cpp-python is at hand."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .. import console
from ..errors import fail, guarded
from ..outputs import check_format, print_rows
from ..grid import parse_list

FORMATS = ("table", "md", "csv", "json", "jsonl")
_GRID = "Grid (comma lists: every combination runs)"
_OUT = "Output"
COLUMNS = ("run_id", "started_at", "host", "cpu", "engine", "model", "backend", "quant", "workload", "drafter", "k",
           "draft_max",
           "n_gen", "repetitions", "threads", "baseline_tok_s_median", "baseline_tok_s_min", "baseline_tok_s_max",
           "spec_tok_s_median", "spec_tok_s_min", "spec_tok_s_max", "ratio_median", "ratio_min", "ratio_max",
           "acceptance_rate", "tokens_per_verify_step", "same_ids", "load_avg_1m", "aios_version", "git_commit",
           "threading_layer")
LLAMA_PYTHON_ENV = "AIOS_LLAMA_PYTHON"


@guarded
def spec(
    model: Annotated[str, typer.Option("--model", "-m", help="The target: a preset, a directory, a .gguf, or smollm2.", rich_help_panel=_GRID)] = "smollm2",
    backend: Annotated[str, typer.Option("--backend", "-b", help="simd or torch (the CPU engines; cuda on a GPU).", rich_help_panel=_GRID)] = "simd",
    drafters: Annotated[str, typer.Option("--drafters", "-d", help="--speculate values to measure, e.g. ngram,self:q4_0,exit:8,draft:MODEL.", rich_help_panel=_GRID)] = "ngram",
    spec_k: Annotated[str, typer.Option("--spec-k", "-k", help="Tokens drafted a round.", rich_help_panel=_GRID)] = "2,4,8",
    draft_max: Annotated[Optional[str], typer.Option("--draft-max", help="Also run adaptive k from each --spec-k up to these (as aios run --draft-max).", rich_help_panel=_GRID, show_default=False)] = None,
    workloads: Annotated[str, typer.Option("--workloads", "-w", help="code, text (edits: the answer repeats the prompt), open (an open question).", rich_help_panel=_GRID)] = "code,text,open",
    quant: Annotated[Optional[str], typer.Option("--quant", help="The target's weights (as aios run --quant); none: floats (self:q4_0's fp32 target).", rich_help_panel=_GRID, show_default=False)] = None,
    n_gen: Annotated[int, typer.Option("--n-gen", "-n", help="Tokens generated each time.", rich_help_panel=_GRID)] = 64,
    threads: Annotated[Optional[int], typer.Option("--threads", "-t", help="Threads for every pool (both sides, and the peer).", rich_help_panel=_GRID, show_default=False)] = None,
    repetitions: Annotated[int, typer.Option("--repetitions", "-r", help="Interleaved repetitions (median, min–max).", rich_help_panel=_OUT)] = 3,
    llama_python: Annotated[Optional[str], typer.Option("--llama-python", help=f"A python with llama-cpp-python (its own venv) for the llama.cpp peer; default ${LLAMA_PYTHON_ENV}.", rich_help_panel=_OUT, show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, md, csv, json or jsonl.", rich_help_panel=_OUT)] = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.", rich_help_panel=_OUT)] = False,
) -> None:
    """Speculative decoding against the same run without it: tok/s ratio per drafter, k and
    workload, greedy, interleaved repetitions; llama.cpp's prompt lookup beside it on the same
    GGUF where llama-cpp-python is installed (in its own venv)."""
    from profilers.threads import quiet_blas_pool

    quiet_blas_pool()  # before NumPy loads: idle BLAS workers must not spin through the decode
    from engines import check_backend, check_quant
    from engines.errors import UserError
    from engines.spec.drafters import check_speculate
    from profilers.spec_bench import WORKLOADS
    from profilers.threads import check_threads

    check_format(format, FORMATS)
    if not 1 <= repetitions <= 1000:
        fail(f"--repetitions must be between 1 and 1,000, got {repetitions}")
    if not 2 <= n_gen <= 4096:
        fail(f"--n-gen must be between 2 and 4,096, got {n_gen}")
    names = parse_list(drafters, "--drafters", str)
    ks = parse_list(spec_k, "--spec-k")
    maxes = parse_list(draft_max, "--draft-max") if draft_max is not None else []
    if any(m > 64 for m in maxes + ks):
        fail("--spec-k and --draft-max take at most 64")
    works = parse_list(workloads, "--workloads", str)
    for w in works:
        if w not in WORKLOADS:
            fail(f"unknown workload {w!r} — choose from: {', '.join(WORKLOADS)}")
    try:
        check_threads(threads)
        check_backend(backend, None)
        check_quant(backend, quant)
        for d in names:
            for k in ks:
                check_speculate(d, k, backend=backend)
    except UserError as e:
        fail(str(e))
    peer = llama_python or os.environ.get(LLAMA_PYTHON_ENV)
    from profilers.threads import setup

    plan = setup(threads)
    err = console.stderr()
    said_busy = console.say_busy(err, plan.busy_warning(), quiet)
    rows, peer_note = _measure(model, backend, quant, names, ks, maxes, works, n_gen, repetitions, plan, peer, err,
                               quiet)
    print_rows(rows, COLUMNS, format, markdown, _table)
    if peer_note and format in ("table", "md"):
        console.stdout().print(peer_note, soft_wrap=True)
    elif peer_note:  # even with --quiet: one line on why a column is missing
        err.print(peer_note, style="dim", soft_wrap=True)
    said_busy()


def _measure(model, backend, quant, names, ks, maxes, works, n_gen, repetitions, plan, peer, err, quiet):
    import time
    from contextlib import nullcontext

    from engines import engine_class
    from engines.model.sources import open_model
    from engines.model.tokenizer import encode
    from engines.sampling import SamplingParams
    from engines.spec.drafters import check_for_model, make_drafter
    from profilers.export import machine_fields
    from profilers.harness import new_run_id
    from profilers.spec_bench import WORKLOADS, SpecCase, run_workloads

    status = (lambda m: err.status(m, spinner="dots")) if not quiet else (lambda m: nullcontext())
    with status(f"opening {model}"):
        ckpt = open_model(model)
    if ckpt.tokenizer is None:
        fail(f"{model} has no tokenizer, and the workloads are text — pick a model with one")
    for d in names:
        check_for_model(d, ckpt)
    prompts = {w: encode(ckpt.tokenizer, WORKLOADS[w][1]) for w in works}
    engine_class(backend).preflight(ckpt.config, ckpt.name, None, quant or ckpt.quant)
    with status(f"loading {model} into {backend}"):
        kw = {"quant": quant} if quant is not None else {}
        engine = engine_class(backend)(ckpt, **kw)
        engine.warmup()
    sampling = SamplingParams(greedy=True)
    built = {}
    for d in names:
        with status(f"loading the drafter {d}"):
            built[d] = make_drafter(d, engine, sampling)
            if hasattr(built[d], "warmup"):
                built[d].warmup(prompts[works[0]][:8])
    cases = [SpecCase(d, k, m) for d in names for k in ks for m in [None, *(m for m in maxes if m > k)]]
    with status("warming up"):  # each path once, untimed
        run_workloads(engine, built, {w: p[:16] for w, p in prompts.items()}, cases, 4, 1, sampling)
    run_id, started = new_run_id("bench-spec"), time.strftime("%Y-%m-%dT%H:%M:%S")
    machine = machine_fields()
    progress = status("measuring")
    with progress as p:
        def on_rep(rep, w):
            if p is not None:
                p.update(f"repetition {rep + 1}/{repetitions}: {w}, the baseline and {len(cases)} configurations")

        base, series = run_workloads(engine, built, prompts, cases, n_gen, repetitions, sampling, on_rep)
    from profilers.harness import provenance

    common = {"run_id": run_id, "started_at": started, **machine, **provenance(backend, plan), "model": ckpt.name,
              "backend": backend, "quant": engine.weight_format, "n_gen": n_gen,
              "repetitions": repetitions, "threads": plan.threads}
    rows = [_row(common, "aios", w, c.drafter, c.k, base[w], series[w, c], c.draft_max) for w in works for c in cases]
    peer_rows, note = _peer(peer, ckpt, names, ks, works, n_gen, repetitions, plan.threads, common, status)
    return rows + peer_rows, note


def _row(common, engine, workload, drafter, k, base, ser, draft_max=None) -> dict:
    from profilers.spec_bench import med

    return {**common, "engine": engine, "workload": workload, "drafter": drafter, "k": k, "draft_max": draft_max,
            "baseline_tok_s_median": med(base), "baseline_tok_s_min": min(base), "baseline_tok_s_max": max(base),
            "spec_tok_s_median": med(ser.tok_s), "spec_tok_s_min": min(ser.tok_s), "spec_tok_s_max": max(ser.tok_s),
            "ratio_median": med(ser.ratios), "ratio_min": min(ser.ratios), "ratio_max": max(ser.ratios),
            "acceptance_rate": med(ser.acceptance), "tokens_per_verify_step": med(ser.per_verify),
            "same_ids": all(ser.same_ids)}


def _peer(python, ckpt, names, ks, works, n_gen, repetitions, threads, common, status):
    """llama.cpp's prompt lookup on the same GGUF, in its own interpreter; (rows, a one-line note)."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    from profilers.spec_bench import WORKLOADS, Series

    if "ngram" not in names:
        return [], None
    if not python:
        return [], (f"llama.cpp peer: skipped — no llama-cpp-python named (pass --llama-python PATH, the python of "
                    f"a venv that has it, or set {LLAMA_PYTHON_ENV})")
    if ckpt.kind not in ("gguf", "packaged") or ckpt.path is None:
        return [], "llama.cpp peer: skipped — the target is not a GGUF file, and llama.cpp reads only GGUF"
    req = {"gguf": str(ckpt.path), "prompts": {w: WORKLOADS[w][1] for w in works}, "ks": ks, "n_new": n_gen,
           "repetitions": repetitions, "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "request.json"
        f.write_text(json.dumps(req))
        with status("llama.cpp: the same workloads with and without prompt lookup"):
            try:
                out = subprocess.run([python, str(Path(__file__).resolve().parents[2] / "profilers" / "llama_peer.py"),
                                      str(f)], capture_output=True, text=True, timeout=3600)
            except (OSError, subprocess.TimeoutExpired) as e:
                return [], f"llama.cpp peer: skipped — {python} could not run it ({e})"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"llama.cpp peer: skipped — {python} failed: {last[:200]}"
    res = json.loads(out.stdout.strip().splitlines()[-1])
    rows = []
    for w in works:
        r = res["workloads"][w]
        for k in ks:
            ser = Series(tok_s=r["spec"][str(k)], ratios=[s / b for s, b in zip(r["spec"][str(k)], r["baseline"])],
                         same_ids=r["same_ids"][str(k)])
            rows.append(_row({**common, "quant": ckpt.quant or "", "threading_layer": "llama.cpp"},
                             f"llama.cpp {res['llama_cpp_python']}", w, "ngram", k, r["baseline"], ser))
    return rows, None


def _fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


_HEAD = ("engine", "workload", "drafter", "k", "baseline tok/s", "spec tok/s", "ratio", "accepted", "tok/verify",
         "same ids")


def _cells(r: dict) -> dict[str, str]:
    return {"engine": r["engine"], "workload": r["workload"], "drafter": r["drafter"],
            "k": str(r["k"]) if r.get("draft_max") is None else f"{r['k']}→{r['draft_max']}",
            "baseline tok/s": f"{_fmt(r['baseline_tok_s_median'])} [{_fmt(r['baseline_tok_s_min'])}–{_fmt(r['baseline_tok_s_max'])}]",
            "spec tok/s": f"{_fmt(r['spec_tok_s_median'])} [{_fmt(r['spec_tok_s_min'])}–{_fmt(r['spec_tok_s_max'])}]",
            "ratio": f"{_fmt(r['ratio_median'], 2)}x [{_fmt(r['ratio_min'], 2)}–{_fmt(r['ratio_max'], 2)}]",
            "accepted": "n/a" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.0%}",
            "tok/verify": _fmt(r["tokens_per_verify_step"], 2), "same ids": "yes" if r["same_ids"] else "NO"}


def _footer(rows: list[dict]) -> str:
    r = rows[0]
    load = f"; load average {r['load_avg_1m']:.2f} at the start" if r.get("load_avg_1m") is not None else ""
    return (f"{r['model']} on {r['backend']} ({r['quant']}), greedy, {r['n_gen']} tokens; median [min–max] over "
            f"{r['repetitions']} interleaved repetitions (the baseline, then each configuration); ratio: speculative "
            f"over baseline decode tok/s within a repetition; {r['threads']} threads, "
            f"{r.get('threading_layer') or ''}{load}; aios {r.get('aios_version')}"
            + (f" (git {r['git_commit']})" if r.get("git_commit") else ""))


def markdown(rows: list[dict]) -> str:
    out = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * 4 + "---:|" * (len(_HEAD) - 4)]
    out += ["| " + " | ".join(_cells(r)[h] for h in _HEAD) + " |" for r in rows]
    return "\n".join(out) + "\n\n" + _footer(rows) + "\n"


def _table(rows: list[dict]) -> None:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for h in _HEAD:
        t.add_column(h, justify="left" if h in ("engine", "workload", "drafter") else "right", no_wrap=True)
    for r in rows:
        c = _cells(r)
        t.add_row(*(c[h] for h in _HEAD))
    out = console.stdout()
    out.print("bench spec · speculative decoding against the same run without it", soft_wrap=True)
    out.print(t)
    out.print(_footer(rows), soft_wrap=True)
