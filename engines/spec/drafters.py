"""The drafters `--speculate` names, parsed and built from their spelling. One place for the
names, so the CLI's checks, its help and the benchmark read the same table.

    ngram        prompt lookup (`engines.spec.ngram`): no second model
    draft:MODEL  another checkpoint with the target's tokenizer, on the target's backend
                 (draft:MODEL@BACKEND: on another one, e.g. a simd drafter for a torch target)
    self:q4_0    the target's own weights re-quantized to Q4_0 (or self:q8_0)
    exit:L       the target's first L layers, then its final norm and head (no copy)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

DRAFTERS = {
    "ngram": "prompt lookup: the tokens that followed the latest earlier match of the last 3 (or 2) tokens",
    "draft:MODEL": "another model with the same tokenizer (a preset, a directory, a .gguf, smollm2; @BACKEND to run it elsewhere)",
    "self:q4_0": "the target's own weights in Q4_0 (self:q8_0: in Q8_0)",
    "exit:L": "the target's first L layers, then its final norm and head",
}
SELF_FORMATS = ("q4_0", "q8_0")


@dataclass(frozen=True)
class DraftSpec:
    kind: str  # ngram | draft | self | exit
    arg: str = ""  # the model, the format, or the layer count

    @property
    def label(self) -> str:
        return self.kind if not self.arg else f"{self.kind}:{self.arg}"


def parse(spec: str) -> DraftSpec:
    """A --speculate value, checked for spelling only (nothing is loaded)."""
    kind, sep, arg = spec.partition(":")
    fix = "use --speculate " + ", ".join(DRAFTERS)
    if kind == "ngram" and not sep:
        return DraftSpec("ngram")
    if kind == "draft" and arg.strip():
        return DraftSpec("draft", arg.strip())
    if kind == "self" and arg in SELF_FORMATS:
        return DraftSpec("self", arg)
    if kind == "self":
        raise UserError(f"--speculate {spec!r}: self-speculation takes {' or '.join(SELF_FORMATS)}",
                        "pass --speculate self:q4_0 or self:q8_0")
    if kind == "exit":
        if arg.isdigit() and int(arg) >= 1:
            return DraftSpec("exit", str(int(arg)))
        raise UserError(f"--speculate {spec!r}: exit takes a layer count (1 or more)", "pass --speculate exit:8, say")
    if kind == "draft":
        raise UserError("--speculate draft: names no model", "pass --speculate draft:MODEL (a preset, a path or smollm2)")
    raise UserError(f"--speculate {spec!r} is not a drafter", fix)


def check_speculate(spec: str | None, k: int, backend: str | None = None, draft_min: int = 0,
                    draft_max: int | None = None, p_min: float = 0.0, sampled: bool = False) -> None:
    """Raise UserError now, before anything loads, for a --speculate, --spec-k, --draft-min,
    --draft-max or --draft-p-min aios cannot run."""
    if spec is None:
        return
    d = parse(spec)
    if not 1 <= k <= 64:
        raise UserError(f"--spec-k must be between 1 and 64, got {k}", "pass --spec-k 4, say")
    if draft_max is not None and not 1 <= draft_max <= 64:
        raise UserError(f"--draft-max must be between 1 and 64, got {draft_max}", "pass --draft-max 16, say")
    if not 0 <= draft_min <= (draft_max or 64):
        raise UserError(f"--draft-min {draft_min} must be between 0 and --draft-max", "pass --draft-min 0, say")
    if not 0.0 <= p_min < 1.0:
        raise UserError(f"--draft-p-min must be in [0, 1), got {p_min}", "pass --draft-p-min 0.5, say")
    if p_min and d.kind == "ngram":
        raise UserError("--draft-p-min needs a model drafter: prompt lookup has no probabilities",
                        "drop --draft-p-min, or use --speculate draft:MODEL, self:q4_0 or exit:L")
    check_draft_min(draft_min, sampled, deterministic=d.kind == "ngram")
    if backend is not None and d.kind == "self":
        from ..backends import backend as record

        if not record(backend).quants:
            raise UserError(f"--speculate {spec}: the {backend} engine cannot hold quantized weights",
                            "use --backend simd or torch")
    if backend == "scalar" and d.kind in ("self", "exit"):
        raise UserError(f"--speculate {spec} is not built for the scalar engine", "use --backend simd or torch")


def check_for_model(spec: str | None, ckpt) -> None:
    """Refuse, once the model is open and before its weights load, a drafter it cannot have: an
    early exit past its layers, or a draft model with another tokenizer."""
    if spec is None:
        return
    cfg = ckpt.config
    d = parse(spec)
    if d.kind == "draft":
        from ..backends import check_backend
        from ..model.sources import open_model

        model, backend = split_backend(d.arg)
        if backend is not None:
            check_backend(backend, None)
        check_same_vocabulary(ckpt, open_model(model))
    if d.kind == "exit":
        check_exit(int(d.arg), cfg.num_layers)


def check_draft_min(draft_min: int, sampled: bool, deterministic: bool) -> None:
    """--draft-min drops short drafts; with a sampled model drafter, whether a draft is dropped
    would depend on what was drawn, which biases the output: refused."""
    if draft_min and sampled and not deterministic:
        raise UserError("--draft-min with a sampled model drafter would bias the output (whether a draft is "
                        "dropped would depend on what was drawn)", "drop --draft-min, or sample with --greedy")


def check_exit(layers: int, num_layers: int) -> None:
    if not 1 <= layers < num_layers:
        raise UserError(f"exit:{layers} needs 1 to {num_layers - 1} of the model's {num_layers} layers",
                        f"pass --speculate exit:{max(1, num_layers // 4)}, say")


def check_batched(spec: str | None) -> None:
    """The batched engine drafts by prompt lookup only."""
    if spec is not None and spec != "ngram":
        raise UserError(f"--speculate {spec} is not built for the batched engine: prompt lookup is",
                        "use --speculate ngram here (model drafters run in aios run)")


def make_drafter(spec: str, target=None, params=None, seed: int = 0, p_min: float = 0.0, dtype: str | None = None,
                 progress=None):
    """The drafter `spec` names, for the target engine `target` (sampled drafts follow `params`,
    with their own random stream from `seed`)."""
    d = parse(spec)
    if d.kind == "ngram":
        from .ngram import PromptLookup

        return PromptLookup()
    from ..sampling import SamplingParams
    from .model_drafter import ModelDrafter

    params = params or SamplingParams()
    V = target.cfg.vocab_size
    if d.kind == "exit":
        check_exit(int(d.arg), target.cfg.num_layers)
        engine = target.early_exit(int(d.arg))
    elif d.kind == "self":
        engine = type(target)(target.ckpt, dtype=dtype, progress=progress, quant=d.arg)
    else:
        from ..backends import engine_class
        from ..model.sources import open_model

        model, backend = split_backend(d.arg)
        ckpt = open_model(model)
        check_same_vocabulary(target.ckpt, ckpt)
        if backend is None:
            engine = type(target)(ckpt, dtype=dtype, progress=progress)
        else:
            engine = engine_class(backend)(ckpt, progress=progress)  # its own default dtype
    return ModelDrafter(engine, d.label, params, V, seed=seed, min_p=p_min)


def split_backend(arg: str) -> tuple[str, str | None]:
    """`MODEL@BACKEND` -> (MODEL, BACKEND); a plain MODEL -> (MODEL, None): the target's backend."""
    from ..backends import BACKENDS

    model, sep, backend = arg.rpartition("@")
    if sep and backend in BACKENDS:
        return model, backend
    return arg, None


