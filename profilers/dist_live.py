"""The ranks of a TP x PP run, watched live (`aios top --tp N --pp M`): each rank loads its shard
once and generates one generation after another; after every pass it posts a small summary of
it to the parent, which folds every rank's summaries into the figures `profilers.ranks` defines
for a whole run (`rank_row`'s fields, so `balance` reads them the same way).

What a rank posts (through `engines.dist.launch.run_ranks`, one message a pass a rank: a dict
of a dozen floats, a few hundred bytes with the layer rows):
  ("phase", text)   rank 0, while it loads and warms up;
  ("place", dict)   once loaded: its stage, tp_rank, layers, whether it samples, what it holds;
  ("step", dict)    after each pass (`step_summary`): generation, phase, token index, wall time,
                    compute seconds and seconds in each collective; the tp-rank 0 of each stage
                    adds its rows of the per-layer table (in, its layers, out), rank 0 the
                    pass's tokens.
The parent is not a rank; it never waits on a rank to draw (`RanksTally` is read at will).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, replace

import numpy as np

from .dist_run import DistJob, rank_device
from .ranks import COMM_OPS, balance, split_compute_comm, step_op_seconds
from .record import step_layer_table


@dataclass(frozen=True)
class LiveJob(DistJob):
    more_prompts: tuple[tuple[int, ...], ...] = ()  # generation g runs the (g mod n)-th of prompt_ids, *these
    generations: int | None = None  # None: without end, until the parent stops the ranks (--once: 1)
    mute: bool = False  # the ranks' stdout and stderr to /dev/null: the live view draws on the terminal

    def prompt(self, generation: int) -> list[int]:
        every = (self.prompt_ids, *self.more_prompts)
        return list(every[generation % len(every)])


def rank_live(rank: int, world: int, post, job: LiveJob) -> None:
    """This rank's part: load the shard once, then generate `job.generations` times (without
    end: None), posting a summary of every pass. Returns early if the parent is gone."""
    from engines.dist.engine import ShardedEngine
    from engines.dist.group import build_mesh
    from engines.model.sources import open_model

    from .harness import device_label, start_run

    if job.mute:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    parent = os.getppid()
    say = post if rank == 0 else (lambda payload: None)
    ckpt = open_model(job.model)
    mesh = build_mesh(range(world), job.tp, job.pp)
    say(("phase", f"loading rank shards ({mesh.describe()}, {world} ranks)"))
    engine = ShardedEngine(ckpt, mesh, dtype=job.opts.dtype, device=rank_device(job.device, rank),
                           quant=job.opts.quant)
    held, L = engine.layer_range, ckpt.config.num_layers
    post(("place", {"stage": mesh.stage, "tp_rank": mesh.tp_rank, "layers": (held.start, held.stop),
                    "head": mesh.is_head, "sharded_weight_bytes": engine.sharded_weight_bytes,
                    "replicated_weight_bytes": engine.replicated_weight_bytes, "dtype": engine.dtype,
                    "weights": f"{engine.weight_format} {engine.bits_per_weight:.2f} b/w",
                    "device": device_label(engine)}))
    # the stage's rows of the per-layer table, posted by its tp-rank 0 alone: `in`, its layers, `out`
    rows = [0, *range(held.start + 1, held.stop + 1), L + 1] if mesh.tp_rank == 0 else None
    opts, g = job.opts, 0
    while job.generations is None or g < job.generations:
        if g == 0 and opts.warmup:
            say(("phase", "warming up (caches, allocator)"))
        run = start_run(ckpt, job.backend, job.prompt(g), opts if g == 0 else replace(opts, warmup=False),
                        engine=engine)
        for st, tokens in run:
            post(("step", step_summary(st, g, L, rows, tokens if rank == 0 else None)))
            if os.getppid() != parent:
                return  # the parent was killed: nobody reads, so stop generating
        g += 1


def step_summary(st, generation: int, num_layers: int, rows: list[int] | None = None,
                 tokens: list[int] | None = None) -> dict:
    """One op-level pass of a rank as it is posted: its wall time, compute and each collective's
    seconds (`split_compute_comm`), and, given `rows`, those rows of its per-layer table."""
    out = {"gen": generation, "phase": st.phase, "index": st.token_index, "n_tokens": st.n_tokens,
           "wall_s": st.wall_s, **split_compute_comm(step_op_seconds(st), "_s")}
    if rows is not None:
        out["layer_s"] = step_layer_table(st, num_layers)[rows]
    if tokens is not None:
        out["tokens"] = list(tokens)
    return out


@dataclass
class RanksFigures:
    """The ranks over the same last tokens: one `rank_row`-style row each, their `balance`, and
    the model's per-layer tables stitched from each stage's tp-rank 0."""

    tp: int
    pp: int
    rows: list[dict]  # rank order: place, and decode seconds per token (None before a token)
    balance: dict  # imbalance and idle_share, as `profilers.ranks.balance`
    tokens: int  # decode tokens the figures are the mean of (the same ones on every rank)
    latest: np.ndarray | None = None  # (L+2, len(KINDS)) seconds, the newest of those tokens
    latest_wall: float | None = None
    avg: np.ndarray | None = None
    avg_wall: float | None = None
    prefill: np.ndarray | None = None  # the latest prefill every stage reported
    prefill_wall: float | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """The run's decode rate: one token a head-rank pass."""
        head = next((r for r in self.rows if r["head"]), None)
        wall = head and head["decode_s_per_token"]
        return 1 / wall if wall else None


