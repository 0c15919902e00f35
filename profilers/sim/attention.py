"""A memory-hierarchy simulator for attention: which tiles sit in SRAM, what each algorithm
reads from and writes to HBM, and what that predicts for its time.

Each algorithm is written as the loop nest it runs (one head; heads and batch repeat it), as
operations on named tiles against one SM's SRAM (`Sram`):

    read(t)    the tile is needed in SRAM: a hit costs nothing, a miss reads it from HBM
    make(t)    a tile computed in SRAM (no HBM traffic), dirty
    store(t)   the algorithm writes the tile to HBM (it stays resident, clean)
    free(t)    a temporary dropped (no traffic)

SRAM is a least-recently-used store of `capacity` bytes. When a tile must come in and does not
fit, the least recently used tiles go out, and a dirty one is written to HBM first: an
overflow costs traffic, it is not free. A tile larger than the whole SRAM is streamed: each
use reads it from HBM (or, made, writes it there), and it is never resident. So "standard"
attention with everything in SRAM moves 4Nd elements while N is small, and the paper's
Θ(Nd + N²) once S and P no longer fit, from one model.

Algorithms (FlashAttention paper, Dao et al. 2022, notation: N queries, Nk keys, head dim d,
SRAM of M elements):
  standard   whole tensors: S = QKᵀ, P = softmax(S), O = PV (Algorithm 0 once S, P spill)
  tiled-1d   row blocks of Br queries, each against all of K and V (S's row block in SRAM)
  tiled-2d   Br x Bc tiles of S: S to HBM, a row-wise softmax pass, then PV tiled
  flash      Algorithm 1: K_j, V_j outer, Q_i inner, online softmax (m, l); never S or P in HBM
  flash-decode  one query row, the keys split across SMs (split-K), partial (o, m, l) merged
Tile sizes follow the paper: Bc = ceil(M / 4d), Br = min(Bc, d) (overridable).

The time model is a roofline with overlap: max(FLOPs / peak, bytes / bandwidth), each
scaled by the share of the GPU the work can occupy (units of parallel work over SMs: output
tiles for the unfused kernels, row blocks for flash, key splits for flash-decode).
`seed_compat` instead reproduces the course's simplified model: one global SRAM pool
(all SMs' together), overflow that costs nothing, and compute and memory time added.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

ALGOS = ("standard", "tiled-1d", "tiled-2d", "flash", "flash-decode")
TENSORS = ("Q", "K", "V", "S", "P", "O", "stats")
STAT_BYTES = 4  # m and l are float32


@dataclass(frozen=True)
class Shape:
    n: int  # query rows (1 with decode)
    nk: int  # keys
    d: int
    heads: int = 1
    batch: int = 1
    causal: bool = False
    elem: int = 2  # bytes per element of Q, K, V, S, P, O (fp16/bf16)

    @property
    def decode(self) -> bool:
        return self.n == 1 and self.nk > 1


@dataclass
class Sram:
    capacity: int
    free_overflow: bool = False  # seed-compatible: nothing is ever evicted, overflow costs nothing
    trace: list | None = None
    resident: OrderedDict = field(default_factory=OrderedDict)  # name -> [bytes, dirty]
    in_hbm: set = field(default_factory=set)  # tiles whose latest value is in HBM
    used: int = 0
    peak: int = 0
    reads: dict = field(default_factory=lambda: dict.fromkeys(TENSORS, 0))
    writes: dict = field(default_factory=lambda: dict.fromkeys(TENSORS, 0))
    flops: float = 0.0

    @staticmethod
    def tensor(name) -> str:
        return name[0] if isinstance(name, tuple) else name

    def _note(self, what: str, name, nbytes: float) -> None:
        if self.trace is not None:
            self.trace.append((what, _label(name), nbytes, self.used, [_label(k) for k in self.resident]))

    def _write_back(self, name, nbytes: int) -> None:
        self.writes[self.tensor(name)] += nbytes
        self.in_hbm.add(name)

    def _fit(self, nbytes: int) -> bool:
        """Make room for `nbytes`; False if it can never fit (then it is streamed)."""
        if self.free_overflow:
            return True
        if nbytes > self.capacity:
            return False
        while self.used + nbytes > self.capacity and self.resident:
            old, (ob, dirty) = self.resident.popitem(last=False)
            self.used -= ob
            if dirty:
                self._write_back(old, ob)
                self._note("evict, write back", old, ob)
            else:
                self._note("evict", old, ob)
        return True

    def _add(self, name, nbytes: int, dirty: bool) -> None:
        self.resident[name] = [nbytes, dirty]
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def read(self, name, nbytes: int) -> None:
        """The tile is needed in SRAM: a hit is free, a miss reads it from HBM."""
        if name in self.resident:
            self.resident.move_to_end(name)
            self._note("hit", name, nbytes)
            return
        self.reads[self.tensor(name)] += nbytes
        self.in_hbm.add(name)
        if self._fit(nbytes):
            self._add(name, nbytes, False)
            self._note("load", name, nbytes)
        else:
            self._note("stream in", name, nbytes)

    def make(self, name, nbytes: int) -> None:
        """A new tile computed in SRAM (or, larger than SRAM, streamed out to HBM as it is made)."""
        if name in self.resident:
            self.used -= self.resident.pop(name)[0]
        self.in_hbm.discard(name)
        if self._fit(nbytes):
            self._add(name, nbytes, True)
            self._note("compute", name, nbytes)
        else:
            self._write_back(name, nbytes)
            self._note("stream out", name, nbytes)

    def update(self, name) -> None:
        """A resident tile changed in place (an accumulator): dirty again."""
        r = self.resident.get(name)
        if r is not None:
            r[1] = True
            self.resident.move_to_end(name)
            self.in_hbm.discard(name)

    def store(self, name, nbytes: int) -> None:
        """The algorithm writes the tile to HBM (already there: nothing to do)."""
        if name in self.in_hbm:
            return
        self._write_back(name, nbytes)
        r = self.resident.get(name)
        if r is not None:
            r[1] = False
        self._note("write", name, nbytes)

    def free(self, name) -> None:
        """A tile dropped from SRAM without being written (a temporary, or one stored already)."""
        r = self.resident.pop(name, None)
        if r is not None:
            self.used -= r[0]
            self._note("free", name, r[0])

    def compute(self, flops: float, what: str = "") -> None:
        self.flops += flops
        if self.trace is not None:
            self.trace.append(("flops", what, flops, self.used, [_label(k) for k in self.resident]))


def _label(name) -> str:
    if isinstance(name, tuple):
        return name[0] + "".join(f"[{x}]" for x in name[1:])
    return str(name)


def tiles(shape: Shape, sram_bytes: int, br: int | None = None, bc: int | None = None) -> tuple[int, int]:
    """The paper's rule on M = SRAM in elements: Bc = ceil(M / 4d), Br = min(Bc, d); each at
    most the length it tiles."""
    m = sram_bytes // shape.elem
    bc = bc or max(1, math.ceil(m / (4 * shape.d)))
    br = br or max(1, min(bc, shape.d))
    return min(br, shape.n), min(bc, shape.nk)


# --- the algorithms: one head --------------------------------------------------------------------

def run_standard(s: Shape, m: Sram, br: int, bc: int) -> int:
    e, n, nk, d = s.elem, s.n, s.nk, s.d
    m.read("Q", n * d * e)
    m.read("K", nk * d * e)
    m.make("S", n * nk * e)
    m.compute(2 * n * nk * d, "S = Q Kᵀ")
    m.read("S", n * nk * e)
    m.free("S")  # softmax in place: P takes S's storage
    m.make("P", n * nk * e)
    m.compute(5 * n * nk, "P = softmax(S)")
    m.read("P", n * nk * e)
    m.read("V", nk * d * e)
    m.make("O", n * d * e)
    m.compute(2 * n * nk * d, "O = P V")
    m.store("O", n * d * e)
    # units of parallel work a head offers: each of the three kernels (GEMM, softmax, GEMM)
    # spreads over the output in tiles
    return math.ceil(n / br) * math.ceil(nk / bc)


def run_tiled_1d(s: Shape, m: Sram, br: int, bc: int) -> int:
    e, n, nk, d = s.elem, s.n, s.nk, s.d
    # the row block: as many query rows as fit beside the whole of K and V; where K and V
    # themselves do not fit (1-D tiling "cannot scale"), as many as fit alone, and K and V
    # are read again for every row block
    row = (nk + 2 * d) * e  # a row's S/P, Q and O
    room = m.capacity - 2 * nk * d * e
    br = max(1, min(n, (room if room >= row else m.capacity) // row))
    tr = math.ceil(n / br)
    for i in range(tr):
        r = min(br, n - i * br)
        keys = _keys_for(s, i * br, r)
        m.read(("Q", i), r * d * e)
        m.read("K", nk * d * e)
        m.make(("S", i), r * keys * e)
        m.compute(2 * r * keys * d, f"S[{i}] = Q[{i}] Kᵀ")
        m.free(("S", i))  # in place
        m.make(("P", i), r * keys * e)
        m.compute(5 * r * keys, f"P[{i}] = softmax(S[{i}])")
        m.read("V", nk * d * e)
        m.make(("O", i), r * d * e)
        m.compute(2 * r * keys * d, f"O[{i}] = P[{i}] V")
        m.store(("O", i), r * d * e)
        m.free(("P", i))
        m.free(("O", i))
        m.free(("Q", i))
    return tr


def run_tiled_2d(s: Shape, m: Sram, br: int, bc: int) -> int:
    e, n, nk, d = s.elem, s.n, s.nk, s.d
    tr, tc = math.ceil(n / br), math.ceil(nk / bc)
    for i in range(tr):  # pass 1: S tiles to HBM
        r = min(br, n - i * br)
        m.read(("Q", i), r * d * e)
        for j, c in _key_tiles(s, i, br, r, bc):
            m.read(("K", j), c * d * e)
            m.make(("S", i, j), r * c * e)
            m.compute(2 * r * c * d, f"S[{i},{j}] = Q[{i}] K[{j}]ᵀ")
            m.store(("S", i, j), r * c * e)
            m.free(("S", i, j))
        m.free(("Q", i))
    for i in range(tr):  # pass 2: row max and sum, then P = exp(S - m) / l, tile by tile
        r = min(br, n - i * br)
        m.make(("stats", i), 2 * r * STAT_BYTES)
        live = _key_tiles(s, i, br, r, bc)
        for j, c in live:
            m.read(("S", i, j), r * c * e)
            m.compute(3 * r * c, f"m, l of row block {i}")
            m.free(("S", i, j))
        for j, c in live:
            m.read(("S", i, j), r * c * e)
            m.free(("S", i, j))  # in place
            m.make(("P", i, j), r * c * e)
            m.compute(2 * r * c, f"P[{i},{j}]")
            m.store(("P", i, j), r * c * e)
            m.free(("P", i, j))
        m.free(("stats", i))
    for i in range(tr):  # pass 3: O = P V, tiled
        r = min(br, n - i * br)
        m.make(("O", i), r * d * e)
        for j, c in _key_tiles(s, i, br, r, bc):
            m.read(("P", i, j), r * c * e)
            m.read(("V", j), c * d * e)
            m.compute(2 * r * c * d, f"O[{i}] += P[{i},{j}] V[{j}]")
            m.update(("O", i))
            m.free(("P", i, j))
        m.store(("O", i), r * d * e)
        m.free(("O", i))
    return tr * tc


def run_flash(s: Shape, m: Sram, br: int, bc: int) -> int:
    """Algorithm 1 of the paper: O, l, m live in HBM, read and written back for every
    (K_j, V_j) block; S_ij and P_ij exist only in SRAM."""
    e, n, nk, d = s.elem, s.n, s.nk, s.d
    tr, tc = math.ceil(n / br), math.ceil(nk / bc)
    for j in range(tc):
        c = min(bc, nk - j * bc)
        m.read(("K", j), c * d * e)
        m.read(("V", j), c * d * e)
        for i in range(tr):
            r = min(br, n - i * br)
            if _masked(s, i, br, r, j, bc):
                continue
            m.read(("Q", i), r * d * e)
            if j > 0:  # the first block starts them in SRAM (the paper reads its zero-initialised O, l, m)
                m.read(("O", i), r * d * e)
                m.read(("stats", i), 2 * r * STAT_BYTES)
            else:
                m.make(("O", i), r * d * e)
                m.make(("stats", i), 2 * r * STAT_BYTES)
            m.make(("S", i, j), r * c * e)
            m.compute(2 * r * c * d, f"S[{i},{j}] = Q[{i}] K[{j}]ᵀ")
            m.free(("S", i, j))  # in place
            m.make(("P", i, j), r * c * e)
            m.compute(6 * r * c, f"online softmax [{i},{j}]")
            m.compute(2 * r * c * d, f"O[{i}] += P[{i},{j}] V[{j}]")
            m.update(("O", i))
            m.update(("stats", i))
            m.free(("P", i, j))
            m.store(("O", i), r * d * e)
            m.store(("stats", i), 2 * r * STAT_BYTES)
        m.free(("K", j))
        m.free(("V", j))
    return tr  # row blocks run in parallel (FlashAttention-2's split; a decode has one row block)


def decode_splits(s: Shape, sms: int, bc: int) -> int:
    """Split-K: enough key splits that batch x heads x splits fills the SMs, each split at
    least one key block."""
    return max(1, min(math.ceil(sms / max(1, s.batch * s.heads)), math.ceil(s.nk / bc)))


def run_flash_decode(s: Shape, m: Sram, br: int, bc: int, splits: int = 1) -> int:
    """Flash-decoding: the keys in `splits` chunks, each (on its own SM) an online-softmax pass
    that writes a partial o and its (m, l); then one pass merges them."""
    e, n, nk, d = s.elem, s.n, s.nk, s.d
    tc = math.ceil(nk / bc)
    per = math.ceil(tc / splits)
    for sp in range(splits):
        m.read(("Q", 0), n * d * e)
        m.make(("O", sp), n * d * 4)  # partials in float32
        m.make(("stats", sp), 2 * n * STAT_BYTES)
        for j in range(sp * per, min(tc, (sp + 1) * per)):
            c = min(bc, nk - j * bc)
            m.read(("K", j), c * d * e)
            m.read(("V", j), c * d * e)
            m.make(("S", 0, j), n * c * e)
            m.compute(2 * n * c * d, f"s[{j}] = q K[{j}]ᵀ")
            m.compute(6 * n * c, f"online softmax [{j}]")
            m.compute(2 * n * c * d, f"o[split {sp}] += p V[{j}]")
            m.update(("O", sp))
            m.update(("stats", sp))
            m.free(("S", 0, j))
            m.free(("K", j))
            m.free(("V", j))
        m.store(("O", sp), n * d * 4)
        m.store(("stats", sp), 2 * n * STAT_BYTES)
        m.free(("O", sp))
        m.free(("stats", sp))
        m.free(("Q", 0))
    if splits > 1:  # the merge: read every partial, write o
        for sp in range(splits):
            m.read(("O", sp), n * d * 4)
            m.read(("stats", sp), 2 * n * STAT_BYTES)
            m.compute(4 * n * d, f"merge split {sp}")
            m.free(("O", sp))
            m.free(("stats", sp))
        m.make(("O", "out"), n * d * e)
        m.store(("O", "out"), n * d * e)
    return splits


def _keys_for(s: Shape, row0: int, rows: int) -> int:
    """Keys a row block attends to (all of them; with a causal mask, up to its last row)."""
    if not s.causal:
        return s.nk
    return min(s.nk, s.nk - s.n + row0 + rows)


def _key_tiles(s: Shape, i: int, br: int, rows: int, bc: int) -> list[tuple[int, int]]:
    """(j, keys in tile j) of the key tiles row block i (of `rows` rows) attends to, in order:
    all of them, or with a causal mask those not wholly above the diagonal."""
    return [(j, min(bc, s.nk - j * bc)) for j in range(math.ceil(s.nk / bc)) if not _masked(s, i, br, rows, j, bc)]


def _masked(s: Shape, i: int, br: int, rows: int, j: int, bc: int) -> bool:
    """With a causal mask: the tile lies wholly above the diagonal (every key after every query)."""
    if not s.causal:
        return False
    last_query = s.nk - s.n + i * br + rows - 1  # queries end where the keys end
    return j * bc > last_query


RUNNERS = {"standard": run_standard, "tiled-1d": run_tiled_1d, "tiled-2d": run_tiled_2d, "flash": run_flash,
           "flash-decode": run_flash_decode}


# --- results ----------------------------------------------------------------------------------

@dataclass
class Result:
    algo: str
    shape: Shape
    spec_name: str
    sram_bytes: int
    br: int
    bc: int
    splits: int
    reads: dict  # tensor -> bytes, all heads and batch
    writes: dict
    flops: float
    peak_sram_bytes: int  # one SM's
    work_units: int  # parallel units (thread blocks) over all heads and batch
    compute_s: float
    memory_s: float
    predicted_s: float
    seed_compat: bool = False

    @property
    def hbm_read_bytes(self) -> int:
        return sum(self.reads.values())

    @property
    def hbm_write_bytes(self) -> int:
        return sum(self.writes.values())

    @property
    def hbm_bytes(self) -> int:
        return self.hbm_read_bytes + self.hbm_write_bytes

    @property
    def intensity(self) -> float:
        return self.flops / self.hbm_bytes if self.hbm_bytes else math.inf

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    @property
    def fits(self) -> bool:
        return self.peak_sram_bytes <= self.sram_bytes

    def row(self) -> dict:
        s = self.shape
        out = {"algo": self.algo, "n": s.n, "nk": s.nk, "d": s.d, "heads": s.heads, "batch": s.batch,
               "causal": s.causal, "decode": s.decode, "gpu": self.spec_name, "sram_bytes": self.sram_bytes,
               "br": self.br, "bc": self.bc, "splits": self.splits,
               "hbm_read_bytes": self.hbm_read_bytes, "hbm_write_bytes": self.hbm_write_bytes,
               "hbm_bytes": self.hbm_bytes}
        for t in TENSORS:
            out[f"read_{t}"] = self.reads[t]
            out[f"write_{t}"] = self.writes[t]
        out.update({"flops": self.flops, "intensity": self.intensity, "peak_sram_bytes": self.peak_sram_bytes,
                    "fits": self.fits, "work_units": self.work_units, "compute_s": self.compute_s,
                    "memory_s": self.memory_s, "bound": self.bound, "predicted_s": self.predicted_s,
                    "model": "seed-compatible" if self.seed_compat else "aios"})
        return out


def simulate(algo: str, shape: Shape, spec, br: int | None = None, bc: int | None = None,
             seed_compat: bool = False, trace: list | None = None) -> Result:
    """One algorithm on one shape and spec. `trace`, a list, receives every SRAM event of the
    first head."""
    if algo not in RUNNERS:
        raise ValueError(f"unknown algorithm {algo!r}")
    sram = spec.sram_total if seed_compat else spec.sram_per_sm
    tbr, tbc = tiles(shape, sram, br, bc)
    m = Sram(sram, free_overflow=seed_compat, trace=trace)
    splits = 1
    if algo == "flash-decode":
        splits = decode_splits(shape, spec.sms, tbc) if not seed_compat else 1
        units = run_flash_decode(shape, m, tbr, tbc, splits)
    else:
        units = RUNNERS[algo](shape, m, tbr, tbc)
    heads = shape.heads * shape.batch
    reads = {t: v * heads for t, v in m.reads.items()}
    writes = {t: v * heads for t, v in m.writes.items()}
    flops = m.flops * heads
    hbm = sum(reads.values()) + sum(writes.values())
    work = units * heads
    if seed_compat:  # the course's model: the whole GPU always busy, compute and memory added
        compute_s, memory_s = flops / spec.flops, hbm / spec.bandwidth
        predicted = compute_s + memory_s
    else:
        share = min(1.0, work / spec.sms)  # fewer units of work than SMs leave SMs idle
        compute_s, memory_s = flops / (spec.flops * share), hbm / (spec.bandwidth * share)
        predicted = max(compute_s, memory_s)
    return Result(algo, shape, spec.name, sram, tbr, tbc, splits, reads, writes, flops, m.peak, work,
                  compute_s, memory_s, predicted, seed_compat)


def default_algos(shape: Shape) -> tuple[str, ...]:
    """`--algo all`: flash-decode only for a decode shape, where it differs from flash."""
    return ALGOS if shape.decode else tuple(a for a in ALGOS if a != "flash-decode")
