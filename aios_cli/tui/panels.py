"""The panels of `aios top`, drawn as Rich renderables from a `TopView`.

The Textual app shows them in widgets, sized to the terminal; `aios top --once` prints the
same functions' output once. Each function takes the width and height it may fill.
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text

from engines.ops import KINDS

from ..fmt import fmt_bytes, fmt_pct, fmt_rate, fmt_time
from .view import GenStat, TopView

METRICS = ("time", "share", "bandwidth")
METRIC_LABEL = {"time": "seconds", "share": "% of token time", "bandwidth": "achieved GB/s"}
KIND_STYLE = {"matmul": "#5fafff", "reduction": "#ff5f5f", "elementwise": "#87d75f", "memory": "#ffd75f",
              "fused": "#d787ff", "comm": "#ff8700", "other": "#8a8a8a"}
SPARK = "▁▂▃▄▅▆▇█"


# --- small pieces ------------------------------------------------------------------------
def fit(segments: list[tuple[str, str]], width: int) -> Text:
    """One line of (text, style) segments that fits `width` cells: the segments that do not fit
    are dropped whole, from the end, so no value is cut inside its unit. width 0: no limit."""
    out = Text(no_wrap=True, overflow="crop")
    for text, style in segments:
        if width and out.cell_len + Text(text).cell_len > width:
            break
        out.append(text, style=style)
    return out


def fit_words(text: str, width: int, style: str = "") -> Text:
    """`text` cut at the last whole word that fits `width` (with `…` when cut)."""
    if not width or len(text) <= width:
        return Text(text, style=style)
    words, line = text.split(" "), ""
    for w in words:
        if len(line) + len(w) + (1 if line else 0) + 1 > width:
            break
        line = f"{line} {w}" if line else w
    return Text(line + "…", style=style)


def sparkline(values: list[float], width: int, lo: float | None = None, hi: float | None = None) -> str:
    """The last `width` values as block characters, scaled to [lo, hi] (default: their range)."""
    vals = [v for v in values[-width:] if v is not None and math.isfinite(v)]
    if not vals or width <= 0:
        return ""
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else hi
    span = hi - lo
    if span <= 0:
        return SPARK[3] * len(vals)
    return "".join(SPARK[min(7, max(0, int((v - lo) / span * 7.999)))] for v in vals)


def hbar(fraction: float, width: int, style: str) -> Text:
    """A one-colour horizontal bar with eighth-block resolution, padded to `width`."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    s = "█" * full + ("" if part == 0 else " ▏▎▍▌▋▊▉"[part])
    t = Text(s, style=style)
    t.append("·" * max(0, width - len(s)), style="grey23")
    return t


SHORT_KIND = {"matmul": "mat", "reduction": "red", "elementwise": "elt", "memory": "mem", "fused": "fus",
              "comm": "com", "other": "oth"}
RARE_KINDS = ("fused", "comm")  # in the legend only when such an op ran


def legend(shown: set[str] = frozenset(), width: int = 0) -> Text:
    """The colour of each kind; `fused` only when a composite op ran (it is rare on the CPU),
    `comm` only when a collective did. Where the names do not fit `width`, three-letter ones."""
    kinds = [k for k in KINDS if k not in RARE_KINDS or k in shown]
    full = sum(len(k) + 3 for k in kinds)
    t = Text()
    for k in kinds:
        t.append("█", style=KIND_STYLE[k])
        t.append(f" {k if not width or full <= width else SHORT_KIND[k]} ", style="dim" if k == "other" else "")
    return t


# --- per-layer bars ------------------------------------------------------------------------
def _groups(rows: tuple[str, ...], room: int) -> list[tuple[str, list[int]]]:
    """Bucket the layer rows so they fit in `room` lines: `in` and `out` stay alone, layers
    are grouped k at a time (labels like 0-3)."""
    L = len(rows) - 2
    if len(rows) <= room or room < 3:
        return [(r, [i]) for i, r in enumerate(rows)]
    k = math.ceil(L / max(1, room - 2))
    out = [("in", [0])]
    for a in range(0, L, k):
        b = min(L, a + k)
        out.append((f"{a}-{b - 1}" if b - a > 1 else str(a), list(range(a + 1, b + 1))))
    out.append(("out", [L + 1]))
    return out


