"""The ranks panel of `aios top --tp N --pp M`: every rank side by side, one column each (one
line each where the columns do not fit), with its place in the mesh, its decode time per token
and a bar of where that time went: its own compute, or each collective (the transfer and the
wait for its peers). Under them, how even the ranks are (`profilers.ranks.balance`: the slowest
rank's compute over the mean, and the share of the ranks' time not computing) and the run's
tokens/s. All over the same last tokens on every rank (`profilers.dist_live.RanksTally`)."""

from __future__ import annotations

import numpy as np
from rich.text import Text

from profilers.ranks import COMM_OPS

from ..fmt import fmt_pct, fmt_rate, fmt_time
from ..render import batch1_bubble
from .panels import fit, fit_words, stacked
from .view import TopView

PART_STYLE = {"compute": "#5fafff", "allreduce": "#ff8700", "send": "#ffd75f", "recv": "#d787ff",
              "broadcast": "#ff5f5f"}
SHORT = {"compute": "cmp", "allreduce": "ar", "send": "snd", "recv": "rcv", "broadcast": "bc"}
MIN_COLUMN = 24  # cells a rank's column needs; below, one line a rank
GAP = 2


def ranks_panel(v: TopView, width: int, height: int) -> Text:
    fig = v.ranks
    out = Text(no_wrap=True, overflow="crop")
    rows = fig.rows
    expected = layout_collectives(fig.tp, fig.pp)
    parts = ["compute", *(op for op in COMM_OPS if op in expected or any(r[f"{op}_s_per_token"] for r in rows))]
    legend = []
    for p in parts:
        legend += [("█", PART_STYLE[p]), (f" {p} ", "")]
    col = _column_width(len(rows), width)
    legend += [("· other  ", "dim"), *([] if col >= MIN_COLUMN else [("* samples  ", "dim")]),
               (f"per token, mean of the last {fig.tokens} on every rank", "dim")]
    out.append_text(fit(legend, width))
    if not fig.tokens:
        out.append("\nwaiting for a decode token from every rank…", style="dim")
    scale = max((r["decode_s_per_token"] or 0.0) for r in rows) or 1.0
    lines = _columns(rows, parts, scale, col) if col >= MIN_COLUMN else _lines(rows, parts, scale, width)
    for line in lines:
        out.append("\n")
        out.append_text(line)
    out.append("\n")
    out.append_text(balance_line(fig, width))
    return out


def layout_collectives(tp: int, pp: int) -> tuple[str, ...]:
    """The collectives a TP x PP layout runs (`engines.dist.engine`): all-reduces with TP, send
    and recv with PP, the sampled token's broadcast always."""
    return tuple(op for op in COMM_OPS if (op != "allreduce" or tp > 1) and (op not in ("send", "recv") or pp > 1))


def panel_lines(tp: int, pp: int, width: int) -> int:
    """The lines the panel draws at `width`: the legend, a column's (or a line a rank), the
    balance line (and the bubble's, with stages)."""
    world = tp * pp
    if _column_width(world, width) >= MIN_COLUMN:
        body = 4 + 1 + len(layout_collectives(tp, pp))
    else:
        body = world
    return 1 + body + (2 if pp > 1 else 1)


def _column_width(ranks: int, width: int) -> int:
    return (width - GAP * (ranks - 1)) // ranks if width else MIN_COLUMN


def _place(r: dict) -> str:
    lo, hi = r["layers"] or (0, 0)
    return f"stage {r['stage']} · tp {r['tp_rank']} · layers {lo}-{hi - 1}" if r["stage"] is not None else "loading…"


def _bar(r: dict, parts: list[str], scale: float, width: int) -> Text:
    """Compute and each collective on one scale (the slowest rank's token); `·` what no op claimed."""
    if r["decode_s_per_token"] is None:
        return Text("·" * width, style="grey23")
    values = np.array([r[f"{p}_s_per_token"] or 0.0 for p in parts])
    return stacked(values, scale, width, styles=[PART_STYLE[p] for p in parts])


def _columns(rows: list[dict], parts: list[str], scale: float, col: int) -> list[Text]:
    """One column a rank: who it is, where it sits, its token time, its bar, then a line a part."""
    cells = []
    for r in rows:
        wall = r["decode_s_per_token"]
        c = [fit([(f"rank {r['rank']}", "bold"), (" · samples" if r["head"] else "", "bold cyan")], col),
             fit([(_place(r), "dim")], col),
             fit([(fmt_time(wall), "bold"), (" a token", "dim")], col) if wall else Text("n/a", style="dim"),
             _bar(r, parts, scale, col)]
        for p in parts:
            x = r[f"{p}_s_per_token"]
            share = f"{100 * x / wall:3.0f}%" if x and wall else ""
            c.append(fit([(f"{p:<9}", PART_STYLE[p]), (f" {fmt_time(x) if x else '-':>8}", ""), (f" {share}", "dim")],
                         col))
        cells.append(c)
    out = []
    for i in range(len(cells[0])):
        line = Text(no_wrap=True, overflow="crop")
        for j, c in enumerate(cells):
            line.append_text(c[i])
            if j < len(cells) - 1:
                line.append(" " * (col - c[i].cell_len + GAP))
        out.append(line)
    return out


def _lines(rows: list[dict], parts: list[str], scale: float, width: int) -> list[Text]:
    """One line a rank, for many ranks on a narrow panel: shares by their short names."""
    out = []
    for r in rows:
        wall = r["decode_s_per_token"]
        lo, hi = r["layers"] or (0, 0)
        head = [(f"r{r['rank']}{'*' if r['head'] else ' '}", "bold"), (f" {r['stage']}·{r['tp_rank']} L{lo}-{hi - 1} ", "dim"),
                (f"{fmt_time(wall):>8} ", "bold")]
        bar_w = max(4, min(24, (width or 80) // 4))
        shares = [(f" {SHORT[p]} {fmt_pct(r[f'{p}_s_per_token'] / wall)}", PART_STYLE[p])
                  for p in parts if wall and r[f"{p}_s_per_token"]]
        line = fit(head, width)
        line.append_text(_bar(r, parts, scale, bar_w))
        line.append_text(fit(shares, max(0, width - line.cell_len) if width else 0))
        out.append(line)
    return out


def balance_line(fig, width: int) -> Text:
    """How even the ranks are (`balance`'s two figures, named by what they divide) and the run's
    rate; with stages, what the pipeline's bubble alone would idle on a line of its own."""
    b = fig.balance
    if b["imbalance"] is None:
        return Text("")
    out = fit([("run ", "dim"), (fmt_rate(fig.tokens_per_s), "bold green"),
               ("  imbalance ", "dim"), (f"{b['imbalance']:.2f}", "bold"), (" (slowest compute / mean)", "dim"),
               ("  idle ", "dim"), (fmt_pct(b["idle_share"]), "bold"), (" (1 − Σcompute / Σwall)", "dim")], width)
    bubble = batch1_bubble(fig.pp)
    if bubble:
        out.append("\n")
        out.append_text(fit_words(bubble, width, "dim"))
    return out
