"""`aios bench serve`: a workload sent to any OpenAI-compatible server (aios serve, vLLM,
llama.cpp's server, ...) over HTTP, reported as `aios bench throughput` reports the engine."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import console
from ..batch_options import (DatasetOpt, InputLenOpt, NumRequestsOpt, OutputLenOpt, PrefixLenOpt, RateOpt, SeedOpt,
                             check_workload, variant)
from ..errors import fail, guarded
from ..outputs import check_format, check_outputs, write
from .report import FORMATS, print_report, summary_rows, workload_fields

_SERVER = "Server"
_OUT = "Output"


@guarded
def serve(
    url: Annotated[str, typer.Option("--url", help="The server's base URL, e.g. http://127.0.0.1:8000.", rich_help_panel=_SERVER)] = "http://127.0.0.1:8000",
    served_model: Annotated[Optional[str], typer.Option("--model", "-m", help="The model name to send. Default: the first one /v1/models lists.", rich_help_panel=_SERVER, show_default=False)] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="A local model (preset, directory, GGUF) whose tokenizer reads --dataset and whose vocabulary bounds random ids. Default: the served model's name, where it opens here.", rich_help_panel=_SERVER, show_default=False)] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Sent as 'Authorization: Bearer KEY' (or set AIOS_API_KEY).", envvar="AIOS_API_KEY", rich_help_panel=_SERVER, show_default=False)] = None,
    num_requests: NumRequestsOpt = 64,
    rate: RateOpt = "inf",
    input_len: variant(InputLenOpt, more="Sent as token ids.") = "16:64",
    output_len: variant(OutputLenOpt, more="Sent as max_tokens, with ignore_eos.") = None,
    prefix_len: PrefixLenOpt = 0,
    dataset: variant(DatasetOpt, more="Its prompts are sent as text.") = None,
    seed: SeedOpt = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds a request may take before it counts as failed.", rich_help_panel=_SERVER)] = 600.0,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md.", rich_help_panel=_OUT)] = "table",
    requests_csv: Annotated[Optional[Path], typer.Option("--requests-csv", help="One row per request (arrival, TTFT, TPOT, end-to-end).", rich_help_panel=_OUT)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.", rich_help_panel=_OUT)] = False,
) -> None:
    """Serving benchmark over HTTP: send a workload to an OpenAI-compatible server (streamed
    completions) and report output and total tok/s, TTFT, TPOT, inter-token and end-to-end
    latency at p50/p90/p99, as aios bench throughput does (vLLM's bench serve)."""
    check_format(format, FORMATS)
    r, in_range, out_range = check_workload(num_requests, rate, input_len, output_len, prefix_len)
    if not timeout > 0:
        fail(f"--timeout must be positive, got {timeout}")
    check_outputs({"--requests-csv": requests_csv})
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"--url must start with http:// or https://, got {url!r}")
    try:
        import httpx
    except ImportError:
        fail("aios bench serve needs httpx, which is not installed — pip install -e . (it is a dependency)")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(f"{url}/v1/models", headers=headers, timeout=10.0)
    except httpx.HTTPError as e:
        fail(f"--url {url}: no server answered ({type(e).__name__}) — start one (aios serve) or fix the URL")
    if resp.status_code == 401:
        fail(f"--url {url}: the server wants an API key — pass --api-key")
    if resp.status_code != 200:
        fail(f"--url {url}/v1/models answered HTTP {resp.status_code} — is it an OpenAI-compatible server?")
    try:
        listed = [m["id"] for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        fail(f"--url {url}/v1/models did not list models as OpenAI's API does")
    model = served_model or (listed[0] if listed else None)
    if model is None:
        fail(f"--url {url} serves no model")
    ckpt = _tokenizer_model(tokenizer or model, explicit=tokenizer is not None)
    from profilers import serve_client as C
    from profilers import throughput as T

    if dataset is not None:
        if ckpt is None or ckpt.tokenizer is None:
            fail("--dataset needs a tokenizer — pass --tokenizer with a local model")
        work = T.from_jsonl(str(dataset), ckpt.tokenizer, num_requests, out_range, r, seed)
        prompts = [ckpt.tokenizer.decode(w.prompt_ids) for w in work]
    else:
        vocab = ckpt.config.vocab_size if ckpt is not None else 1000
        work = T.synthetic(num_requests, in_range, out_range or (64, 128), r, vocab, seed, prefix_len)
        prompts = [w.prompt_ids for w in work]
    err = console.stderr()
    bar = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(f"bench serve → {url}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=err, transient=True)
        task = bar.add_task("", total=len(work))
    with bar if bar is not None else nullcontext():
        run, failures = C.run(url, model, work, prompts, api_key, timeout_s=timeout,
                              on_done=(lambda: bar.advance(task)) if bar is not None else None)
    if not run.requests:
        why = failures[0].reason if failures else "no request finished"
        fail(f"every request failed ({why})")
    from profilers.export import requests_csv as requests_csv_text

    meta = {"model": model, "backend": "http", "dtype": "", "max_num_seqs": None, "max_num_batched_tokens": None,
            **workload_fields(rate, input_len, output_len, prefix_len, dataset, seed)}
    from profilers.threads import plan

    rows = summary_rows([run], meta, plan(None))
    rows[0]["failed_requests"] = len(failures)
    rows[0]["url"] = url
    print_report(rows, format, extra_columns=("failed_requests", "url"))
    if failures:
        counts: dict[str, int] = {}
        for f in failures:
            counts[f.reason] = counts.get(f.reason, 0) + 1
        err.print(f"{len(failures)} of {len(work)} requests failed: " +
                  "; ".join(f"{n}× {why}" for why, n in sorted(counts.items(), key=lambda x: -x[1])),
                  style="yellow", soft_wrap=True)
    if requests_csv is not None:
        write("--requests-csv", requests_csv, requests_csv_text([run]))


def _tokenizer_model(source: str, explicit: bool):
    """The local model behind the served name, for its tokenizer and vocabulary; None where the
    name is not a model here (then random ids stay below 1000, valid in any real vocabulary)."""
    from engines.model.sources import open_model
    from engines.errors import UserError

    try:
        return open_model(source)
    except UserError as e:
        if explicit:
            fail(str(e))
        return None

