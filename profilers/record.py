"""The profiler record of one run, and the numbers derived from it.

Everything shown or exported — summary, per-layer and per-op tables, the tidy CSV, the
Chrome trace — is computed here from the measured steps, so all outputs agree.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from engines.model.config import ModelConfig
from engines.ops import KIND_OF, KINDS, OP_INDEX, OPS, OTHER

from .costs import PassCosts, pass_costs
from .memory import MemorySample
from .probe import GENERATION_PHASES, Step
from .provenance import PROVENANCE_FIELDS




_BEFORE_LAYERS = (OP_INDEX["embed"], OP_INDEX["recv"])  # a pipeline stage's input comes in with `recv`


def _layer_rows(st: Step, num_layers: int) -> np.ndarray:
    """Row of each executed op in a layer table: 0 = `in` (embed, recv), 1..L = layers, L+1 = `out`."""
    return np.where(st.layers >= 0, st.layers + 1, np.where(np.isin(st.ops, _BEFORE_LAYERS), 0, num_layers + 1))


def step_layer_table(st: Step, num_layers: int) -> np.ndarray:
    """Seconds of one op-level step, shape (L+2, len(KINDS)): rows in, 0..L-1, out; columns by
    kind. Time no op claimed goes to (out, other), so the table sums to the step's wall time."""
    tab = np.zeros((num_layers + 2, len(KINDS)))
    np.add.at(tab, (_layer_rows(st, num_layers), KIND_OF[st.ops]), st.durs_ns * 1e-9)
    tab[num_layers + 1, KINDS.index(OTHER)] += max(0.0, st.wall_s - st.op_seconds)
    return tab


def step_layer_bytes(st: Step, num_layers: int, costs: PassCosts) -> np.ndarray:
    """Minimum bytes each (layer row, kind) cell of one op-level step moved (from `costs`)."""
    tab = np.zeros((num_layers + 2, len(KINDS)))
    np.add.at(tab, (_layer_rows(st, num_layers), KIND_OF[st.ops]), costs.event_bytes(st.layers, st.ops))
    return tab


def token_walls(steps: list[Step]) -> list[float]:
    """Seconds per token of generation steps, one figure per step that emits: its wall (with
    the walls of the steps before it that emitted nothing, a speculative round's drafts) over
    the tokens it emitted. For one-token decode steps, each step's wall."""
    out, pending = [], 0.0
    for s in steps:
        pending += s.wall_s
        if s.emitted:
            out.append(pending / s.emitted)
            pending = 0.0
    return out


def barrier_share(steps: list[Step]) -> float | None:
    """Barrier time over wall time of op-level steps, pooled (the one definition: `aios run`'s
    summary and `aios top` both use it)."""
    wall = sum(s.wall_s for s in steps)
    return sum(s.barrier_seconds for s in steps) / wall if wall else None


