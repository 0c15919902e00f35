"""`aios` through Typer's CliRunner: every bad input ends in one line, exit 2, no traceback and
no file written; every export format parses back with the right contents."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT
from aios_cli.main import app
from engines import cuda_status
from engines.model.config import PRESETS
from profilers.export import EVENT_COLUMNS, SUMMARY_COLUMNS
from engines.ops import OP_NAMES, OPS, OTHER

runner = CliRunner()
FAST = ["--max-new-tokens", "4", "--quiet"]


def invoke(*args):
    return runner.invoke(app, list(args))


def assert_bad_input(res, *needles):
    assert res.exit_code == BAD_INPUT, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("aios: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


# --- bad input ---------------------------------------------------------------------------

@pytest.fixture
def out_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return out / "ops.csv", out / "trace.json"


def run_bad(out_files, *args):
    csv_path, trace_path = out_files
    res = invoke("run", *FAST, *args, "--csv", str(csv_path), "--trace", str(trace_path))
    assert not csv_path.exists() and not trace_path.exists(), "a failed run wrote a file"
    assert list(csv_path.parent.iterdir()) == [], "a failed run left a temporary file"
    return res


@pytest.mark.skipif(cuda_status()[0], reason="this machine has a usable GPU")
def test_cuda_without_gpu(out_files):
    assert_bad_input(run_bad(out_files, "--backend", "cuda"), "--backend cuda needs an NVIDIA GPU", "--backend simd")


def test_unknown_backend(out_files):
    assert_bad_input(run_bad(out_files, "--backend", "tpu"), "unknown backend 'tpu'", "simd")


def test_unknown_backend_in_a_list(out_files):
    assert_bad_input(run_bad(out_files, "--backend", "simd,gpu"), "unknown backend 'gpu'")


def test_unknown_preset(out_files):
    assert_bad_input(run_bad(out_files, "--model", "qwen9-huge"), "no such model directory, file or preset", "tiny")


def test_missing_directory(out_files, tmp_path):
    assert_bad_input(run_bad(out_files, "--model", str(tmp_path / "nope" / "model")), "no such model directory")


def test_repo_id_not_in_cache(out_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    res = run_bad(out_files, "--model", "Qwen/Qwen2.5-0.5B")
    assert_bad_input(res, "not in the local Hugging Face cache", str(tmp_path / "hub"))


def test_repo_id_resolved_from_cache(hf_model_dirs, tmp_path, monkeypatch):
    src, _ = hf_model_dirs["qwen2-tied-gqa2-hd64"]
    snap = tmp_path / "hub" / "models--acme--tiny-qwen" / "snapshots" / "abc123"
    shutil.copytree(src, snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    res = invoke("run", "-b", "simd", "-m", "acme/tiny-qwen", "--prompt-ids", "1,2,3", "-f", "json", *FAST)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["model"] == "acme/tiny-qwen"
    res = invoke("models", "--format", "json")
    assert "acme/tiny-qwen" in [m["model"] for m in json.loads(res.output)]


def copy_model(hf_model_dirs, tmp_path, name="qwen2-tied-gqa2-hd64"):
    src, _ = hf_model_dirs[name]
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors(out_files, hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), "model.safetensors is truncated")


def test_corrupt_safetensors_header(out_files, hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"not json at!"
    f.write_bytes(bytes(data))
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), "model.safetensors is corrupt")


def test_garbage_safetensors(out_files, hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    (d / "model.safetensors").write_bytes(b"\xff" * 64)
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), "model.safetensors")


def test_config_missing_field(out_files, hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["num_hidden_layers"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), "missing 'num_hidden_layers'")


def test_unsupported_architecture(out_files, hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), "unsupported architecture (GPT2LMHeadModel)")


@pytest.mark.parametrize("field,value,needle", [
    ("hidden_size", "abc", "'hidden_size' must be an integer"),
    ("num_attention_heads", 0, "must be positive"),
    ("rope_scaling", "linear", "rope_scaling must be an object"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "unsupported RoPE scaling 'yarn'"),
    # config.json may hold NaN and Infinity (Python's json reads them): every number must be
    # finite and in range, and every field of the right type, before anything is built
    ("hidden_size", float("nan"), "'hidden_size' must be an integer"),
    ("hidden_size", float("inf"), "'hidden_size' must be an integer"),
    ("rope_theta", 0, "'rope_theta' must be positive"),
    ("rope_theta", -1e4, "'rope_theta' must be positive"),
    ("rms_norm_eps", -1e-6, "'rms_norm_eps' must be positive"),
    ("rms_norm_eps", float("nan"), "'rms_norm_eps' must be a finite number"),
    ("architectures", "Qwen2ForCausalLM", "'architectures' must be a list"),
    ("model_type", ["qwen2"], "'model_type' must be a name"),
    ("max_position_embeddings", 0, "max_position_embeddings must be positive"),
    ("num_hidden_layers", 1_000_000_000, "config.json says 1000000000 layers, the weights hold 2"),
])
def test_config_bad_values(out_files, hf_model_dirs, tmp_path, field, value, needle):
    d = copy_model(hf_model_dirs, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg[field] = value
    (d / "config.json").write_text(json.dumps(cfg))
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), needle)


def test_bad_dtype_refused_before_any_backend_runs():
    # torch runs float16, simd does not: without the up-front check torch would run and stream
    res = invoke("run", "-b", "torch,simd", "--dtype", "float16", "-n", "2")
    assert_bad_input(res, "the simd engine does not run float16", "--dtype float32")


def test_scalar_refuses_a_model_too_big_before_others_run():
    res = invoke("run", "-b", "simd,scalar", "-m", "qwen2.5-1.5b", "-n", "2")
    assert_bad_input(res, "the scalar engine would need", "1544M params × 32 bytes")


@pytest.mark.parametrize("backend,dtype,per", [("simd", None, 4), ("torch", None, 4), ("torch", "bfloat16", 2)])
def test_every_engine_refuses_weights_that_cannot_fit_before_loading(monkeypatch, backend, dtype, per):
    """One rule for every CPU engine: the weights as it holds them within 70% of the RAM
    available, checked before anything loads (qwen2.5-7b fp32 on 23.5 GiB used to load for 52 s
    and then fail)."""
    import psutil

    cfg = PRESETS["qwen2.5-7b"]
    need = cfg.num_params() * per
    avail = int(need / 0.7) - 1  # just too little
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("vm", (), {"available": avail, "total": avail})())
    res = invoke("run", "-b", backend, "-m", "qwen2.5-7b", "-n", "2", *(["--dtype", dtype] if dtype else []))
    assert_bad_input(res, f"the {backend} engine would need ~{need / 2**30:.1f} GiB", f"× {per} bytes",
                     "over the 70% of the")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("vm", (), {"available": avail + 2, "total": 0})())
    from engines import engine_class

    engine_class(backend).preflight(cfg, "qwen2.5-7b", dtype)  # just enough: no refusal


@pytest.mark.parametrize("args,needle", [
    (("--temperature", "nan"), "finite --temperature"),
    (("--top-p", "0"), "0 < --top-p <= 1"),
    (("--prompt-ids", "1,,2"), "--prompt-ids must be comma-separated integers"),
    (("--profile", "token"), "--csv writes one row per op event"),
    (("--seed", "-1"), "--seed must be 0 or more"),  # refused before the model loads, not after
])
def test_more_bad_inputs(out_files, args, needle):
    assert_bad_input(run_bad(out_files, *args), needle)


def test_prompt_ids_outside_vocab(out_files):
    vocab = PRESETS["tiny"].vocab_size
    assert_bad_input(run_bad(out_files, "--prompt-ids", f"1,{vocab}"), f"prompt id {vocab} is outside the vocabulary")


def test_prompt_ids_not_integers(out_files):
    assert_bad_input(run_bad(out_files, "--prompt-ids", "1,x"), "--prompt-ids must be comma-separated integers")


@pytest.mark.parametrize("n", ["0", "-3"])
def test_non_positive_max_new_tokens(tmp_path, n):
    res = invoke("run", "--max-new-tokens", n, "--csv", str(tmp_path / "x.csv"))
    assert_bad_input(res, "--max-new-tokens must be positive")
    assert not (tmp_path / "x.csv").exists()


def test_unknown_format_and_profile():
    assert_bad_input(invoke("run", "--format", "xml"), "unknown --format 'xml'")
    assert_bad_input(invoke("run", "--profile", "all"), "unknown --profile 'all'")


def test_unwritable_output(tmp_path):
    assert_bad_input(invoke("run", "--csv", str(tmp_path / "no" / "dir.csv")), "does not exist")


def test_directory_without_tokenizer_needs_ids(hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    assert_bad_input(invoke("run", "-b", "simd", "-m", str(d), "--prompt", "hello", *FAST), "no tokenizer.json", "--prompt-ids")
    res = invoke("run", "-b", "simd", "-m", str(d), "--prompt-ids", "5,6,7", "-n", "3")
    assert res.exit_code == 0, res.output
    assert "generated ids:" in res.output  # without a tokenizer the output shows ids


# --- outputs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    csv_path, trace_path = d / "ops.csv", d / "trace.json"
    res = invoke("run", "-b", "simd,torch", "-m", "tiny", "--prompt", "Hello world", "-n", "5", "--ignore-eos",
                 "-f", "json", "-q", "--csv", str(csv_path), "--trace", str(trace_path))
    assert res.exit_code == 0, res.output
    return json.loads(res.output), csv_path, trace_path


def test_json_output(exported):
    objs, _, _ = exported
    assert isinstance(objs, list) and [o["backend"] for o in objs] == ["simd", "torch"]
    cfg = PRESETS["tiny"]
    for o in objs:
        for key in ("backend", "model", "dtype", "num_layers", "prompt_token_ids", "generated_token_ids", "text",
                    "ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s", "reduction_barriers_per_token",
                    "peak_rss_bytes", "layers", "ops"):
            assert key in o, key
        assert o["model"] == "tiny" and o["num_layers"] == cfg.num_layers
        assert len(o["generated_token_ids"]) == 5 and o["decode_tokens"] == 4
        assert o["reduction_barriers_per_token"] == 3 * cfg.num_layers + 2
        assert o["ttft_s"] > 0 and o["decode_tokens_per_s"] > 0 and o["peak_rss_bytes"] > 0
        assert {r["op"] for r in o["ops"]} <= set(OP_NAMES) | {OTHER}
        decode_layers = [r for r in o["layers"] if r["phase"] == "decode"]
        assert [r["row"] for r in decode_layers] == ["in", *map(str, range(cfg.num_layers)), "out"]
        assert [r["layer"] for r in decode_layers] == [-1, *range(cfg.num_layers), -1]  # ints, as in the CSV
        # the per-layer table adds up to the mean decode token time
        mean_wall = sum(t["wall_s"] for t in o["tokens"] if t["phase"] == "decode") / 4
        assert sum(r["seconds"] for r in decode_layers) == pytest.approx(mean_wall, rel=1e-6)
    assert objs[0]["generated_token_ids"] == objs[1]["generated_token_ids"]  # greedy: engines agree


def test_export_files_have_a_normal_mode(exported):
    import os
    import stat

    _, csv_path, trace_path = exported
    umask = os.umask(0)
    os.umask(umask)
    for p in (csv_path, trace_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_column_lists_match_the_record(exported):
    from profilers.export import machine_fields

    objs, _, _ = exported
    assert set(SUMMARY_COLUMNS) <= set(objs[0]) | set(machine_fields())


def test_tidy_csv(exported):
    objs, csv_path, _ = exported
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert tuple(rows[0].keys()) == EVENT_COLUMNS
    assert {r["backend"] for r in rows} == {"simd", "torch"}
    assert {r["run_id"] for r in rows} == {o["run_id"] for o in objs}
    kinds = {op.name: op.kind for op in OPS}
    for r in rows:
        assert r["op"] in kinds or r["op"] == OTHER
        assert r["kind"] == kinds.get(r["op"], OTHER)
        assert float(r["seconds"]) >= 0
        # every op moves bytes; every op but the embedding row copy computes
        assert int(r["bytes"]) > 0 or r["op"] == OTHER
        assert (int(r["flops"]) > 0) == (r["op"] not in ("embed", OTHER))
    # each token's rows add up to that token's wall time
    for o in objs:
        for t in o["tokens"]:
            secs = sum(float(r["seconds"]) for r in rows
                       if r["run_id"] == o["run_id"] and r["phase"] == t["phase"] and int(r["token_index"]) == t["token_index"])
            assert secs == pytest.approx(t["wall_s"], rel=1e-4, abs=1e-6)
    dec = [r for r in rows if r["backend"] == "simd" and r["phase"] == "decode" and r["token_index"] == "1"]
    assert sum(r["op"] == "attn_norm" for r in dec) == PRESETS["tiny"].num_layers
    # the decode rows carry the bytes the JSON summary reports per decode token (its mean)
    for o in objs:
        dec_rows = [r for r in rows if r["run_id"] == o["run_id"] and r["phase"] == "decode"]
        per_token = sum(int(r["bytes"]) for r in dec_rows) / o["decode_tokens"]
        assert per_token == pytest.approx(o["decode_bytes_per_token"], rel=1e-6)


def test_chrome_trace(exported):
    objs, _, trace_path = exported
    trace = json.loads(trace_path.read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    ops = [e for e in slices if e["tid"] == 2]
    tokens = [e for e in slices if e["tid"] == 1]
    assert len(tokens) == 2 * 5  # one slice per forward pass, per backend
    assert {e["name"] for e in ops} <= set(OP_NAMES)
    assert all(e["dur"] >= 0 and "layer" in e["args"] for e in ops)
    names = [e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"]
    assert names == ["simd · tiny", "torch · tiny"]


def test_summary_csv_format():
    res = invoke("run", "-b", "simd", "--prompt-ids", "1,2,3", "-f", "csv", *FAST)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert len(rows) == 1 and tuple(rows[0].keys()) == SUMMARY_COLUMNS
    r = rows[0]
    assert r["backend"] == "simd" and r["model"] == "tiny" and r["dtype"] == "float32"
    assert int(r["new_tokens"]) == 4 and float(r["decode_tokens_per_s"]) > 0 and r["cpu"]


def test_markdown_and_table_formats():
    res = invoke("run", "-b", "simd", "--prompt-ids", "1,2,3", "-f", "md", *FAST)
    assert res.exit_code == 0 and "| decode |" in res.output and "| attn_softmax |" in res.output
    res = invoke("run", "-b", "simd", "--prompt-ids", "1,2,3", "-n", "3")
    assert res.exit_code == 0, res.output
    for needle in ("TTFT", "reduction barriers/token", "per layer · decode", "per op"):
        assert needle in res.output


def test_default_backend_is_named():
    res = invoke("run", "--prompt-ids", "1,2,3", "-n", "2")
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith(("backend: simd (", "backend: cuda (")) and "--backend" in first


def test_info_and_models():
    res = invoke("info", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert set(d["engines"]) == {"scalar", "simd", "cuda", "torch"}
    assert d["engines"]["scalar"]["usable"] and d["engines"]["simd"]["usable"]
    assert d["engines"]["cuda"]["usable"] == cuda_status()[0]
    from importlib.metadata import version

    assert d["versions"]["aios"] == version("aios")  # the record of what made the numbers
    assert d["threads"]["default"] == d["threads"]["usable_cpus"]  # conftest's machine is idle
    res = invoke("models", "--format", "json")
    names = [m["model"] for m in json.loads(res.output)]
    assert names[: len(PRESETS)] == list(PRESETS)
    half = {m["model"]: m for m in json.loads(res.output)}["qwen2.5-0.5b"]
    assert half["num_params"] == 494_032_768  # Qwen2.5-0.5B's published parameter count


def test_entry_point_imports_no_heavy_modules():
    """`aios --help` stays fast: torch, numba, textual and transformers load only in commands.
    NumPy too: loaded before `quiet_blas_pool` its OpenBLAS workers spin and take a core from
    the simd engine's decode (a module-level import of profilers.record did that once: tiny
    decode fell from ~450 to ~340 tok/s)."""
    import subprocess
    import sys

    code = ("import sys, aios_cli.main; "
            "print(','.join(m for m in ('torch', 'numba', 'textual', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_context_overflow(out_files):
    limit = PRESETS["tiny"].max_position_embeddings
    res = run_bad(out_files, "-b", "simd", "--prompt-ids", "1,2", "--max-new-tokens", str(limit))
    assert_bad_input(res, f"exceed the model's context of {limit}")


def test_event_rows_have_exactly_the_csv_columns(tiny):
    from profilers.harness import RunOptions, profile_run

    rec = profile_run(tiny, "simd", [9707, 11, 1879], RunOptions(max_new_tokens=2, warmup=False))
    rows = list(rec.events())
    assert rows and all(tuple(r) == EVENT_COLUMNS for r in rows)


def test_side_by_side_tables():
    """`aios run -b a,b` lays the backends side by side: one column per backend in the summary
    and the per-op table, each backend's row under each layer."""
    res = invoke("run", "-b", "simd,torch", "--prompt-ids", "1,2,3", "-n", "3", "-q")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "summary, side by side" in out and "per layer · decode" in out and "per op · decode" in out
    summary = out[out.index("summary, side by side"):out.index("per layer")]
    assert summary.count("simd") >= 2 and summary.count("torch") >= 2  # column heads and the backend row
    layers = out[out.index("per layer · decode"):out.index("per op · decode")]
    for name in ("in", *map(str, range(PRESETS["tiny"].num_layers)), "out"):
        # each layer row is followed by the other backend's row for that layer
        assert any(line.split("│")[1].strip() == name and "simd" in line
                   for line in layers.splitlines() if line.count("│") > 2), name
    assert sum("│ torch" in line for line in layers.splitlines()) == PRESETS["tiny"].num_layers + 2
    ops = out[out.index("per op · decode"):]
    for op in ("attn_norm", "lm_head", "sample", "other"):
        row = next(line for line in ops.splitlines() if f" {op} " in line)
        assert len([c for c in row.split("│") if c.strip()]) == 3, row  # name, simd, torch