def check_same_vocabulary(target, draft) -> None:
    """Refuse a draft model whose token ids mean other things than the target's. The tokenizers'
    vocabularies must be equal; the models' vocab sizes may differ by padded embedding rows
    (rows past the tokenizer's last id, which no text maps to)."""
    ta, tb = target.tokenizer, draft.tokenizer
    if ta is None or tb is None:
        if target.config.vocab_size != draft.config.vocab_size:
            raise UserError(f"the draft model {draft.name} has {draft.config.vocab_size} token ids and the target "
                            f"{target.config.vocab_size}, and no tokenizer says they agree",
                            "pick a draft model with the target's tokenizer")
        return
    va, vb = ta.get_vocab(with_added_tokens=True), tb.get_vocab(with_added_tokens=True)
    if va != vb:
        differ = len(set(va.items()) ^ set(vb.items()))
        raise UserError(f"the draft model {draft.name}'s tokenizer is not the target {target.name}'s "
                        f"({len(vb)} against {len(va)} tokens, {differ} entries differ)",
                        "pick a draft model with the target's tokenizer (the same family)")
    ids = max(va.values(), default=-1) + 1
    for c in (target, draft):
        if c.config.vocab_size < ids:
            raise UserError(f"{c.name}'s embedding has {c.config.vocab_size} rows for a tokenizer of {ids} ids",
                            "check the checkpoint: its embedding is cut short")
