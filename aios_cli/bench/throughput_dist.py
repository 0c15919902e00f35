"""`aios bench throughput --tp N --pp M`: the workload through the batched engine split over ranks
(`profilers.dist_throughput`), and its report: the run as rank 0 saw it, then the ranks side by
side (compute against communication per step, the imbalance, the pipeline's bubble).

Started from a shell, the ranks are spawned here (this process is not one of them); started by
torchrun, this process is one rank and rank 0 reports.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import fail
from ..outputs import write

# what the summary row adds for a sharded run
DIST_COLUMNS = ("tp", "pp", "micro_batches", "collectives", "compute_imbalance", "idle_share", "bubble_model")


def run_sharded(ckpt, model: str, opts, work, rate: float, layout: tuple[int, int], micro_batches: int | None,
                timeout_s: float, profile: str, plan, meta: dict, format: str, outputs: dict[str, Path | None],
                err, quiet: bool) -> None:
    from engines.dist.group import torchrun_env
    from engines.model.shards import check_pp, check_tp
    from profilers import throughput as T
    from profilers.dist_run import spawn_run, torchrun_run
    from profilers.dist_throughput import DistBatchJob, rank_throughput

    tp, pp = layout
    check_tp(ckpt.config, tp)  # a UserError is the command's one-line error
    check_pp(ckpt.config, pp)
    if micro_batches is not None and micro_batches < 1:
        fail(f"--micro-batches must be 1 or more, got {micro_batches} — e.g. --micro-batches {pp}")
    if opts.kv_blocks is None and opts.kv_cache_bytes is None:
        opts.kv_blocks = T.default_kv_blocks(work, opts.block_size)
    engine_kw = {"num_blocks": opts.kv_blocks, "kv_cache_bytes": opts.kv_cache_bytes, "block_size": opts.block_size,
                 "max_num_seqs": opts.max_num_seqs, "max_num_batched_tokens": opts.max_num_batched_tokens,
                 "prefix_caching": opts.prefix_caching}
    job = DistBatchJob(model=model, backend=opts.backend, dtype=opts.dtype, work=work, rate=rate, tp=tp, pp=pp,
                       micro_batches=micro_batches, timeout_s=timeout_s, profile=profile, engine_kw=engine_kw)
    env = torchrun_env()
    if env is not None:
        results = torchrun_run(job, env, rank_throughput)
        if results is None:  # not rank 0: it reports
            return
    else:
        threads = max(1, plan.threads // job.world)
        if not quiet:
            err.print(f"spawning {job.world} ranks (TP={tp} x PP={pp}) on this host, {threads} thread"
                      f"{'s' if threads != 1 else ''} each, over {'nccl' if job.device == 'cuda' else 'gloo'}",
                      style="dim")
        results = _spawn(job, threads, spawn_run, rank_throughput, err, quiet)
    report(results, job, meta, plan, format, outputs)


def _spawn(job, threads, spawn_run, body, err, quiet):
    if quiet:
        return spawn_run(job, threads, body=body)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                 TimeElapsedColumn(), console=err, transient=True)
    task = p.add_task(f"starting {job.world} ranks", total=len(job.work))

    def on_message(rank, payload):
        if payload[0] == "phase":
            p.update(task, description=payload[1])
        elif payload[0] == "step":
            _, done, step, running, waiting = payload
            p.update(task, completed=done, description=f"batched x{job.world}: step {step}, {running} running, "
                     f"{waiting} waiting")

    with p:
        return spawn_run(job, threads, on_message, body=body)


def report(results: list[dict], job, meta: dict, plan, format: str, outputs: dict[str, Path | None]) -> None:
    """Rank 0's run as the summary row (every rank served the same tokens; rank 0's clock), the
    ranks' balance in its extra columns, the ranks' table under it, and the exports."""
    from profilers import export
    from profilers.ranks import balance, batch_rank_row, pipeline_bubble

    from .. import console
    from .report import print_report, summary_rows

    runs = [r["run"] for r in results]
    first = results[0]["rank"]
    rows = [batch_rank_row(r["run"], r["rank"]) for r in results]
    b = balance(rows, "compute_s", "step_s")
    m = first["micro_batches"]
    bubble = pipeline_bubble(runs[0], job.pp, m)
    meta = {**meta, "dtype": first["dtype"], "tp": job.tp, "pp": job.pp, "micro_batches": m,
            "collectives": first["collectives"], "compute_imbalance": b["imbalance"], "idle_share": b["idle_share"],
            "bubble_model": bubble}
    print_report(summary_rows(runs[:1], meta, plan), format, DIST_COLUMNS)
    if format == "table":
        from ..render import rank_table
        from ..fmt import fmt_pct

        what = None
        if bubble is not None:
            what = (f"a {job.pp}-stage pipeline of equal stages in these steps' micro-batches, up to {m} a step, "
                    f"idles {fmt_pct(bubble)} by its bubble, (p-1)/(m+p-1): a model")
        rank_table(console.stdout(), rows,
                   f"ranks · TP={job.tp} x PP={job.pp} over {first['collectives']} (batched, ms per engine step, "
                   "mean)", "step", "step_s", "compute_s", "{}_s", "step time", what)
        if job.profile != "op":
            console.stdout().print("(--profile none: no op times, so no split of the ranks' time)", style="dim")
    if outputs.get("--steps-csv") is not None:
        write("--steps-csv", outputs["--steps-csv"], export.steps_csv(runs[0], ranks=runs))
    if outputs.get("--requests-csv") is not None:
        write("--requests-csv", outputs["--requests-csv"], export.requests_csv(runs[:1]))
    if outputs.get("--trace") is not None:
        write("--trace", outputs["--trace"], export.serving_trace(runs[0], meta))