def metric_rows(sec: np.ndarray, nbytes: np.ndarray | None, wall: float, metric: str,
                groups: list[tuple[str, list[int]]]) -> np.ndarray:
    """(len(groups), len(KINDS)) values of the chosen metric, one stacked bar per group.
    time: seconds; share: fraction of the token's wall time; bandwidth: bytes each kind moved
    over the group's total time (so the segments add up to the group's achieved B/s)."""
    out = np.zeros((len(groups), len(KINDS)))
    for g, (_, idx) in enumerate(groups):
        s = sec[idx].sum(axis=0)
        if metric == "time":
            out[g] = s
        elif metric == "share":
            out[g] = s / wall if wall else 0.0
        else:
            t = s.sum()
            out[g] = nbytes[idx].sum(axis=0) / t if (nbytes is not None and t > 0) else 0.0
    return out


def fmt_metric(x: float, metric: str) -> str:
    if metric == "time":
        return fmt_time(x)
    if metric == "share":
        return f"{100 * x:.1f}%"
    return f"{x / 1e9:.1f}GB/s" if x >= 1e8 else f"{x / 1e6:.0f}MB/s"


def stacked(values: np.ndarray, scale: float, width: int, tick: float | None = None,
            styles: list[str] | None = None) -> Text:
    """One stacked bar (segments by kind, or in `styles`, one a value), `width` cells for
    `scale`. An optional tick marks another total on the same scale (the moving average, next
    to the latest token)."""
    total = float(values.sum())
    cells = int(round(total / scale * width)) if scale > 0 else 0
    cells = min(cells, width)
    if total > 0 and cells:
        raw = values / total * cells
        n = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - n))[: cells - n.sum()]:
            n[i] += 1
    else:
        n = np.zeros(len(values), int)
    cells = []
    for style, c in zip(styles or [KIND_STYLE[k] for k in KINDS], n):
        cells += [("█", style)] * int(c)
    cells += [("·", "grey23")] * (width - len(cells))
    if not cells:
        return Text()
    if tick is not None and scale > 0 and width > 0:
        i = min(width - 1, int(round(tick / scale * width)))
        ch, st = cells[i]
        cells[i] = ("│", "bold white") if ch == "·" else ("┃", f"bold white on {st}")
    t = Text()  # one span per run of equal cells: spans, not cells, are what cost to draw
    run_ch, run_st, n = cells[0][0], cells[0][1], 0
    for ch, st in cells:
        if ch == run_ch and st == run_st:
            n += 1
            continue
        t.append(run_ch * n, style=run_st)
        run_ch, run_st, n = ch, st, 1
    t.append(run_ch * n, style=run_st)
    return t


def layer_panel(v: TopView, phase: str, metric: str, width: int, height: int, latest_label: str = "latest token",
                waiting: str | None = None) -> Text:
    """Bars per layer. decode: the latest token and the moving average side by side when the
    width allows, else the latest with the average as a tick; prefill: the prompt pass. (The
    serving view passes its batched steps as `decode`, labelled `latest_label`.)"""
    out = Text(no_wrap=True, overflow="crop")
    if phase == "prefill":
        tables = [("prefill", v.prefill, v.prefill_bytes, v.prefill_wall)]
        head = f"prefill: {v.prefill_tokens} prompt tokens in one pass" if v.prefill is not None else ""
    elif v.speculate:
        tables, head = _spec_tables(v, metric)
    else:
        tables = [(latest_label, v.latest, v.latest_bytes, v.latest_wall),
                  (f"avg of last {v.avg_n}", v.avg, v.avg_bytes, v.avg_wall)]
        head = ""
    if tables[0][1] is None:
        if v.profile != "op":
            out.append(f"per-layer timing needs --profile op (this session: --profile {v.profile})", style="yellow")
        else:
            out.append(waiting or f"waiting for the first {phase} token…", style="dim")
        return out
    shown = legend({k for k in RARE_KINDS if any(t[1] is not None and t[1][:, KINDS.index(k)].any() for t in tables)},
                   width)
    out.append_text(shown)
    if not width or shown.cell_len + len(METRIC_LABEL[metric]) + 2 <= width:
        out.append(f"  {METRIC_LABEL[metric]}", style="bold")
    if head:
        out.append(f"\n{head}", style="dim")
    room = max(3, height - 2)
    groups = _groups(v.layer_rows, room)
    mats = [metric_rows(sec, nb, wall or 0.0, metric, groups) for _, sec, nb, wall in tables if sec is not None]
    scale = max(float(m.sum(axis=1).max()) for m in mats) or 1.0
    label_w = max(len(g[0]) for g in groups)
    val_w = 9
    side_by_side = len(mats) == 2 and width >= label_w + 2 * (val_w + 14) + 3
    if side_by_side:
        bar_w = (width - label_w - 3 - 2 * val_w - 2) // 2
        out.append("\n" + " " * (label_w + 1))
        out.append(f"{tables[0][0]:<{bar_w + val_w + 1}}", style="bold")
        out.append(f" {tables[1][0]}", style="bold")
    else:
        bar_w = max(4, width - label_w - val_w - 2)
        if len(mats) == 2:
            out.append("\n" + " " * (label_w + 1))
            out.append(tables[0][0], style="bold")
            out.append(f"  │ = {tables[1][0]}", style="dim")
    for g, (label, _) in enumerate(groups):
        out.append(f"\n{label:>{label_w}} ", style="dim")
        if side_by_side:
            for m in mats:
                out.append_text(stacked(m[g], scale, bar_w))
                out.append(f" {fmt_metric(float(m[g].sum()), metric):>{val_w}}")
                out.append(" ")
        else:
            tick = float(mats[1][g].sum()) if len(mats) == 2 else None
            out.append_text(stacked(mats[0][g], scale, bar_w, tick))
            out.append(f" {fmt_metric(float(mats[0][g].sum()), metric):>{val_w}}")
    return out


