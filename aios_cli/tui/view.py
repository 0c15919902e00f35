"""What one frame of `aios top` shows (`TopView`, a copy the UI may read while the worker goes
on), and the folding of measured steps into its per-layer tables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from profilers.costs import pass_costs
from profilers.memory import MemorySample
from profilers.record import barrier_share, step_layer_bytes, step_layer_table


@dataclass
class GenStat:
    """One finished (or interrupted) generation, for the tokens/s history."""

    index: int
    backend: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float | None


@dataclass
class SpecStat:
    """One generation's speculative rounds so far, kept pass by pass in the worker (O(1) a
    verify pass): the figures `SpeculativeGeneration.acceptance()` reports, and where an
    emitted token's time went."""

    generation: int  # the generation they belong to
    k_max: int  # the histogram's last index (--draft-max, else --spec-k)
    adaptive: bool
    k: int = 0  # the k the next round drafts
    rounds: int = 0  # verify passes
    drafted: int = 0
    accepted: int = 0
    hist: list[int] = field(default_factory=list)  # rounds that kept 0..k_max drafts
    dropped: int = 0  # drafts shorter than --draft-min, not verified
    emitted: int = 0  # tokens after the prompt
    draft_s: float = 0.0  # wall time of the draft steps
    target_s: float = 0.0  # wall time of the verify and decode steps

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def tokens_per_verify_step(self) -> float | None:
        return (self.accepted + self.rounds) / self.rounds if self.rounds else None

    def copy(self) -> "SpecStat":
        return replace(self, hist=list(self.hist))


@dataclass
class TopView:
    """Everything one frame shows: a copy, safe to read while the worker goes on."""

    model: str
    backend: str
    dtype: str = "…"
    weights: str = "…"  # what the engine holds its matrices as, and the bits a weight takes
    device: str = "…"
    threads: int | None = None  # what the engine's pool runs with
    num_params: int = 0
    profile: str = "op"
    state: str = "starting"  # starting | loading | warming | generating | paused | error
    message: str | None = None  # what is loading, or the last error
    load_progress: tuple[int, int] | None = None
    backends: tuple[str, ...] = ()
    prompt: str = ""
    generation: int = 0  # generations started this session
    token_index: int = 0  # tokens generated in the current generation
    total_tokens: int = 0  # tokens generated this session, all generations
    layer_rows: tuple[str, ...] = ()
    # per-layer tables, shape (L+2, len(KINDS)): seconds and minimum bytes moved
    latest: np.ndarray | None = None
    latest_bytes: np.ndarray | None = None
    latest_wall: float | None = None
    avg: np.ndarray | None = None
    avg_bytes: np.ndarray | None = None
    avg_wall: float | None = None
    avg_n: int = 0
    prefill: np.ndarray | None = None
    prefill_bytes: np.ndarray | None = None
    prefill_wall: float | None = None
    prefill_tokens: int = 0
    # tokens/s
    decode_rates: list[float] = field(default_factory=list)  # 1 / wall of each decode token, oldest first
    generations: list[GenStat] = field(default_factory=list)
    current_ttft_s: float | None = None
    # reduction barriers
    barriers_per_token: int | None = None
    barrier_share: float | None = None  # of the latest decode token's time
    barrier_share_avg: float | None = None  # over the moving-average window
    barriers_total: int = 0  # barriers waited on this session (prefill and decode)
    barrier_shares: list[float] = field(default_factory=list)
    # memory
    memory: list[MemorySample] = field(default_factory=list)
    kv_cache_bytes: int | None = None
    kv_positions: tuple[int, int] | None = None  # (filled, capacity)
    no_gpu_reason: str | None = None
    # text
    text: str = ""
    # speculative decoding (--speculate): the drafter, its rounds, and the per-layer tables of
    # its draft steps (a model drafter's own engine; None with prompt lookup), rows as layer_rows
    speculate: str | None = None
    spec: SpecStat | None = None
    draft_avg: np.ndarray | None = None
    draft_avg_wall: float | None = None
    draft_n: int = 0
    # a TP x PP run (--tp, --pp): its ranks side by side (profilers.dist_live.RanksFigures), and
    # the threads each rank runs with
    ranks: object | None = None
    rank_threads: int | None = None

    def copy(self) -> "TopView":
        return TopView(**{k: getattr(self, k) for k in self.__dataclass_fields__})


def pad_layers(tab: np.ndarray, rows: int) -> np.ndarray:
    """A per-layer table of L layers (rows in, 0..L-1, out) on `rows` layers: the layers it
    lacks are zero, its `out` row stays last."""
    L = tab.shape[0] - 2
    if L == rows:
        return tab
    out = np.zeros((rows + 2, tab.shape[1]))
    out[:L + 1] = tab[:L + 1]
    out[rows + 1] = tab[L + 1]
    return out


class Folder:
    """Per-layer tables of measured steps, built when the UI asks (a few times a second, not
    every token) and cached per step. An item is (step, engine's op_weight_bytes, activation
    itemsize): what the step's bytes are counted from. A speculative run's draft steps come
    apart, as (step, the draft engine's layer count): seconds only, their passes uncosted.
    Tables are drawn on `rows` layers (the target's, or a draft model's where it has more)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rows = cfg.num_layers
        self._tables: dict[int, tuple] = {}  # id(step) -> (step, seconds table, bytes table, barrier share)

    def table(self, item: tuple) -> tuple:
        st, weight_bytes, ab = item
        got = self._tables.get(id(st))
        if got is None or got[0] is not st:
            L = self.cfg.num_layers
            costs = pass_costs(self.cfg, st.n_tokens, st.past, weight_bytes, ab)
            got = (st, pad_layers(step_layer_table(st, L), self.rows),
                   pad_layers(step_layer_bytes(st, L, costs), self.rows), st.barrier_share)
            self._tables[id(st)] = got
        return got[1:]

    def draft_table(self, item: tuple) -> np.ndarray:
        st, layers = item
        got = self._tables.get(id(st))
        if got is None or got[0] is not st:
            got = (st, pad_layers(step_layer_table(st, layers), self.rows))
            self._tables[id(st)] = got
        return got[1]

    def fold(self, out: TopView, recent: list[tuple], pre: tuple | None, drafts: list[tuple] = ()) -> None:
        """Per-layer tables for the latest decode token, the moving average and the prefill
        (and the moving average of a model drafter's draft steps)."""
        if pre is not None:
            out.prefill, out.prefill_bytes, _ = self.table(pre)
            out.prefill_wall = pre[0].wall_s
        if recent:
            tabs = [self.table(it) for it in recent]
            walls = [it[0].wall_s for it in recent]
            out.latest, out.latest_bytes, out.barrier_share = tabs[-1]
            out.latest_wall = walls[-1]
            n = len(tabs)
            out.avg = sum(t[0] for t in tabs) / n
            out.avg_bytes = sum(t[1] for t in tabs) / n
            out.avg_wall = sum(walls) / n
            out.avg_n = n
            out.barrier_share_avg = barrier_share([it[0] for it in recent])  # as `aios run` reports it
        if drafts:
            out.draft_avg = sum(self.draft_table(it) for it in drafts) / len(drafts)
            out.draft_avg_wall = sum(it[0].wall_s for it in drafts) / len(drafts)
            out.draft_n = len(drafts)
        keep = {id(it[0]) for it in recent} | {id(it[0]) for it in drafts} | ({id(pre[0])} if pre else set())
        for k in [k for k in self._tables if k not in keep]:
            self._tables.pop(k, None)