@dataclass
class RunRecord:
    run_id: str
    backend: str
    model: str
    config: ModelConfig
    dtype: str
    device: str
    profile: str
    op_weight_bytes: np.ndarray  # (L + 1, len(OPS)) as the engine holds its weights
    act_itemsize: int
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str | None
    steps: list[Step]
    memory: list[MemorySample]
    load_s: float
    jit_s: float | None  # None: the engine has no JIT, or no warm-up ran
    weight_bytes: int  # resident, as the engine holds them
    stored_weight_bytes: int
    kv_cache_bytes: int
    peak_rss_bytes: int
    sampling: str
    device_peak_bandwidth: float | None = None  # bytes/s, GPU only (from NVML clocks)
    quant: str | None = None  # --quant as asked
    weight_format: str = ""  # what the engine holds the matrices as: Q4_1+Q8_0, float32, ...
    bits_per_weight: float | None = None  # bytes held per parameter x 8, scales and norms included
    quant_dot: str = ""  # a quantized matrix's input as multiplied: int8, float32, ... ("" none quantized)
    provenance: dict = field(default_factory=dict)  # versions, threads, machine load (PROVENANCE_FIELDS)
    meta: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How tables name this record: its backend, and its rank in a distributed run."""
        d = self.meta.get("dist")
        return f"{self.backend} r{d['rank']}" if d else self.backend

    # --- steps -----------------------------------------------------------------------
    @property
    def prefill(self) -> Step:
        return self.steps[0]

    @property
    def decode_steps(self) -> list[Step]:
        """The batch-1 decode passes (one token each)."""
        return [s for s in self.steps if s.phase == "decode"]

    @property
    def generation_steps(self) -> list[Step]:
        """Every step after the prompt whose time is generation time: decode passes, and a
        speculative run's draft and verify steps (which emit 0 and 1..k+1 tokens)."""
        return [s for s in self.steps if s.phase in GENERATION_PHASES]

    def step_costs(self, st: Step) -> PassCosts:
        return pass_costs(self.config, st.n_tokens, st.past, self.op_weight_bytes, self.act_itemsize)

    def step_totals(self, st: Step) -> tuple[float, float]:
        """(flops, bytes) of everything the step executed (from its op counts)."""
        if st.op_counts is None:
            return float("nan"), float("nan")
        return self.step_costs(st).totals(st.op_counts)

    # --- summary ---------------------------------------------------------------------
    def summary(self) -> dict:
        pre = self.prefill
        dec = self.decode_steps
        gen = self.generation_steps
        walls = token_walls(gen)
        gen_tokens = sum(s.emitted for s in gen)
        gen_total = sum(s.wall_s for s in gen)
        out: dict = {
            "run_id": self.run_id,
            "backend": self.backend,
            "model": self.model,
            "arch": self.config.arch,
            "dtype": self.dtype,
            "quant": self.quant,
            "weight_format": self.weight_format,
            "bits_per_weight": self.bits_per_weight,
            "quant_dot": self.quant_dot,
            "device": self.device,
            "profile": self.profile,
            "num_layers": self.config.num_layers,
            "hidden_size": self.config.hidden_size,
            "num_params": self.config.num_params(),
            "sampling": self.sampling,
            "prompt_tokens": len(self.prompt_ids),
            "new_tokens": len(self.generated_ids),
            "load_s": self.load_s,
            "jit_s": self.jit_s,
            "ttft_s": pre.wall_s,
            "prefill_tokens_per_s": pre.n_tokens / pre.wall_s if pre.wall_s else None,
            "decode_tokens": gen_tokens,
            "decode_tokens_per_s": gen_tokens / gen_total if gen_total else None,
            "decode_ms_median": statistics.median(walls) * 1e3 if walls else None,
            "decode_ms_min": min(walls) * 1e3 if walls else None,
            "decode_ms_max": max(walls) * 1e3 if walls else None,
            "reduction_barriers_per_token": None,
            "prefill_reduction_barriers": pre.barriers,
            "barrier_time_share": None,
            "op_time_share": None,
            "decode_bytes_per_token": None,
            "decode_flops_per_token": None,
            "achieved_bandwidth_bytes_per_s": None,
            "device_peak_bandwidth_bytes_per_s": self.device_peak_bandwidth,
            "bandwidth_share_of_peak": None,
            "peak_rss_bytes": self.peak_rss_bytes,
            "weight_bytes": self.weight_bytes,
            "stored_weight_bytes": self.stored_weight_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "device_peak_bytes": None,
            **{k: self.provenance.get(k) for k in PROVENANCE_FIELDS},
            **self.speculation_summary(),
            **self.rank_summary(),
        }
        if dec and dec[0].barriers is not None:
            counts = [s.barriers for s in dec]
            out["reduction_barriers_per_token"] = statistics.median_low(counts)
            f, b = zip(*(self.step_totals(s) for s in dec))
            out["decode_flops_per_token"] = float(np.mean(f))
            out["decode_bytes_per_token"] = float(np.mean(b))
        target = [s for s in gen if s.phase != "draft" and s.engine != "draft" and s.op_counts is not None] \
            if self.meta.get("speculation") else []
        if target and gen_tokens:
            # several tokens a verify pass: what the target's passes moved, per emitted token (a
            # draft model's passes are not counted: the record's costs are the target's shapes)
            f, b = zip(*(self.step_totals(s) for s in target))
            out["decode_flops_per_token"] = float(np.sum(f)) / gen_tokens
            out["decode_bytes_per_token"] = float(np.sum(b)) / gen_tokens
        if out["decode_bytes_per_token"] is not None:
            if out["decode_tokens_per_s"]:
                out["achieved_bandwidth_bytes_per_s"] = out["decode_bytes_per_token"] * out["decode_tokens_per_s"]
                if self.device_peak_bandwidth:
                    out["bandwidth_share_of_peak"] = out["achieved_bandwidth_bytes_per_s"] / self.device_peak_bandwidth
        timed = [s for s in (gen or [pre]) if s.durs_ns is not None]
        if timed:
            out["barrier_time_share"] = barrier_share(timed)
            out["op_time_share"] = sum(s.op_seconds for s in timed) / sum(s.wall_s for s in timed)
        peaks = [m.torch_peak_bytes for m in self.memory if m.torch_peak_bytes is not None]
        if peaks:
            out["device_peak_bytes"] = max(peaks)
        return out

    def rank_summary(self) -> dict:
        """A distributed run's rank: its place, what it holds, and its decode time split into
        compute and communication (`profilers.ranks`); all None on one rank."""
        from .ranks import RANK_FIELDS, rank_row

        d = self.meta.get("dist")
        if not d:
            return dict.fromkeys(RANK_FIELDS)
        row = rank_row(self)
        return {k: d[k] if k in ("world", "tp", "pp") else row[k] for k in RANK_FIELDS}

    def speculation_summary(self) -> dict:
        """A speculative run's drafter, k, acceptance rate and tokens per verify step, and the
        draft and verify time per emitted token (all None without --speculate)."""
        spec = self.meta.get("speculation") or {}
        out = {"speculate": spec.get("drafter"), "spec_k": spec.get("k"),
               "acceptance_rate": spec.get("acceptance_rate"),
               "tokens_per_verify_step": spec.get("tokens_per_verify_step"),
               "draft_s_per_token": None, "verify_s_per_token": None,
               "baseline_decode_tokens_per_s": spec.get("baseline_decode_tokens_per_s"), "spec_speedup": None}
        gen = self.generation_steps
        emitted = sum(s.emitted for s in gen)
        if spec and emitted:
            out["draft_s_per_token"] = sum(s.wall_s for s in gen if s.phase == "draft") / emitted
            out["verify_s_per_token"] = sum(s.wall_s for s in gen if s.phase != "draft") / emitted
            base = out["baseline_decode_tokens_per_s"]
            wall = sum(s.wall_s for s in gen)
            if base and wall:
                out["spec_speedup"] = emitted / wall / base
        return out

    # --- per layer -------------------------------------------------------------------
    def layer_rows(self) -> list[str]:
        return ["in"] + [str(i) for i in range(self.config.num_layers)] + ["out"]

    def layer_table(self, phase: str) -> np.ndarray | None:
        """Seconds per token, shape (L+2, len(KINDS)): rows in, 0..L-1, out; cols by kind.
        prefill: the one prefill pass; decode: mean over decode tokens."""
        steps = [s for s in self.steps if s.phase == phase and s.durs_ns is not None]
        if not steps:
            return None
        return sum(step_layer_table(s, self.config.num_layers) for s in steps) / len(steps)

    # --- per op ----------------------------------------------------------------------
    def op_table(self) -> list[dict]:
        """One row per canonical op (plus `other`): calls and seconds per token by phase,
        with FLOPs and bytes per decode token and the rates they imply."""
        pre = [s for s in self.steps if s.phase == "prefill" and s.durs_ns is not None]
        dec = [s for s in self.decode_steps if s.durs_ns is not None]
        n_dec = max(len(dec), 1)
        rows = []
        dec_sec = np.zeros(len(OPS))
        pre_sec = np.zeros(len(OPS))
        calls = np.zeros(len(OPS))
        flops = np.zeros(len(OPS))
        nbytes = np.zeros(len(OPS))
        for s in pre:
            pre_sec += np.bincount(s.ops, weights=s.durs_ns * 1e-9, minlength=len(OPS))
        for s in dec:
            dec_sec += np.bincount(s.ops, weights=s.durs_ns * 1e-9, minlength=len(OPS))
            calls += s.op_counts
            c = self.step_costs(s)
            flops += s.op_counts * c.flops
            nbytes += np.bincount(s.ops, weights=c.event_bytes(s.layers, s.ops), minlength=len(OPS))
        dec_sec /= n_dec
        calls /= n_dec
        flops /= n_dec
        nbytes /= n_dec
        dec_wall = sum(s.wall_s for s in dec) / n_dec if dec else 0.0
        for i, op in enumerate(OPS):
            if calls[i] == 0 and pre_sec[i] == 0:
                continue
            rows.append({
                "op": op.name, "kind": op.kind, "barrier": op.barrier,
                "calls_per_token": float(calls[i]),
                "prefill_s": float(pre_sec[i]),
                "decode_s_per_token": float(dec_sec[i]),
                "decode_share": float(dec_sec[i] / dec_wall) if dec_wall else None,
                "decode_flops_per_token": float(flops[i]),
                "decode_bytes_per_token": float(nbytes[i]),
                "gflops_per_s": float(flops[i] / dec_sec[i] / 1e9) if dec_sec[i] else None,
                "gbytes_per_s": float(nbytes[i] / dec_sec[i] / 1e9) if dec_sec[i] else None,
            })
        pre_other = sum(max(0.0, s.wall_s - s.op_seconds) for s in pre)
        dec_other = sum(max(0.0, s.wall_s - s.op_seconds) for s in dec) / n_dec
        rows.append({
            "op": OTHER, "kind": OTHER, "barrier": False, "calls_per_token": 0.0,
            "prefill_s": pre_other, "decode_s_per_token": dec_other,
            "decode_share": dec_other / dec_wall if dec_wall else None,
            "decode_flops_per_token": 0.0, "decode_bytes_per_token": 0.0,
            "gflops_per_s": None, "gbytes_per_s": None,
        })
        return rows

    # --- tidy events -----------------------------------------------------------------
    def events(self):
        """Yield one tidy dict per op event, plus one `other` row per step (so each step's
        rows add up to its wall time)."""
        base = {"run_id": self.run_id, "backend": self.backend, "model": self.model}
        made_by = {k: self.provenance.get(k) for k in PROVENANCE_FIELDS}
        for s in self.steps:
            if s.durs_ns is None:
                continue
            c = self.step_costs(s)
            nbytes = c.event_bytes(s.layers, s.ops).tolist()
            step = {"engine": s.engine, "rank": s.rank, "emitted": s.emitted}
            for layer, op, dur, b in zip(s.layers.tolist(), s.ops.tolist(), s.durs_ns.tolist(), nbytes):
                o = OPS[op]
                yield {**base, "phase": s.phase, "token_index": s.token_index, "layer": layer, "op": o.name,
                       "kind": o.kind, "seconds": dur * 1e-9, "flops": int(c.flops[op]), "bytes": int(b), **made_by,
                       **step}
            yield {**base, "phase": s.phase, "token_index": s.token_index, "layer": -1, "op": OTHER,
                   "kind": OTHER, "seconds": max(0.0, s.wall_s - s.op_seconds), "flops": 0, "bytes": 0, **made_by,
                   **step}

    def layers_json(self) -> list[dict]:
        out = []
        for phase in ("prefill", "decode"):
            tab = self.layer_table(phase)
            if tab is None:
                continue
            for name, row in zip(self.layer_rows(), tab):
                # `layer` is an int in every export (-1 outside the transformer layers, as in the
                # CSV); `row` tells the embedding (in) from the head (out)
                out.append({"phase": phase, "row": name, "layer": int(name) if name.isdigit() else -1,
                            "seconds": float(row.sum()),
                            "by_kind": {k: float(v) for k, v in zip(KINDS, row)}})
        return out

    def to_json(self) -> dict:
        d = self.summary()
        d.update({
            "prompt_token_ids": list(self.prompt_ids),
            "generated_token_ids": list(self.generated_ids),
            "text": self.text,
            "config": self.config.to_dict(),
            "layers": self.layers_json(),
            "ops": self.op_table(),
            "tokens": [
                {"phase": s.phase, "token_index": s.token_index, "n_tokens": s.n_tokens, "past": s.past,
                 "wall_s": s.wall_s, "op_seconds": s.op_seconds if s.durs_ns is not None else None,
                 "ops_counted": s.ops_counted, "reduction_barriers": s.barriers,
                 "emitted": s.emitted, "engine": s.engine, "rank": s.rank}
                for s in self.steps
            ],
            "memory": [m.to_dict() for m in self.memory],
            "meta": self.meta,
        })
        return d