def _spec_tables(v: TopView, metric: str) -> tuple[list[tuple], str]:
    """The decode tab while speculating: a model drafter's draft rounds beside the target's
    passes (both averaged; the draft's passes are not costed, so GB/s shows the target's
    alone); prompt lookup has no model, so the target's passes only."""
    target = [("latest target pass", v.latest, v.latest_bytes, v.latest_wall),
              (f"target: avg of last {v.avg_n} passes", v.avg, v.avg_bytes, v.avg_wall)]
    if v.speculate == "ngram":
        return target, "ngram: prompt lookup drafts without a model, so no draft layers: the target's passes only"
    if metric == "bandwidth":
        return target, f"{v.speculate}: GB/s of the target's passes (a draft round is not costed)"
    return ([(f"target: avg of last {v.avg_n} passes", v.avg, v.avg_bytes, v.avg_wall),
             (f"draft: avg of last {v.draft_n} rounds", v.draft_avg, None, v.draft_avg_wall)],
            f"{v.speculate}: per round, the drafter's passes beside the target's")


# --- speculation -------------------------------------------------------------------------------
def speculation_panel(v: TopView, width: int, height: int) -> Text:
    """--speculate: how much of the drafts the target keeps (as `SpeculativeGeneration.
    acceptance()` counts it), tokens per verify pass, the current k, where an emitted token's
    time goes, and how many rounds kept 0..k drafts."""
    out = Text(no_wrap=True, overflow="crop")
    s = v.spec
    if s is None:
        out.append(f"{v.speculate}: waiting for the first round…", style="dim")
        return out
    k = [(f" · k {s.k}", "bold")]
    if s.adaptive:
        k.append((f" (adaptive, up to {s.k_max})", "dim"))
    out.append_text(fit([(v.speculate, "bold"), *k,
                         (f" · gen {s.generation}: {s.rounds} verify pass{'es' if s.rounds != 1 else ''}", "dim")],
                        width))
    out.append("\n")
    if not s.rounds:
        out.append_text(fit_words("nothing drafted yet: every token decoded alone", width, "dim"))
        return out
    dropped = [(f" · {s.dropped} short drafts dropped", "dim")] if s.dropped else []
    out.append_text(fit([("kept ", "dim"), (fmt_pct(s.acceptance_rate), "bold green"),
                         (f" of drafts ({s.accepted}/{s.drafted})", "dim"), ("  ", ""),
                         (f"{s.tokens_per_verify_step:.2f}", "bold cyan"), (" tokens a verify pass", "dim"),
                         *dropped], width))
    if s.emitted and height > 3:
        out.append("\n")
        out.append_text(fit([("per token ", "dim"), (fmt_time(s.draft_s / s.emitted), "bold"),
                             (" drafting · ", "dim"), (fmt_time(s.target_s / s.emitted), "bold"),
                             (" target passes", "dim")], width))
    out.append_text(_histogram(s.hist, width))
    return out


