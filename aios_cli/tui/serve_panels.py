"""The panels of `aios top --serve`, drawn as Rich text from a `profilers.serving.ServeView`.

Each function takes the width and height it may fill, like `panels`' own; the Textual app
shows them in widgets, `--once` prints them once.
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text

from profilers.serving import FREE_CACHED, ServeView

from ..fmt import fmt_pct, fmt_rate, fmt_time
from .panels import fit, hbar, layer_panel, spark_rows, sparkline, status_text
from .view import TopView

# a request's colour, the same in the batch list and the KV map (by its place in the batch)
PALETTE = ("#5fafff", "#ff8700", "#87d75f", "#d787ff", "#ffd75f", "#5fd7d7", "#ff5f87", "#afaf5f",
           "#8787ff", "#d7af87", "#00af87", "#ff87d7")
SHARED_CH, OWNED_CH, FREE_CH, CACHED_CH = "▓", "█", "·", "░"


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# --- the batch and the queue ---------------------------------------------------------------
def batch_panel(v: ServeView, width: int, height: int) -> Text:
    """The running requests (progress, blocks, prefix-cache tokens), then the queue."""
    out = Text(no_wrap=True, overflow="crop")
    last = v.history[-1] if v.history else None
    head = [("running ", "bold"), (f"{len(v.running)}", "bold green"), (f"/{v.max_num_seqs}", "dim"),
            ("  waiting ", "bold"), (f"{v.num_waiting}", "bold yellow")]
    if last is not None:
        head += [(f"  · last step {int(last[6])} prefill tok + {v.latest_decode if v.latest is not None else '?'} decode", "dim")]
    out.append_text(fit(head, width))
    queue_lines = 1 if v.num_waiting else 0
    room = max(0, height - 1 - queue_lines) if height else len(v.running)
    id_w = max([len(r["id"]) for r in v.running[:room]] + [4])
    bar_w = max(4, min(24, width - id_w - 34))
    shown = v.running[:room] if room < len(v.running) else v.running
    if room and len(v.running) > room:
        shown = v.running[:max(0, room - 1)]
    for i, r in enumerate(shown):
        out.append("\n")
        out.append(f"{r['id']:<{id_w}} ", style=colour(i))
        if r["prefill"]:
            out.append("prefill ", style="cyan")
            out.append_text(hbar(r["computed"] / max(1, r["prompt"] + r["out"]), bar_w, "cyan"))
            out.append(f" {r['computed']}/{r['prompt'] + r['out']} tok", style="dim")
        else:
            out.append("decode  ", style="green")
            out.append_text(hbar(r["out"] / max(1, r["max"]), bar_w, "green"))
            out.append(f" {r['out']}/{r['max']} out", style="dim")
        extra = f" · {r['blocks']} blk"
        if r["cached"]:
            extra += f" · {r['cached']} cached"
        if r["preempted"]:
            extra += f" · preempted {r['preempted']}×"
        out.append(extra, style="dim")
    if len(shown) < len(v.running):
        out.append(f"\n… {len(v.running) - len(shown)} more running", style="dim")
    if v.num_waiting:
        out.append("\n")
        line = Text(no_wrap=True, overflow="crop")
        line.append("queue ", style="bold yellow")
        listed = 0
        for q in v.waiting:
            piece = f"{q['id']}({q['prompt']}{', pre' if q['preempted'] else ''}) "
            if width and line.cell_len + len(piece) + 8 > width:
                break
            line.append(piece, style="red" if q["preempted"] else "")
            listed += 1
        if v.num_waiting > listed:
            line.append(f"+{v.num_waiting - listed} more", style="dim")
        out.append_text(line)
    if not v.running and not v.num_waiting:
        out.append("\n" + ("idle: waiting for the next arrival" if v.state == "idle" else "no requests yet"), style="dim")
    return out


# --- the KV-block map ------------------------------------------------------------------------
def kv_map_panel(v: ServeView, width: int, height: int) -> Text:
    """One cell per block (or per k blocks when the pool is larger than the panel), coloured by
    the request holding it; shared prefix blocks marked ▓, free ·, free but still cached ░."""
    out = Text(no_wrap=True, overflow="crop")
    n = v.num_blocks
    if not n:
        out.append("waiting for the engine…", style="dim")
        return out
    used = sum(1 for o in v.owners if o >= 0)
    cached = sum(1 for o in v.owners if o == FREE_CACHED)
    head = [(f"{used}", "bold"), (f"/{n} blocks used", "dim"), (f" ({used / n:.0%})", "bold"),
            (f" · {len(v.shared)} shared", "bold white"), (f" · {cached} cached free", "dim"),
            (f" · {v.block_size} tok/block", "dim")]
    out.append_text(fit(head, width))
    legend = Text(no_wrap=True, overflow="crop")
    legend.append(OWNED_CH, style=colour(0))
    legend.append(" held (colour: request)  ", style="dim")
    legend.append(SHARED_CH, style="bold white")
    legend.append(" shared prefix  ", style="dim")
    legend.append(FREE_CH, style="grey50")
    legend.append(" free  ", style="dim")
    legend.append(CACHED_CH, style="grey50")
    legend.append(" free, prefix kept", style="dim")
    rows = max(1, (height - 2) if height else math.ceil(n / max(1, width or 64)))
    if height:
        out.append("\n")
        out.append_text(legend)
    cols = max(1, width or 64)
    per = max(1, math.ceil(n / (rows * cols)))  # blocks a cell stands for
    shared = set(v.shared)
    cells = math.ceil(n / per)
    for c in range(cells):
        if c % cols == 0:
            out.append("\n")
        group = range(c * per, min(n, (c + 1) * per))
        held = [b for b in group if v.owners[b] >= 0]
        if held:
            b = held[0]
            if any(x in shared for x in held):
                out.append(SHARED_CH, style=f"bold white on {colour(v.owners[b])}")
            else:
                out.append(OWNED_CH, style=colour(v.owners[b]))
        elif any(v.owners[b] == FREE_CACHED for b in group):
            out.append(CACHED_CH, style="grey50")
        else:
            out.append(FREE_CH, style="grey50")
    if per > 1:
        out.append(f"\none cell = {per} blocks (the first held one's colour)", style="dim")
    if not height:
        out.append("\n")
        out.append_text(legend)
    return out


# --- throughput and batch size over time -------------------------------------------------------
def time_bins(history: list[list[float]], seconds: float, cols: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(bin width, output tok/s per bin, mean batch size per bin) over the last `seconds`, at
    most `cols` bins. A bin spans at least two typical steps (and 0.2 s), so it is never empty
    merely for falling between two steps."""
    end = history[-1][0]
    start = max(end - seconds, history[0][0] - history[0][1])
    walls = sorted(h[1] for h in history[-64:])
    min_bin = max(0.2, 2 * walls[len(walls) // 2])
    bins = max(1, min(cols, int((end - start) / min_bin))) if end > start else 1
    w = (end - start) / bins if end > start else 1.0
    toks = np.zeros(bins)
    batch = np.zeros(bins)
    weight = np.zeros(bins)
    for t, wall, n_out, running, *_ in history:
        if t <= start:
            continue
        i = min(bins - 1, int((t - start) / w))
        toks[i] += n_out
        batch[i] += running * wall
        weight[i] += wall
    return w, toks / w, np.where(weight > 0, batch / np.maximum(weight, 1e-12), 0.0)


def binned(history: list[list[float]], seconds: float, cols: int) -> tuple[list[float], list[float]]:
    """`time_bins` spread over `cols` columns (a bin wider than a column fills several)."""
    if not history or cols <= 0:
        return [], []
    _, rate, bsz = time_bins(history, seconds, cols)
    idx = np.arange(cols) * len(rate) // cols
    return rate[idx].tolist(), bsz[idx].tolist()


def throughput_panel(v: ServeView, width: int, height: int) -> Text:
    """Output tok/s over the last minute (a bar chart) and the batch size under it."""
    out = Text(no_wrap=True, overflow="crop")
    r10 = v.window_rate(10.0)
    head = [("output ", "bold"), (fmt_rate(r10), "bold green"), (" last 10 s", "dim"),
            ("  engine ", "bold"), (fmt_rate(v.engine_tokens_per_s), "bold"), (" while busy", "dim")]
    out.append_text(fit(head, width))
    if not v.history:
        out.append("\nwaiting for the first step…", style="dim")
        return out
    span = min(60.0, max(1.0, v.history[-1][0] - (v.history[0][0] - v.history[0][1])))
    label_w = 9
    w = max(4, (width or 60) - label_w)
    rate, bsz = binned(v.history, span, w)
    rows = max(1, (height - 3) if height else 3)
    hi = max(rate) if rate else 0.0
    chart = spark_rows(rate, w, rows, 0.0, hi or 1.0)
    for i, line in enumerate(chart):
        out.append("\n")
        out.append(f"{'tok/s' if i == 0 else '':<{label_w}}", style="dim")
        out.append(line, style="green")
    out.append("\n")
    out.append(f"{'batch':<{label_w}}", style="dim")
    out.append(sparkline(bsz, w, 0.0, max([1.0] + bsz)), style="cyan")
    cur = v.history[-1][3]
    out.append("\n")
    out.append_text(fit([(f"last {span:.0f} s, peak {fmt_rate(hi)}", "dim"), ("  batch now ", "dim"), (f"{int(cur)}", "bold cyan"),
                         (f" of {v.max_num_seqs}", "dim"), (f"  · {v.steps:,} steps · {v.finished:,} done", "dim")], width))
    return out


# --- TTFT and TPOT distributions ---------------------------------------------------------------
def histogram(values: list[float], bins: int, hi: float) -> list[float]:
    counts, _ = np.histogram(np.clip(values, 0.0, hi), bins=bins, range=(0.0, hi))
    return counts.astype(float).tolist()


def _dist(out: Text, name: str, values: list[float], width: int, rows: int) -> None:
    if not values:
        out.append(f"{name:<5}", style="bold")
        out.append("no finished request yet", style="dim")
        return
    a = np.asarray(values)
    p50, p90, p99 = (float(np.percentile(a, p)) for p in (50, 90, 99))
    out.append_text(fit([(f"{name:<5}", "bold"), ("p50 ", "dim"), (fmt_time(p50), "bold"), ("  p90 ", "dim"),
                         (fmt_time(p90), ""), ("  p99 ", "dim"), (fmt_time(p99), ""),
                         (f"  n={len(a)}", "dim")], width))
    hi = float(a.max()) * 1.0001 or 1.0
    w = max(4, (width or 60) - 8)
    counts = histogram(values, w, hi)
    for line in spark_rows(counts, w, rows, 0.0, max(counts) or 1.0):
        out.append("\n      ")
        out.append(line, style="magenta")
    out.append("\n")
    out.append_text(fit([("      0", "dim"), (f"{'':>{max(1, w - 14)}}", ""), (fmt_time(hi), "dim")], width))


def latency_panel(v: ServeView, width: int, height: int) -> Text:
    """TTFT and TPOT of the finished requests: percentiles and a histogram each."""
    out = Text(no_wrap=True, overflow="crop")
    rows = max(1, ((height or 8) - 4) // 2)
    _dist(out, "TTFT", v.ttft_s, width, rows)
    out.append("\n")
    _dist(out, "TPOT", v.tpot_s, width, rows)
    return out


# --- the batched step, layer by layer ---------------------------------------------------------
def step_layers_panel(v: ServeView, metric: str, width: int, height: int) -> Text:
    """The batch-1 layer bars over the batched step: the latest step and the last steps' mean."""
    tv = TopView(model=v.model, backend=v.backend, profile=v.profile, layer_rows=tuple(v.layer_rows),
                 latest=v.latest, latest_wall=v.latest_wall, avg=v.avg, avg_wall=v.avg_wall, avg_n=v.avg_n)
    label = f"latest step ({v.latest_prefill} prefill tok + {v.latest_decode} decode)" if v.latest is not None else "latest step"
    if v.profile != "op" and v.latest is None:
        out = Text("per-layer timing needs --profile op", style="yellow")
        return out
    return layer_panel(tv, "decode", metric if metric in ("time", "share") else "time", width, height,
                       latest_label=label, waiting="waiting for the first batched step…")


# --- the status line ---------------------------------------------------------------------------
STATE_STYLE = {"serving": "bold green", "idle": "bold cyan", "paused": "bold yellow", "loading": "bold cyan",
               "warming": "bold cyan", "error": "bold red", "starting": "dim", "done": "bold"}


def status_line(v: ServeView, ui_hz: float | None = None, width: int = 0, wrap: bool = False) -> Text:
    segs = [(f"● {v.state}", STATE_STYLE.get(v.state, "")), (f"  {v.model}", ""), (f" · {v.backend}", ""),
            (f" · {v.dtype}", ""), (f" · {len(v.running)} running", "bold"), (f" · {v.num_waiting} waiting", "bold"),
            (f" · {fmt_rate(v.window_rate(10.0))} out", "bold"), (f" · {v.finished:,} done", ""),
            (f" · {v.preemptions} preempted", ""),
            (f" · prefix hits {fmt_pct(v.prefix_hit_rate)}", ""), (f" · {v.device}", "")]
    return status_text(segs, v.threads, ui_hz, wrap, width)

