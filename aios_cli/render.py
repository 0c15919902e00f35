"""Rich tables and Markdown for `aios run`. Several backends are shown side by side."""

from __future__ import annotations

from engines.ops import KINDS
from profilers.record import RunRecord

from .fmt import fmt_bytes, fmt_ms, fmt_num, fmt_pct, fmt_t


def summary_lines(r: RunRecord) -> list[tuple[str, str]]:
    s = r.summary()
    # decode: one statistic per line, said which — the rate and its ms/token are both the mean
    # (decode tokens over decode time); the per-token spread is its own line
    decode, spread = "n/a", "n/a"
    if s["decode_tokens_per_s"]:
        decode = (f"{fmt_num(s['decode_tokens_per_s'])} tok/s = {1e3 / s['decode_tokens_per_s']:.2f} ms/token "
                  f"(mean of {s['decode_tokens']} tokens)")
    if s["decode_ms_median"] is not None:
        spread = f"median {s['decode_ms_median']:.2f} ms (min {s['decode_ms_min']:.2f}, max {s['decode_ms_max']:.2f})"
    bw = "n/a (needs --profile op or token)"
    if s["achieved_bandwidth_bytes_per_s"] is not None:
        bw = f"{s['achieved_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s"
        if s["bandwidth_share_of_peak"] is not None:
            bw += f" ({fmt_pct(s['bandwidth_share_of_peak'])} of the NVML-clock peak {s['device_peak_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s)"
    barriers = "n/a (--profile none)"
    if s["reduction_barriers_per_token"] is not None:
        barriers = f"{s['reduction_barriers_per_token']:g}"
        if s["barrier_time_share"] is not None:
            barriers += f" ({fmt_pct(s['barrier_time_share'])} of decode time)"
    dev_mem = f"weights {fmt_bytes(s['weight_bytes'])}, KV cache {fmt_bytes(s['kv_cache_bytes'])}"
    if s["device_peak_bytes"] is not None:
        dev_mem += f", torch peak {fmt_bytes(s['device_peak_bytes'])}"
    lines = [
        ("backend", f"{r.backend} · {r.dtype} · {r.device}"),
        ("model", f"{r.model} ({r.config.arch}, {r.config.num_params() / 1e6:.1f}M params, {r.config.num_layers} layers)"),
        ("weights", f"{r.weight_format}, {r.bits_per_weight:.2f} bits/weight"
         + (f", {r.quant_dot} activations" if r.quant_dot else "") + (f" (--quant {r.quant})" if r.quant else "")
         if r.bits_per_weight is not None else r.weight_format or "n/a"),
        ("prompt / new tokens", f"{s['prompt_tokens']} / {s['new_tokens']}"),
        ("load · JIT", f"{fmt_t(s['load_s'])} · " + (fmt_t(s["jit_s"]) if s["jit_s"] is not None else
                                                      "n/a (no JIT, or --no-warmup)")),
        ("TTFT", fmt_t(s["ttft_s"])),
        ("prefill", f"{fmt_num(s['prefill_tokens_per_s'])} tok/s"),
        ("decode", decode),
        ("decode token time", spread),
        ("reduction barriers/token", barriers),
        ("bytes/decode token", fmt_bytes(s["decode_bytes_per_token"])),
        ("achieved bandwidth", bw),
        ("peak host RSS", fmt_bytes(s["peak_rss_bytes"])),
        ("engine memory", dev_mem),
        ("threads", f"{s['threads']} · {s['threading_layer']}" + (f" · load {s['load_avg_1m']:.2f}"
                                                                  if s["load_avg_1m"] is not None else "")),
        ("ops cover", f"{fmt_pct(s['op_time_share'])} of token time (rest: other)" if s["op_time_share"] is not None
         else "n/a (needs --profile op)"),
    ]
    if s["speculate"]:  # after the decode figures it explains
        at = next(i for i, (k, _) in enumerate(lines) if k == "decode token time") + 1
        lines.insert(at, ("speculation", speculation_line(s, r.meta["speculation"])))
    return lines


def speculation_line(s: dict, spec: dict) -> str:
    """A speculative run (its summary `s` and its `meta["speculation"]`): the drafter, how much
    the target kept, how long the accepted runs were, and where an emitted token's time went."""
    if not spec["verify_steps"]:
        return f"{s['speculate']} k={s['spec_k']}: nothing drafted (every token decoded alone)"
    hist = " ".join(f"{n}:{c}" for n, c in enumerate(spec["accepted_length_histogram"]))
    return (f"{s['speculate']} k={s['spec_k']}: {spec['accepted_tokens']} of {spec['drafted_tokens']} drafts kept "
            f"({fmt_pct(s['acceptance_rate'])}), {s['tokens_per_verify_step']:.2f} tokens per verify step over "
            f"{spec['verify_steps']}; accepted length:rounds {hist}; per emitted token "
            f"{s['draft_s_per_token'] * 1e3:.2f} ms drafting, {s['verify_s_per_token'] * 1e3:.2f} ms verifying"
            + (f"; {s['spec_speedup']:.2f}x the decode tok/s of the same run without it "
               f"({fmt_num(s['baseline_decode_tokens_per_s'])} tok/s, one run each"
               + ("" if spec.get("baseline_same_ids") else "; the ids differ") + ")"
               if s.get("spec_speedup") else ""))