def _histogram(hist: list[int], width: int) -> Text:
    """Rounds by drafts accepted (0..k_max): a bar, the count and the index a column each; one
    cell a column where the columns do not fit."""
    out = Text(no_wrap=True, overflow="crop")
    label_w = 9
    top = max(hist) or 1
    cw = max(4, len(str(len(hist) - 1)) + 1, len(str(max(hist))) + 1)
    bars = [SPARK[min(7, max(0, math.ceil(c / top * 8) - 1))] if c else "·" for c in hist]
    if not width or label_w + cw * len(hist) <= width:
        out.append("\n" + " " * label_w)
        for b, c in zip(bars, hist):
            out.append(b * (cw - 1), style="green" if c else "grey23")
            out.append(" ")
        out.append("\n" + f"{'rounds':<{label_w}}", style="dim")
        out.append("".join(f"{c:<{cw}}" for c in hist))
        out.append("\n" + f"{'accepted':<{label_w}}", style="dim")
        out.append("".join(f"{i:<{cw}}" for i in range(len(hist))), style="dim")
    else:
        room = max(1, width - label_w)
        out.append("\n" + f"{'rounds':<{label_w}}", style="dim")
        out.append("".join(bars) if len(bars) <= room else "".join(bars[:room - 1]) + "…", style="green")
        out.append("\n" + f"{'accepted':<{label_w}}", style="dim")
        out.append(f"0..{len(hist) - 1}", style="dim")
    return out


# --- tokens/s ------------------------------------------------------------------------------
def spark_rows(values: list[float], width: int, rows: int, lo: float = 0.0, hi: float | None = None) -> list[str]:
    """A `rows`-line bar chart of the last `width` values (eighth-block steps), top line first."""
    vals = [v if (v is not None and math.isfinite(v)) else 0.0 for v in values[-width:]]
    if not vals or width <= 0 or rows <= 0:
        return []
    hi = max(vals) if hi is None else hi
    span = (hi - lo) or 1.0
    levels = [max(0, min(rows * 8, int(round((v - lo) / span * rows * 8)))) for v in vals]
    out = []
    for r in range(rows - 1, -1, -1):
        line = []
        for lv in levels:
            n = lv - r * 8
            line.append("█" if n >= 8 else " " if n <= 0 else SPARK[n - 1])
        out.append("".join(line))
    return out


def tokens_panel(v: TopView, width: int, height: int) -> Text:
    """Decode tok/s per token over time (a bar chart filling the panel), prefill and TTFT."""
    out = Text(no_wrap=True, overflow="crop")
    rates = v.decode_rates
    recent = rates[-16:]
    if recent:
        out.append_text(fit([("decode  ", "bold"), (fmt_rate(float(np.median(recent))), "bold green"),
                             (f" median of last {len(recent)}", "dim"),
                             (f" ({fmt_rate(min(recent), '')}–{fmt_rate(max(recent), '')})", "dim")], width))
    else:
        out.append_text(fit([("decode  ", "bold"), ("n/a", "dim")], width))
    gens = v.generations
    out.append("\nprefill ", style="bold")
    last: GenStat | None = gens[-1] if gens else None
    if v.current_ttft_s is not None:
        rate, ttft = v.prefill_tokens / v.current_ttft_s, v.current_ttft_s
    elif last is not None:
        rate, ttft = last.prefill_tokens_per_s, last.ttft_s
    else:
        rate = ttft = None
    if ttft is not None:
        earlier = [fmt_time(g.ttft_s) for g in gens[-3:]] if len(gens) > 1 else []
        before = [(f"  before: {earlier[0]}", "dim"), *((f" {t}", "dim") for t in earlier[1:])] if earlier else []
        out.append_text(fit([(fmt_rate(rate), "bold cyan"), (" TTFT ", "dim"), (fmt_time(ttft), "bold"), *before],
                            max(0, width - len("prefill ")) if width else 0))
    else:
        out.append("n/a", style="dim")
    rows = height - 2 if height else 3
    if len(gens) > 1 and (rows >= 4 or not height):  # prefill over time: one point per generation
        ttfts = [g.ttft_s for g in gens]
        label = "TTFT/gen "
        out.append(f"\n{label}", style="dim")
        w = max(1, (width or 60) - len(label) - 12)
        out.append(sparkline(ttfts, w, 0.0, max(ttfts[-w:])), style="cyan")
        out.append(f" ↑{fmt_time(max(ttfts[-w:]))}", style="dim")
        rows -= 1
    if rates and rows > 0:
        hi = max(rates[-width:]) if width else max(rates)
        label = f" ↑{fmt_rate(hi)}"
        chart = spark_rows(rates, max(1, width - len(label)) if width else 60, rows, 0.0, hi)
        for i, line in enumerate(chart):
            out.append("\n")
            out.append(line, style="green")
            if i == 0:
                out.append(label, style="dim")
    return out


