"""The batched engine's options, declared once for `aios serve`, `aios bench throughput` and
`aios top --serve`, checked in one place before anything loads, and the engine built from
them; and the workload options those commands (and `aios bench serve`) check alike."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional, get_args

import typer

from .errors import fail

ENGINE_PANEL = "Engine"
MAX_NUM_SEQS = 64
MAX_NUM_BATCHED_TOKENS = 512
BLOCK_SIZE = 16

BatchModelOpt = Annotated[str, typer.Option("--model", "-m", help="A preset, an HF-format directory, a GGUF file or a cached repo id.", rich_help_panel=ENGINE_PANEL)]
BatchBackendOpt = Annotated[Optional[str], typer.Option("--backend", "-b", help="torch or cuda (the batched engine is PyTorch's). Default: cuda with a usable GPU, else torch.", rich_help_panel=ENGINE_PANEL)]
BatchDtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="torch: float32 (default), bfloat16, float16; cuda: bfloat16 (default), float16, float32.", rich_help_panel=ENGINE_PANEL)]
MaxNumSeqsOpt = Annotated[int, typer.Option("--max-num-seqs", help="Requests running at once, at most.", rich_help_panel=ENGINE_PANEL)]
MaxNumBatchedTokensOpt = Annotated[int, typer.Option("--max-num-batched-tokens", help="Tokens a step computes, at most (longer prompts are prefilled in chunks).", rich_help_panel=ENGINE_PANEL)]
KvBlocksOpt = Annotated[Optional[int], typer.Option("--kv-blocks", help="KV blocks in the pool.", rich_help_panel=ENGINE_PANEL, show_default=False)]
KvCacheBytesOpt = Annotated[Optional[int], typer.Option("--kv-cache-bytes", help="The pool's size in bytes, instead of --kv-blocks.", rich_help_panel=ENGINE_PANEL, show_default=False)]
BlockSizeOpt = Annotated[int, typer.Option("--block-size", help="Tokens a KV block holds.", rich_help_panel=ENGINE_PANEL)]
PrefixCachingOpt = Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching", help="Share full KV blocks between requests with the same prefix.", rich_help_panel=ENGINE_PANEL)]
TorchThreadsOpt = Annotated[Optional[int], typer.Option("--threads", "-t", help="Threads for torch. Default: the usable CPUs less those other processes keep busy.", rich_help_panel=ENGINE_PANEL, show_default=False)]


def variant(opt, *, panel: str | None = None, more: str | None = None):
    """One of the options here under another help panel (top's serving view), or with a
    sentence more in its help: what the option is in this command alone (its own default)."""
    kind, info = get_args(opt)
    info = copy.copy(info)
    if panel is not None:
        info.rich_help_panel = panel
    if more is not None:
        info.help = f"{info.help} {more}"
    return Annotated[kind, info]


def check_profile(profile: str) -> None:
    if profile not in ("op", "none"):
        fail(f"unknown --profile {profile!r} — choose op or none")


def batched_backend(backend: str | None, dtype: str | None) -> str:
    """The backend the batched engine runs on: one whose record says it batches, by default the
    GPU one where a GPU is usable; checked now, before anything loads."""
    from engines import BACKENDS, check_backend, default_backend

    if backend is None:
        backend = default_backend(batched=True)[0]
    batching = [b.name for b in BACKENDS.values() if b.batches]
    if backend not in BACKENDS or not BACKENDS[backend].batches:
        cpu = [b for b in batching if BACKENDS[b].device == "cpu"]
        gpu = [b for b in batching if BACKENDS[b].device != "cpu"]
        fail(f"the batched engine runs on {' or '.join(cpu + gpu)}, not {backend!r} — pass --backend {cpu[0]}"
             + (f" (or {gpu[0]} with a GPU)" if gpu else ""))
    check_backend(backend, dtype, batched=True)
    return backend


@dataclass
class BatchOptions:
    """The batched engine as asked for on the command line."""

    backend: str | None  # None: the default; a checked name after `check`
    dtype: str | None
    max_num_seqs: int = MAX_NUM_SEQS
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS
    kv_blocks: int | None = None
    kv_cache_bytes: int | None = None
    block_size: int = BLOCK_SIZE
    prefix_caching: bool = True
    speculate: str | None = None  # --speculate (prompt lookup only, in the batched engine)
    spec_k: int = 4

    def check(self) -> str:
        """Refuse what cannot run before anything loads; returns the backend."""
        if self.kv_blocks is not None and self.kv_cache_bytes is not None:
            fail("--kv-blocks and --kv-cache-bytes both size the pool — give one")
        if self.speculate is not None:  # a UserError is the command's one-line error
            from engines.spec.drafters import check_batched, check_speculate

            check_speculate(self.speculate, self.spec_k)
            check_batched(self.speculate)
        self.backend = batched_backend(self.backend, self.dtype)
        return self.backend

    def load(self, ckpt, err, quiet: bool):
        """The batch-1 engine the batched one drives, loaded behind a spinner."""
        from contextlib import nullcontext

        from profilers.harness import build_engine

        with err.status(f"loading {ckpt.name} on {self.backend}", spinner="dots") if not quiet else nullcontext():
            engine, _ = build_engine(ckpt, self.backend, self.dtype)
        return engine

    def build(self, engine, *, default_blocks: int | None = None, default_bytes: int | None = None):
        """The batched engine over `engine`. The pool as --kv-blocks or --kv-cache-bytes size
        it; given neither, as the command sizes it by default."""
        from engines.batch.engine import BatchEngine

        blocks, nbytes = self.kv_blocks, self.kv_cache_bytes
        if blocks is None and nbytes is None:
            blocks, nbytes = default_blocks, default_bytes
        return BatchEngine(engine, num_blocks=blocks, kv_cache_bytes=nbytes, block_size=self.block_size,
                           max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
                           prefix_caching=self.prefix_caching, speculate=self.speculate, spec_k=self.spec_k)


# --- the workload -------------------------------------------------------------------------
# `aios bench throughput` runs it through the engine, `aios bench serve` sends it to a server.

WORKLOAD_PANEL = "Workload"
NumRequestsOpt = Annotated[int, typer.Option("--num-requests", "-N", help="Requests in the workload.", rich_help_panel=WORKLOAD_PANEL)]
RateOpt = Annotated[str, typer.Option("--rate", help="Arrivals per second (a Poisson process), or inf: every request at once.", rich_help_panel=WORKLOAD_PANEL)]
InputLenOpt = Annotated[str, typer.Option("--input-len", help="Prompt lengths A:B, uniform (random ids from --seed).", rich_help_panel=WORKLOAD_PANEL)]
OutputLenOpt = Annotated[Optional[str], typer.Option("--output-len", help="Output lengths A:B, uniform; every request generates exactly that many (EOS is ignored). Default 64:128; with --dataset, its replies' lengths.", rich_help_panel=WORKLOAD_PANEL, show_default=False)]
PrefixLenOpt = Annotated[int, typer.Option("--prefix-len", help="Random prompts start with the same this many ids (a shared system prompt: what prefix caching saves).", rich_help_panel=WORKLOAD_PANEL)]
DatasetOpt = Annotated[Optional[Path], typer.Option("--dataset", help="A JSONL file of ShareGPT-style conversations (or prompt/output_len objects).", rich_help_panel=WORKLOAD_PANEL)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the lengths, ids and arrivals.", rich_help_panel=WORKLOAD_PANEL)]


def parse_rate(text: str) -> float:
    """--rate: requests per second of a Poisson process, or inf (every request at once)."""
    t = text.strip().lower()
    if t in ("inf", "infinity"):
        return math.inf
    try:
        r = float(t)
    except ValueError:
        fail(f"--rate takes requests per second or inf, got {text!r}")
    if not r > 0 or math.isinf(r) or math.isnan(r):
        fail(f"--rate must be positive (or inf: every request at once), got {text!r}")
    return r


def check_workload(num_requests: int, rate: str, input_len: str, output_len: str | None, prefix_len: int,
                   most_requests: int = 1_000_000) -> tuple[float, tuple[int, int], tuple[int, int] | None]:
    """Check the workload options (--num-requests, --prefix-len, --rate, --input-len,
    --output-len) before anything loads: (rate, input lengths, output lengths or None where
    --output-len is not given)."""
    from engines.errors import UserError
    from profilers.throughput import parse_range

    if not 1 <= num_requests <= most_requests:
        fail(f"--num-requests must be between 1 and {most_requests:,}, got {num_requests}")
    if prefix_len < 0:
        fail(f"--prefix-len must be 0 or more, got {prefix_len}")
    r = parse_rate(rate)
    try:
        in_range = parse_range(input_len, "--input-len")
        out_range = parse_range(output_len, "--output-len") if output_len is not None else None
    except UserError as e:
        fail(str(e))
    return r, in_range, out_range