def _layer_matrix(r: RunRecord, phase: str):
    tab = r.layer_table(phase)
    if tab is None:
        return None
    kinds = [i for i, k in enumerate(KINDS) if tab[:, i].any()]
    return tab, kinds


def print_tables(console, records: list[RunRecord], streamed: bool = True) -> None:
    """The run's tables. A tokenizer-less model's ids end them; so does the text when it was not
    streamed while it was generated (``--quiet``)."""
    from rich import box
    from rich.table import Table

    if len(records) == 1:
        r = records[0]
        t = Table(title="summary", show_header=False, title_justify="left")
        t.add_column(style="bold", no_wrap=True)
        t.add_column()
        for k, v in summary_lines(r):
            t.add_row(k, v)
        console.print(t)
        for phase in ("prefill", "decode"):
            m = _layer_matrix(r, phase)
            if m is None:
                continue
            tab, kinds = m
            unit = "ms for the prompt" if phase == "prefill" else "ms per token, mean"
            lt = Table(title=f"per layer · {phase} ({unit})", title_justify="left")
            lt.add_column("layer", justify="right", no_wrap=True)
            for i in kinds:
                lt.add_column(KINDS[i], justify="right")
            lt.add_column("total", justify="right", style="bold")
            lt.add_column("share", justify="right")
            total = tab.sum()
            for name, row in zip(r.layer_rows(), tab):
                lt.add_row(name, *[fmt_ms(row[i]) for i in kinds], fmt_ms(row.sum()), fmt_pct(row.sum() / total if total else None))
            console.print(lt)
        ops = r.op_table()
        if len(ops) > 1:
            ot = Table(title="per op · ms per decode token (mean) and for the prefill; † = reduction barrier",
                       title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
            for col in ("op", "kind", "calls", "decode", "share", "GFLOP/s", "GB/s", "prefill"):
                if col in ("op", "kind"):  # names must stay whole, even at 80 columns
                    ot.add_column(col, no_wrap=True)
                else:
                    ot.add_column(col, justify="right", no_wrap=True)
            for o in ops:
                ot.add_row(o["op"] + (" †" if o["barrier"] else ""), o["kind"], f"{o['calls_per_token']:g}",
                           fmt_ms(o["decode_s_per_token"]), fmt_pct(o["decode_share"]),
                           fmt_num(o["gflops_per_s"], ".2f"), fmt_num(o["gbytes_per_s"], ".1f"), fmt_ms(o["prefill_s"]))
            console.print(ot)
        _print_result(console, r, "", streamed)
        return

    # side by side
    t = Table(title="summary, side by side", title_justify="left")
    t.add_column("", style="bold")
    for r in records:
        t.add_column(r.label)
    lines = [summary_lines(r) for r in records]
    for i, (k, _) in enumerate(lines[0]):
        t.add_row(k, *[ln[i][1] for ln in lines])
    console.print(t)
    for phase, unit in (("prefill", "ms for the prompt"), ("decode", "ms per token, mean")):
        tabs = [(r, r.layer_table(phase)) for r in records]
        tabs = [(r, tab) for r, tab in tabs if tab is not None]
        if not tabs:
            continue
        used = [i for i in range(len(KINDS)) if any(tab[:, i].any() for _, tab in tabs)]
        lt = Table(title=f"per layer · {phase} ({unit})", title_justify="left")
        lt.add_column("layer", justify="right", no_wrap=True)
        lt.add_column("backend", no_wrap=True)
        for i in used:
            lt.add_column(KINDS[i], justify="right")
        lt.add_column("total", justify="right", style="bold")
        for j, name in enumerate(records[0].layer_rows()):
            for k, (r, tab) in enumerate(tabs):
                lt.add_row(name if k == 0 else "", r.label, *[fmt_ms(tab[j, i]) for i in used], fmt_ms(tab[j].sum()),
                           end_section=k == len(tabs) - 1)
        console.print(lt)
    ot = Table(title="per op · decode (ms per token, mean)", title_justify="left")
    ot.add_column("op", no_wrap=True, min_width=12)
    for r in records:
        ot.add_column(r.label, justify="right")
    per = [{o["op"]: o for o in r.op_table()} for r in records]
    names = list(dict.fromkeys(o["op"] for p in per for o in p.values()))  # ranks differ: recv, send, embed
    for name in names:
        ot.add_row(name, *[fmt_ms(p[name]["decode_s_per_token"]) if name in p else "" for p in per])
    console.print(ot)
    if records[0].meta.get("dist"):  # the ranks of one run: one result
        _print_result(console, records[0], "", streamed)
        return
    for r in records:
        _print_result(console, r, f"[{r.backend}] ", streamed)


def _print_result(console, r: RunRecord, label: str, streamed: bool) -> None:
    from rich.text import Text

    from .errors import printable

    if r.text is None:
        console.print(f"{label}generated ids: {r.generated_ids}", markup=False)
    elif not streamed:  # a vocabulary may hold escape sequences: shown on a terminal, not obeyed
        text = printable(r.text, keep="\n\t") if console.file.isatty() else r.text
        console.print(Text(f"{label}text: {text}"))


def markdown(records: list[RunRecord]) -> str:
    out = []
    lines = [summary_lines(r) for r in records]
    out.append("| | " + " | ".join(r.label for r in records) + " |")
    out.append("|---|" + "---|" * len(records))
    for i, (k, _) in enumerate(lines[0]):
        out.append(f"| {k} | " + " | ".join(ln[i][1] for ln in lines) + " |")
    out.append("")
    out.append("| op | kind | " + " | ".join(f"{r.label} decode ms/token" for r in records) + " |")
    out.append("|---|---|" + "---:|" * len(records))
    per = [{o["op"]: o for o in r.op_table()} for r in records]
    for o in records[0].op_table():
        out.append(f"| {o['op']} | {o['kind']} | " + " | ".join(
            fmt_ms(p[o["op"]]["decode_s_per_token"]) if o["op"] in p else "" for p in per) + " |")
    out.append("")
    out.append("| layer | " + " | ".join(f"{r.label} decode ms/token" for r in records) + " |")
    out.append("|---|" + "---:|" * len(records))
    tabs = [r.layer_table("decode") for r in records]
    for j, name in enumerate(records[0].layer_rows()):
        out.append(f"| {name} | " + " | ".join(fmt_ms(t[j].sum()) if t is not None else "n/a" for t in tabs) + " |")
    return "\n".join(out) + "\n"


def print_ranks(console, records: list[RunRecord]) -> None:
    """A distributed run's ranks: what each holds, and its decode time per token split into its
    own compute and each kind of communication; then how even the work was."""
    from profilers.ranks import rank_row

    d = records[0].meta["dist"]
    rank_table(console, [rank_row(r) for r in records],
               f"ranks · TP={d['tp']} x PP={d['pp']} over {d['collectives']} (decode, ms per token, mean)",
               "token", "decode_s_per_token", "compute_s_per_token", "{}_s_per_token", "decode time",
               batch1_bubble(d["pp"]))


def batch1_bubble(pp: int) -> str | None:
    """What a pipeline of `pp` stages idles at batch 1 by its bubble alone (None without stages)."""
    if pp < 2:
        return None
    return f"a {pp}-stage pipeline at batch 1 idles {fmt_pct((pp - 1) / pp)} by its bubble, (p-1)/(m+p-1) with m=1"


def rank_table(console, rows: list[dict], title: str, per: str, wall: str, compute: str, op_field: str,
               of: str, bubble: str | None) -> None:
    """Ranks side by side (`profilers.ranks` rows): what each holds, its time `per` unit (the
    rows' `wall` field) split into `compute` and each collective (`op_field` with the op's
    name), then the balance line, `bubble` (what the pipeline's bubble alone would idle) after it."""
    from rich.table import Table

    from profilers.ranks import balance

    t = Table(title=title, title_justify="left")
    for col in ("rank", "stage·tp", "layers", "weights sharded + replicated", "KV cache", per, "compute",
                "allreduce", "send", "recv", "broadcast", "comm share"):
        t.add_column(col, justify="left" if col in ("rank", "layers", "weights sharded + replicated") else "right",
                     no_wrap=True)
    for r in rows:
        lo, hi = r["layers"] or (0, 0)
        t.add_row(f"{r['rank']}" + (" (samples)" if r["head"] else ""), f"{r['stage']}·{r['tp_rank']}",
                  f"{lo}-{hi - 1}" if hi > lo else "-",
                  f"{fmt_bytes(r['sharded_weight_bytes'])} + {fmt_bytes(r['replicated_weight_bytes'])}",
                  fmt_bytes(r["kv_cache_bytes"]), fmt_ms(r[wall]), fmt_ms(r[compute]),
                  *[fmt_ms(r[op_field.format(op)]) if r[op_field.format(op)] else "-"
                    for op in ("allreduce", "send", "recv", "broadcast")],
                  fmt_pct(r["comm_share"]))
    console.print(t)
    b = balance(rows, compute, wall)
    if b["imbalance"] is not None:
        console.print(f"compute imbalance (slowest rank / mean): {b['imbalance']:.2f} · ranks idle or communicating: "
                      f"{fmt_pct(b['idle_share'])} of {of}"
                      + (f" ({bubble})" if bubble else ""), highlight=False)