# --- reduction barriers ----------------------------------------------------------------------
def barriers_panel(v: TopView, width: int, height: int) -> Text:
    out = Text(no_wrap=True, overflow="crop")
    if v.barriers_per_token is None:
        out.append("waiting for a decode token…" if v.profile != "none" else "barriers are counted with --profile op or token",
                   style="dim")
        return out
    avg = [(f" (avg {fmt_pct(v.barrier_share_avg)})", "dim")] if v.barrier_share_avg is not None else []
    per = " per token   " if not v.speculate else " per target pass   "
    out.append_text(fit([(f"{v.barriers_per_token}", "bold red"), (per, "dim"),
                         (fmt_pct(v.barrier_share), "bold"), (" of token time", "dim"), *avg], width))
    out.append("\n")
    out.append_text(fit([(f"{v.barriers_total:,}", "bold"), (" waited on this session", "dim")], width))
    if height > 2 and v.barrier_shares:
        out.append("\n")
        out.append(sparkline(v.barrier_shares, width, 0.0, max(v.barrier_shares)), style="red")
    return out


# --- memory ------------------------------------------------------------------------------------
def memory_panel(v: TopView, width: int, height: int) -> Text:
    out = Text(no_wrap=True, overflow="crop")
    mem = v.memory
    last = mem[-1] if mem else None
    label_w = 9
    spark_w = max(0, width - label_w - 22)

    def row(label, value, series=None, style="white", extra=""):
        line = fit([(f"{label:<{label_w}}", "bold"), (value, style), (extra, style)], width)
        out.append_text(line)
        out.append(" " * max(0, label_w + 21 - line.cell_len))
        if series and spark_w:
            vals = [x for x in series if x is not None]
            if vals:
                out.append(sparkline(vals, spark_w, 0.0, max(vals)), style=style)
        out.append("\n")

    if last is None:
        out.append("waiting for the first sample…", style="dim")
        return out
    if last.device_total_bytes:
        row("GPU", fmt_bytes(last.device_used_bytes), [m.device_used_bytes for m in mem], "magenta",
            f" / {fmt_bytes(last.device_total_bytes)}")
    if last.torch_allocated_bytes is not None:
        row("torch", fmt_bytes(last.torch_allocated_bytes), [m.torch_allocated_bytes for m in mem], "cyan",
            f" pk {fmt_bytes(last.torch_peak_bytes)}")
    row("host RSS", fmt_bytes(last.rss_bytes), [m.rss_bytes for m in mem], "green")
    if v.kv_cache_bytes is not None:
        fill = f" {v.kv_positions[0]}/{v.kv_positions[1]} pos" if v.kv_positions else ""
        row("KV cache", fmt_bytes(v.kv_cache_bytes), None, "yellow", fill)
    if not last.device_total_bytes:
        if v.no_gpu_reason:
            why = v.no_gpu_reason
        elif v.device.startswith("cpu"):
            why = f"the {v.backend} engine runs on the CPU"
        else:
            why = "NVML reports no memory for this device"
        out.append_text(fit_words(f"no GPU line: {why}", width, "dim"))
    else:
        out.rstrip()
    return out