class RanksTally:
    """The parent's fold of the ranks' posts. `add` is O(1) (the thread that relays the
    messages calls it); `figures` takes the decode tokens that every rank has reported, the
    last `window` of them, so the ranks are compared over the same tokens."""

    def __init__(self, tp: int, pp: int, num_layers: int, window: int = 16):
        self.tp, self.pp, self.num_layers, self.window = tp, pp, num_layers, window
        self.world = tp * pp
        self.places: dict[int, dict] = {}
        self._decode = [collections.deque(maxlen=4 * window) for _ in range(self.world)]
        self._prefill: dict[int, dict] = {}

    def add(self, rank: int, summary: dict) -> None:
        if summary["phase"] == "prefill":
            self._prefill[rank] = summary
        else:
            self._decode[rank].append(summary)

    def copy(self) -> "RanksTally":
        """A copy to read in another thread while `add` goes on (the summaries are never changed)."""
        out = RanksTally(self.tp, self.pp, self.num_layers, self.window)
        out.places = dict(self.places)
        out._decode = [collections.deque(d, maxlen=d.maxlen) for d in self._decode]
        out._prefill = dict(self._prefill)
        return out

    def figures(self) -> RanksFigures:
        every = [{(s["gen"], s["index"]): s for s in d} for d in self._decode]
        keys = sorted(set.intersection(*(set(d) for d in every)))[-self.window:]
        rows = [self._row(r, [every[r][k] for k in keys]) for r in range(self.world)]
        fig = RanksFigures(self.tp, self.pp, rows, balance(rows), len(keys))
        if keys:
            fig.latest, fig.latest_wall = self._stitch([every[r][keys[-1]] for r in range(self.world)])
            tabs = [self._stitch([every[r][k] for r in range(self.world)]) for k in keys]
            if all(t[0] is not None for t in tabs):
                fig.avg = sum(t[0] for t in tabs) / len(tabs)
                fig.avg_wall = sum(t[1] for t in tabs) / len(tabs)
        pre = [self._prefill.get(r) for r in range(self.world)]
        if all(pre) and len({p["gen"] for p in pre}) == 1:
            fig.prefill, fig.prefill_wall = self._stitch(pre)
        return fig

    def _row(self, rank: int, steps: list[dict]) -> dict:
        """`rank_row`'s fields for one rank, over its summaries of the common tokens."""
        place = self.places.get(rank, {})
        row = {"rank": rank, "stage": place.get("stage"), "tp_rank": place.get("tp_rank"),
               "layers": place.get("layers"), "head": place.get("head", False), "decode_tokens": len(steps),
               "sharded_weight_bytes": place.get("sharded_weight_bytes"),
               "replicated_weight_bytes": place.get("replicated_weight_bytes"),
               "decode_s_per_token": None, "compute_s_per_token": None, "comm_s_per_token": None,
               "comm_share": None, **{f"{op}_s_per_token": None for op in COMM_OPS}}
        if not steps:
            return row
        n = len(steps)
        mean = {k: sum(s[k] for s in steps) / n for k in ("wall_s", "compute_s", *(f"{op}_s" for op in COMM_OPS))}
        comm = sum(mean[f"{op}_s"] for op in COMM_OPS)
        row.update(decode_s_per_token=mean["wall_s"], compute_s_per_token=mean["compute_s"], comm_s_per_token=comm,
                   comm_share=comm / mean["wall_s"] if mean["wall_s"] else None,
                   **{f"{op}_s_per_token": mean[f"{op}_s"] for op in COMM_OPS})
        return row

    def _stitch(self, summaries: list[dict]) -> tuple[np.ndarray | None, float | None]:
        """The model's per-layer table of one pass from the ranks' summaries of it: each layer
        as the tp-rank 0 of its stage measured it, `in` from stage 0, `out` from the sampling
        rank; the wall is the sampling rank's. (None, None) until every stage's place is known."""
        L, tab = self.num_layers, None
        head_wall = None
        for rank, s in enumerate(summaries):
            place = self.places.get(rank)
            if place is None:
                return None, None
            if place["head"]:
                head_wall = s["wall_s"]
            rows = s.get("layer_s")
            if rows is None:
                continue
            if tab is None:
                tab = np.zeros((L + 2, rows.shape[1]))
            a, b = place["layers"]
            tab[a + 1:b + 1] = rows[1:-1]
            if place["stage"] == 0:
                tab[0] = rows[0]
            if place["head"]:
                tab[L + 1] = rows[-1]
        return tab, head_wall
