"""The report of a serving workload, as `aios bench throughput` (the batched engine) and
`aios bench serve` (a server over HTTP) print it: one row per run, as a table, Markdown, JSON
or CSV with the same columns."""

from __future__ import annotations


from .. import console
from ..outputs import print_rows

FORMATS = ("table", "csv", "json", "md")

SUMMARY_COLUMNS = (
    "run_id", "host", "cpu", "mode", "model", "backend", "dtype", "requests", "duration_s", "prompt_tokens",
    "output_tokens", "output_tokens_per_s", "total_tokens_per_s", "request_throughput_per_s",
    "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99",
    "itl_ms_p50", "itl_ms_p90", "itl_ms_p99", "e2e_ms_p50", "e2e_ms_p90", "e2e_ms_p99",
    "mean_batch_size", "max_batch_size", "steps", "preemptions", "prefix_cache_hit_rate", "kv_blocks",
    "block_size", "max_blocks_used", "max_num_seqs", "max_num_batched_tokens", "rate", "input_len", "prefix_len",
    "output_len",
    "dataset", "seed",
)


def workload_fields(rate: str, input_len: str, output_len: str | None, prefix_len: int, dataset, seed: int) -> dict:
    """The workload as a row carries it: the options as given (an empty cell where --dataset
    sets the lengths)."""
    return {"rate": rate, "input_len": input_len if dataset is None else "", "prefix_len": prefix_len,
            "output_len": output_len or ("" if dataset is not None else "64:128"), "dataset": str(dataset or ""),
            "seed": seed}


def summary_rows(runs, meta, plan) -> list[dict]:
    """One row per run: the machine, `meta` (the model, engine and workload), the run's
    metrics and what made it (provenance)."""
    from profilers.export import machine_fields
    from profilers.harness import new_run_id, provenance

    run_id = new_run_id("bench-throughput")
    prov = provenance(meta["backend"], plan)
    return [{"run_id": run_id, **machine_fields(), **meta, **run.summary(), **prov} for run in runs]


def _columns():
    from profilers.record import PROVENANCE_FIELDS

    return SUMMARY_COLUMNS + tuple(PROVENANCE_FIELDS)


def print_report(rows, format: str, extra_columns: tuple[str, ...] = ()) -> None:
    """The rows on stdout in `format` (one of FORMATS); `extra_columns` after the summary's."""
    print_rows(rows, _columns() + tuple(extra_columns), format, _markdown, _table)


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


_METRICS = (
    ("output tok/s", lambda r: f"{r['output_tokens_per_s']:.1f}"),
    ("total tok/s", lambda r: f"{r['total_tokens_per_s']:.1f}"),
    ("requests/s", lambda r: f"{r['request_throughput_per_s']:.2f}"),
    ("duration s", lambda r: f"{r['duration_s']:.1f}"),
    ("TTFT ms p50/p90/p99", lambda r: f"{_ms(r['ttft_ms_p50'])} / {_ms(r['ttft_ms_p90'])} / {_ms(r['ttft_ms_p99'])}"),
    ("TPOT ms p50/p90/p99", lambda r: f"{_ms(r['tpot_ms_p50'])} / {_ms(r['tpot_ms_p90'])} / {_ms(r['tpot_ms_p99'])}"),
    ("ITL ms p50/p90/p99", lambda r: f"{_ms(r['itl_ms_p50'])} / {_ms(r['itl_ms_p90'])} / {_ms(r['itl_ms_p99'])}"),
    ("E2E ms p50/p90/p99", lambda r: f"{_ms(r['e2e_ms_p50'])} / {_ms(r['e2e_ms_p90'])} / {_ms(r['e2e_ms_p99'])}"),
    ("batch size mean / max", lambda r: f"{r['mean_batch_size']:.1f} / {r['max_batch_size']}"),
    ("steps", lambda r: str(r["steps"]) if r["steps"] else "n/a"),
    ("KV blocks used, max", lambda r: f"{r['max_blocks_used']} of {r['kv_blocks']}" if r["kv_blocks"] else "n/a"),
    ("preemptions", lambda r: str(r["preemptions"]) if r["mode"] == "batched" else "n/a"),
    ("prefix-cache hits", lambda r: "n/a" if r["prefix_cache_hit_rate"] is None else f"{r['prefix_cache_hit_rate']:.1%}"),
)


_ENGINE_SIDE = {"batch size mean / max", "steps", "KV blocks used, max", "preemptions", "prefix-cache hits"}


def _metrics(rows):
    """The table's rows: over HTTP (bench serve) the engine's own figures are not seen."""
    if all(r.get("mode") == "serve" for r in rows):
        return [(n, f) for n, f in _METRICS if n not in _ENGINE_SIDE]
    return _METRICS


def _title(rows) -> str:
    r = rows[0]
    work = f"dataset {r['dataset']}" if r["dataset"] else f"input {r['input_len']}"
    if r.get("prefix_len"):
        work += f" after a shared {r['prefix_len']}-token prefix"
    head = (f"{r['model']} · {r['backend']} {r['dtype']}".rstrip() + f" · {r['requests']} requests, {work}, "
            f"output {r['output_len'] or 'from the dataset'}, rate {r['rate']}")
    if r.get("mode") == "serve":
        failed = r.get("failed_requests") or 0
        return f"bench serve · {r.get('url', '')} · {head} · {failed} failed"
    return f"bench throughput · {head} · max {r['max_num_seqs']} seqs, {r['max_num_batched_tokens']} tokens a step"


def _footer(rows) -> str:
    r = rows[0]
    gain = ""
    if len(rows) > 1:
        gain = (f"batched / baseline output tok/s: {rows[0]['output_tokens_per_s'] / rows[1]['output_tokens_per_s']:.2f}x; ")
    load = f", load average {r['load_avg_1m']:.2f} at the start" if r.get("load_avg_1m") is not None else ""
    where = (f"times taken by this client over HTTP (token = a streamed event){load}" if r.get("mode") == "serve"
             else f"threads {r['threads']} ({r['threading_layer']}){load}")
    return (f"{gain}tokens: {r['prompt_tokens']} prompt + {r['output_tokens']} output; duration = first arrival to last "
            f"token; TPOT = (last token - first token) / (output tokens - 1) per request; {where}; "
            f"aios {r['aios_version']}, torch {r['torch_version']}")


def _table(rows) -> None:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    t.add_column("metric", no_wrap=True)
    for r in rows:
        t.add_column(r["mode"], justify="right", no_wrap=True)
    for name, f in _metrics(rows):
        t.add_row(name, *(f(r) for r in rows))
    c = console.stdout()
    c.print(_title(rows), soft_wrap=True)
    c.print(t)
    c.print(_footer(rows), soft_wrap=True)


def _markdown(rows) -> str:
    out = [_title(rows), "", "| metric | " + " | ".join(r["mode"] for r in rows) + " |",
           "|---|" + "---:|" * len(rows)]
    out += ["| " + name + " | " + " | ".join(f(r) for r in rows) + " |" for name, f in _metrics(rows)]
    return "\n".join(out) + "\n\n" + _footer(rows) + "\n"