# --- system --------------------------------------------------------------------------------------
def system_panel(cpus: list[float], gpu, width: int, height: int, no_gpu_reason: str | None = None,
                 backend: str | None = None) -> Text:
    """CPU % per core (psutil) and, on a GPU, utilisation, power and temperature (NVML)."""
    out = Text(no_wrap=True, overflow="crop")
    n = len(cpus)
    avg = sum(cpus) / n if n else 0.0
    gpu_lines = 1
    room = max(1, height - gpu_lines - 1)
    if n and n <= room:
        bar_w = max(4, width - 12)
        for i, c in enumerate(cpus):
            out.append(f"cpu{i:<3}", style="dim")
            out.append_text(hbar(c / 100, bar_w, _load_style(c)))
            out.append(f"{c:5.0f}%\n")
    else:
        out.append(f"cpu {n} cores, avg {avg:.0f}%\n", style="bold")
        per_line = max(1, width)
        for a in range(0, n, per_line):
            for c in cpus[a:a + per_line]:
                out.append(SPARK[min(7, int(c / 100 * 7.999))], style=_load_style(c))
            out.append("\n")
    if gpu is not None:
        out.append("gpu ", style="bold")
        out.append(f"util {_na(gpu.utilization_pct, '%')}  power {_na(gpu.power_w, ' W')}  temp {_na(gpu.temperature_c, '°C')}")
    else:
        why = f"gpu: none ({no_gpu_reason})" if no_gpu_reason else f"gpu: not used by the {backend or 'current'} engine"
        out.append_text(fit_words(why, width, "dim"))
    return out


def _na(x, unit: str) -> str:
    return "N/A" if x is None else f"{x:.0f}{unit}"


def _load_style(pct: float) -> str:
    return "green" if pct < 50 else "yellow" if pct < 85 else "red"


# --- text and status ------------------------------------------------------------------------------
def text_panel(v: TopView, width: int, height: int) -> Text:
    out = Text(overflow="fold")
    out.append(v.prompt, style="dim")
    if v.prompt and v.text and not v.prompt[-1].isspace() and not v.text[0].isspace():
        out.append(" ")  # prompt ids and generated ids (or text) must not run together
    out.append(v.text)
    if width > 0 and height > 0:  # keep the tail that fits
        lines = out.wrap(_console(), width)
        out = Text("\n").join(lines[-height:])
    return out


_WRAP_CONSOLE = None


def _console():
    """A plain console, made once, that `Text.wrap` measures characters with."""
    global _WRAP_CONSOLE
    if _WRAP_CONSOLE is None:
        from rich.console import Console

        _WRAP_CONSOLE = Console(width=200, color_system=None)
    return _WRAP_CONSOLE


STATE_STYLE = {"generating": "bold green", "paused": "bold yellow", "loading": "bold cyan", "warming": "bold cyan",
               "error": "bold red", "starting": "dim", "done": "bold"}


def status_line(v: TopView, ui_hz: float | None = None, wrap: bool = False, width: int = 0) -> Text:
    """Most useful first, so a narrow terminal drops the least useful, whole: state, what runs,
    where the generation is, then device, size, profile level and the UI rate."""
    segments = [(f"● {v.state}", STATE_STYLE.get(v.state, "")), (f"  {v.model}", ""), (f" · {v.backend}", ""),
                (f" · {v.dtype}", ""), (f" · {v.weights}", ""), (f" · gen {v.generation}", "bold"), (f" · tok {v.token_index}", "bold"),
                (f" · {v.total_tokens:,} total", "bold"), (f" · {v.device}", ""),
                (f" · {_params(v.num_params)} params", ""), (f" · profile {v.profile}", "")]
    if v.ranks is not None:  # the layout right after the backend; threads are a rank's
        segments.insert(3, (f" · TP={v.ranks.tp} x PP={v.ranks.pp}", "bold"))
        if v.rank_threads is not None:
            segments.append((f" · {v.rank_threads} thread{'s' if v.rank_threads != 1 else ''} a rank", ""))
    return status_text(segments, v.threads, ui_hz, wrap, width)


def status_text(segments: list[tuple[str, str]], threads: int | None, ui_hz: float | None, wrap: bool,
                width: int) -> Text:
    """A status line's (text, style) segments, then the engine's threads and the UI rate: folded
    over lines (`wrap`, for --once) or one line fitted to `width`."""
    if threads is not None:
        segments.append((f" · {threads} thread{'s' if threads != 1 else ''}", ""))
    if ui_hz is not None:
        segments.append((f" · UI {ui_hz:.1f} Hz", "dim"))
    if wrap:
        t = Text(overflow="fold")
        for text, style in segments:
            t.append(text, style=style)
        return t
    return fit(segments, width)


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