def test_models_table():
    res = invoke("models")
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in res.output.splitlines() if line.count("│") >= 7}
    for name, cfg in PRESETS.items():
        arch, params, layers, fp32, half = rows[name]
        assert (arch, int(layers)) == (cfg.arch, cfg.num_layers)
        assert fp32.endswith(("MiB", "GiB")) and half.endswith(("MiB", "GiB"))
    assert rows["qwen2.5-0.5b"][1] == "494.0M" and rows["qwen2.5-7b"][1] == "7.62B"


@pytest.mark.parametrize("shard", ["/etc/passwd", "../outside.safetensors", "sub/../../x.safetensors", ".."])
def test_index_shard_outside_the_model_directory_is_refused(out_files, hf_model_dirs, tmp_path, shard):
    d = copy_model(hf_model_dirs, tmp_path)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    res = run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2")
    assert_bad_input(res, "is not a file name inside the model directory")


def test_hf_cache_ref_outside_the_cache_is_refused(out_files, hf_model_dirs, tmp_path, monkeypatch):
    src, _ = hf_model_dirs["qwen2-tied-gqa2-hd64"]
    repo = tmp_path / "hub" / "models--acme--evil"
    shutil.copytree(src, repo / "snapshots" / "abc")
    shutil.copytree(src, tmp_path / "x")  # what the ref points at, outside the cache
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("../../../../x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert_bad_input(run_bad(out_files, "--model", "acme/evil", "--prompt-ids", "1,2"), "not a snapshot folder")
    res = invoke("models", "--format", "json")  # the listing skips the broken entry, in one piece
    assert res.exit_code == 0 and "acme/evil" not in res.output


def test_hidden_size_not_a_multiple_of_the_heads(out_files, hf_model_dirs, tmp_path):
    d = copy_model(hf_model_dirs, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("head_dim", None)
    cfg["hidden_size"] = 129
    (d / "config.json").write_text(json.dumps(cfg))
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"),
                     "hidden_size (129) is not a multiple of num_attention_heads (2)")


def test_every_command_goes_through_the_one_error_guard():
    """Every command, present and future: a failure anywhere ends in one line and an exit code."""
    import typer.main

    def commands(t, prefix=""):
        for c in t.registered_commands:
            yield f"{prefix}{c.name or c.callback.__name__}", c.callback
        for g in t.registered_groups:
            yield from commands(g.typer_instance, f"{prefix}{g.name} ")

    found = dict(commands(app))
    assert {"run", "top", "info", "models", "compare dot", "compare matmul", "compare peak",
            "compare prefill-decode"} <= set(found)
    assert [name for name, cb in found.items() if not getattr(cb, "guarded", False)] == []
    assert len(typer.main.get_command(app).commands) == len({n.split()[0] for n in found})


def test_a_corrupt_peaks_cache_is_one_line_or_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path))
    from profilers import peaks

    peaks.cache_path().write_text('{"machine": ' * 5000)  # deeply nested: RecursionError in json
    res = invoke("info", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["peaks"] is None


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_deeply_nested_json(out_files, hf_model_dirs, tmp_path, name):
    d = copy_model(hf_model_dirs, tmp_path)
    (d / name).write_text("[" * 100_000 + "]" * 100_000)
    assert_bad_input(run_bad(out_files, "--model", str(d), "--prompt-ids", "1,2"), name)


@pytest.mark.parametrize("args,needle", [
    (("run", "--bogus"), "No such option: --bogus — see `aios run --help`"),
    (("run", "-n", "abc"), "Invalid value for '--max-new-tokens'"),
    (("compare", "dot", "--repeat", "x"), "see `aios compare dot --help`"),
])
def test_usage_errors_are_one_line(args, needle):
    """Click's usage errors too: one `aios: error:` line, not a boxed panel."""
    assert_bad_input(invoke(*args), needle)


@pytest.mark.parametrize("model,needle", [
    ("bad\nname\x1b[31m", r"bad\nname\x1b[31m"),  # escaped: stays one line, drives no terminal
    ("~nouser-aios/x", "cannot expand '~nouser-aios': no such user"),
    ("x" * 5000, "File name too long"),
])
def test_hostile_model_names(out_files, model, needle):
    assert_bad_input(run_bad(out_files, "--model", model), needle)


def test_prompt_not_utf8(out_files):
    # argv bytes that are not UTF-8 reach Python as lone surrogates
    assert_bad_input(run_bad(out_files, "--prompt", b"\xff\xfe abc".decode("utf-8", "surrogateescape")),
                     "--prompt is not valid UTF-8 text")


def test_a_tokenizer_panic_is_one_line(out_files, monkeypatch):
    """`tokenizers` panics in Rust with pyo3's PanicException, a BaseException: `except
    Exception` misses it, the guard does not."""
    import engines.model.sources

    PanicException = type("PanicException", (BaseException,), {})

    def panics(source):
        raise PanicException("called `Option::unwrap()` on a `None` value\nmore")

    monkeypatch.setattr(engines.model.sources, "open_model", panics)
    assert_bad_input(run_bad(out_files), "the tokenizer failed (called `Option::unwrap()` on a `None` value)")


@pytest.mark.parametrize("backend", ["scalar", "simd", "torch"])
@pytest.mark.parametrize("sampling", [(), ("--temperature", "0.8", "--top-k", "5")], ids=["greedy", "sampled"])
def test_nan_weights_stop_with_the_layer(out_files, hf_model_dirs, tmp_path, backend, sampling):
    """A NaN in one weight: not `!!!!` printed as text, but one line naming the layer, found
    after the fact (the hot path checks only the sampled token's logit)."""
    from safetensors.numpy import load_file, save_file

    d = copy_model(hf_model_dirs, tmp_path)
    tensors = load_file(str(d / "model.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = np.nan
    save_file(tensors, str(d / "model.safetensors"))
    res = run_bad(out_files, "-b", backend, "--model", str(d), "--prompt-ids", "1,2,3", *sampling)
    assert_bad_input(res, "the model produced NaN or Inf logits", "layer 1 down holds NaN or Inf")


def test_printable_keeps_text_inert():
    from aios_cli.errors import printable

    assert printable("a\x1b[31mb\nc\td\udcff") == r"a\x1b[31mb\nc\td\udcff"
    assert printable("tok\x1b]0;title\x07 x\ny", keep="\n\t") == "tok\\x1b]0;title\\x07 x\ny"
    assert printable("µs — ✓ 中文") == "µs — ✓ 中文"  # printable text stays as it is


def test_version():
    import subprocess
    import sys
    from importlib.metadata import version

    res = invoke("--version")
    assert res.exit_code == 0 and res.output.startswith(f"aios {version('aios')}")
    # the same through the installed entry point, and without importing torch or numba
    out = subprocess.run([sys.executable, "-c", "from aios_cli.main import main; main()", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("aios ")


def test_number_formats_of_the_compare_tables():
    from aios_cli.fmt import fmt_ratio, fmt_sig

    assert [fmt_sig(x) for x in (22.6, 24_000.0, 0.5, 1234.5)] == ["22.6", "24,000", "0.5", "1,234"]
    assert [fmt_ratio(x) for x in (0.45, 3.2, 12.5, 4500)] == ["0.45×", "3.2×", "12×", "4,500×"]  # never 0×


def test_summary_decode_rate_and_ms_per_token_are_one_statistic():
    """The summary's decode line gives the rate and its ms/token from the same mean (decode
    tokens over decode time), and says so; the per-token spread is its own, labelled, line.
    (150 tok/s next to a 1.39 ms median looked like a contradiction.)"""
    import re

    res = invoke("run", "-b", "torch", "-n", "6", "--ignore-eos", "-q")
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if "│ decode " in ln)
    rate, ms, n = re.search(r"([\d.]+) tok/s = ([\d.]+) ms/token \(mean of (\d+) tokens\)", line).groups()
    # both come from one mean; each is printed rounded, so they agree within half a unit of
    # the last printed digit of each (a 9.2 ms/token line next to 108.43 tok/s is consistent)
    ulp_ms = 0.5 * 10 ** -len(ms.split(".")[1]) if "." in ms else 0.5
    ulp_rate = 0.5 * 10 ** -len(rate.split(".")[1]) if "." in rate else 0.5
    want = 1e3 / float(rate)
    assert abs(float(ms) - want) <= ulp_ms + want * (ulp_rate / float(rate)) + 1e-9 and n == "5"
    spread = next(ln for ln in res.stdout.splitlines() if "│ decode token time " in ln)
    assert re.search(r"median [\d.]+ ms \(min [\d.]+, max [\d.]+\)", spread)
    assert "n/a (no JIT, or --no-warmup)" in next(ln for ln in res.stdout.splitlines() if "load · JIT" in ln)
    d = json.loads(invoke("run", "-b", "torch", "-n", "2", "-q", "-f", "json").stdout)
    assert d["jit_s"] is None  # torch has no JIT: null, not 0.0 s


# --- -t is --threads on every command ----------------------------------------------------

def _commands(group=None, path=("aios",)):
    """(path, click command) of every command under `aios`."""
    import typer.main

    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield " ".join((*path, name)), cmd


def test_short_t_means_threads_on_every_command():
    """One meaning per short flag: wherever -t exists it is --threads, and every command that
    takes --threads takes -t too."""
    seen = []
    for path, cmd in _commands():
        opts = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        if "-t" in opts or "--threads" in opts:
            assert opts.get("-t") is opts.get("--threads"), path
            seen.append(path)
    assert {"aios run", "aios top", "aios serve", "aios bench latency", "aios bench throughput",
            "aios compare dot", "aios compare matmul", "aios compare prefill-decode"} <= set(seen)


def assert_one_line(res, line):
    assert res.exit_code == BAD_INPUT, res.output
    assert "Traceback" not in res.output
    assert res.output.strip().splitlines() == [line], res.output


@pytest.mark.parametrize("args,old,what", [
    (("run", "-m", "tiny", "-t", "0.7"), "--temperature 0.7", "sampling temperature"),
    (("run", "-t", "0"), "--temperature 0", "sampling temperature"),  # greedy, before
    (("run", "-qt", "1.5"), "--temperature 1.5", "sampling temperature"),  # inside a cluster of short flags
    (("top", "-t", "0.5", "--once"), "--temperature 0.5", "sampling temperature"),
    (("top", "--serve", "-t", "0.8", "--once"), "--temperature 0.8", "sampling temperature"),
    (("compare", "prefill-decode", "-b", "simd", "-t", "8,32", "-r", "1", "-q"), "--tokens 8,32", "the token counts"),
])
def test_short_t_of_the_old_meaning_is_refused(args, old, what):
    """A -t value only the old option could take: one line naming it, before anything loads."""
    assert_one_line(invoke(*args), f"aios: error: -t is --threads now (a whole number of threads); for {what} pass {old}")


@pytest.mark.parametrize("args,old,what", [
    (("compare", "prefill-decode", "-b", "simd", "-t", "32", "-r", "1", "-q"), "--tokens", "the token counts"),
    (("run", "-t", "5"), "--temperature", "sampling temperature"),
])
def test_short_t_above_the_cpus_is_refused(monkeypatch, args, old, what):
    """`compare prefill-decode -t 32` meant 32 tokens: never quietly 32 threads on a smaller
    machine. --threads 32 says it on purpose, and is not refused here."""
    import profilers.threads

    monkeypatch.setattr(profilers.threads, "usable_cpus", lambda: 4)
    n = args[args.index("-t") + 1]
    assert_one_line(invoke(*args), f"aios: error: -t is --threads now, and this machine has 4 usable CPUs; for {what} "
                                   f"pass {old} {n} (or --threads {n} for more threads than CPUs)")


def test_short_t_of_a_thread_count_runs_with_a_note():
    """`aios run -t 1` was temperature 1: it runs on one thread now, and says so on stderr, even
    with --quiet (a script that meant the old -t is the reader to reach)."""
    res = invoke("run", "-t", "1", "-n", "2", "-q", "-f", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["threads"] == 1
    assert ("aios: note: -t is --threads now: running 1 thread (for sampling temperature, -t's old meaning, "
            "pass --temperature 1)") in res.stderr.splitlines()
    quiet = invoke("run", "--threads", "1", "-n", "2", "-q", "-f", "json")  # the long flag: no note
    assert quiet.exit_code == 0 and "note: -t" not in quiet.stderr


def test_short_t_where_it_always_meant_threads_has_no_note():
    res = invoke("compare", "dot", "-t", "1", "-s", "100", "-b", "simd", "-r", "1", "-q", "-f", "csv")
    assert res.exit_code == 0, res.output
    assert "note: -t" not in res.stderr
    assert next(csv.DictReader(io.StringIO(res.stdout)))["threads"] == "1"


def test_a_prompt_of_minus_t_is_a_prompt():
    """-t read as Click reads the arguments: the value of --prompt here, not the flag."""
    res = invoke("run", "-p", "-t", "-n", "1", "-q", "-f", "json")
    assert res.exit_code == 0, res.output
    assert "note: -t" not in res.stderr
