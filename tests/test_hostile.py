"""A corpus of hostile inputs, one case per way a careless user, a broken download or a
malicious checkpoint has broken aios before (issue 10's classes 1-12), each built here.

Every case runs in a sandbox (a model directory, an export directory and the caches) and is
held to the same promise: the exit code, exactly one `aios: error:` line on stderr naming the
problem, nothing on stdout, no traceback, and not one file of the sandbox created, changed or
removed (temporary files included). Signals mid-run are in test_signals.py and
test_top_tmux.py; the safetensors loader's property test is test_safetensors_fuzz.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT
from aios_cli.main import app

DROP = object()  # Sandbox.config(field=DROP) removes the field
BASE = "qwen2-tied-gqa2-hd64"  # conftest's smallest model: 2 layers, vocab 384
RUN = ("run", "-b", "simd", "-n", "2", "-q", "--prompt-ids", "1,2")


@dataclass
class Sandbox:
    root: Path
    model: Path  # a copy of the base model, for the case to spoil
    out: Path  # where exports go

    def exports(self) -> tuple[str, ...]:
        return "--csv", str(self.out / "ops.csv"), "--trace", str(self.out / "trace.json")

    def config(self, **changes) -> None:
        cfg = json.loads((self.model / "config.json").read_text())
        cfg.pop("rope_parameters", None)  # newer transformers write theta twice
        cfg.update(changes)
        for k in [k for k, v in changes.items() if v is DROP]:
            del cfg[k]
        (self.model / "config.json").write_text(json.dumps(cfg))

    def safetensors(self, header: dict | str | bytes, data: bytes = b"", length: int | None = None) -> None:
        """Replace the weights with a file of this header (and data)."""
        raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
        (self.model / "model.safetensors").write_bytes(struct.pack("<Q", len(raw) if length is None else length)
                                                      + raw + data)

    def run(self, *args: str) -> tuple[str, ...]:
        """`aios run` on the spoiled model, exporting into the sandbox."""
        return (*RUN, "-m", str(self.model), *self.exports(), *args)


def _tensor(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _index(sb: Sandbox, shard: str) -> tuple[str, ...]:
    (sb.model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    return sb.run()


def _escaping_ref(sb: Sandbox) -> tuple[str, ...]:
    repo = sb.root / "hub" / "models--acme--evil"
    shutil.copytree(sb.model, repo / "snapshots" / "abc")
    shutil.copytree(sb.model, sb.root / "outside")  # what the ref points at
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("../../../../outside")
    return (*RUN, "-m", "acme/evil", *sb.exports())


def _nan_weight(sb: Sandbox, backend: str) -> tuple[str, ...]:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(sb.model / "model.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = np.nan
    save_file(tensors, str(sb.model / "model.safetensors"))
    return (*sb.run(), "-b", backend)


def _poisoned_tokenizer(sb: Sandbox, text: str) -> tuple[str, ...]:
    (sb.model / "tokenizer.json").write_text(text)
    return ("run", "-b", "simd", "-n", "2", "-q", "-m", str(sb.model), "--prompt", "hi", *sb.exports())


def _outside(sb: Sandbox, name: str) -> Path:
    """A copy of the model's `name` outside the model directory, for a symlink to point at."""
    out = sb.root / "elsewhere"
    out.mkdir(exist_ok=True)
    shutil.copy(sb.model / name, out / name)
    return out / name


def _symlinked(sb: Sandbox, name: str) -> tuple[str, ...]:
    target = _outside(sb, name)
    (sb.model / name).unlink()
    (sb.model / name).symlink_to(target)
    return sb.run()


def _snapshot_outside_the_cache(sb: Sandbox) -> tuple[str, ...]:
    repo = sb.root / "hub" / "models--acme--linked"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "snapshots" / "abc").symlink_to(sb.model)  # a snapshot folder that is somewhere else entirely
    return (*RUN, "-m", "acme/linked", *sb.exports())


def _huge_int(sb: Sandbox) -> tuple[str, ...]:
    text = (sb.model / "config.json").read_text()
    cfg = json.loads(text)
    (sb.model / "config.json").write_text(text.replace(f'"rms_norm_eps": {json.dumps(cfg["rms_norm_eps"])}',
                                                       '"rms_norm_eps": 1' + "0" * 400))
    return sb.run()


def _fifo_as_model_file(sb: Sandbox) -> tuple[str, ...]:
    (sb.model / "config.json").unlink()
    os.mkfifo(sb.model / "config.json")
    return sb.run()


# (id, class, build(sandbox) -> argv, what the one line must say)
CASES: list[tuple[str, int, Callable[[Sandbox], tuple[str, ...]], str]] = [
    # 1. safetensors the format forbids: the safetensors package refuses them, in one line
    ("st-overlapping-offsets", 1, lambda sb: (sb.safetensors({"a": _tensor(), "b": _tensor(offsets=(8, 24))}, bytes(24)), sb.run())[1], "model.safetensors"),
    ("st-gap-between-tensors", 1, lambda sb: (sb.safetensors({"a": _tensor(), "b": _tensor(offsets=(20, 36))}, bytes(36)), sb.run())[1], "model.safetensors"),
    ("st-duplicate-names", 1, lambda sb: (sb.safetensors('{"a": %s, "a": %s}' % (json.dumps(_tensor()), json.dumps(_tensor(offsets=(16, 32)))), bytes(32)), sb.run())[1], "model.safetensors"),
    ("st-fractional-shape", 1, lambda sb: (sb.safetensors({"a": _tensor(shape=(2, 2.5))}, bytes(16)), sb.run())[1], "model.safetensors"),
    ("st-string-shape", 1, lambda sb: (sb.safetensors({"a": _tensor(shape=("2", "2"))}, bytes(16)), sb.run())[1], "model.safetensors"),
    ("st-negative-shape", 1, lambda sb: (sb.safetensors({"a": _tensor(shape=(-2, -2))}, bytes(16)), sb.run())[1], "model.safetensors"),
    ("st-infinity-offset", 1, lambda sb: (sb.safetensors('{"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, Infinity]}}', bytes(16)), sb.run())[1], "model.safetensors"),
    ("st-wrapping-byte-count", 1, lambda sb: (sb.safetensors({"a": _tensor(shape=(2**32, 2**32), offsets=(0, 0))}), sb.run())[1], "model.safetensors"),
    ("st-unknown-dtype", 1, lambda sb: (sb.safetensors({"a": _tensor(dtype="Q3")}, bytes(16)), sb.run())[1], "model.safetensors"),
    ("st-header-length-2^63", 1, lambda sb: (sb.safetensors({}, length=2**63), sb.run())[1], "model.safetensors"),
    ("st-header-not-json", 1, lambda sb: (sb.safetensors(b"not json at all!"), sb.run())[1], "model.safetensors"),
    ("st-truncated", 1, lambda sb: ((sb.model / "model.safetensors").write_bytes((sb.model / "model.safetensors").read_bytes()[:5000]), sb.run())[1], "model.safetensors is truncated"),
    ("st-empty-file", 1, lambda sb: ((sb.model / "model.safetensors").write_bytes(b""), sb.run())[1], "model.safetensors"),
    # 2. loads that would leave the model directory
    ("index-absolute-shard", 2, lambda sb: _index(sb, "/etc/passwd"), "is not a file name inside the model directory"),
    ("index-dotdot-shard", 2, lambda sb: _index(sb, "../outside.safetensors"), "is not a file name inside the model directory"),
    ("index-nested-dotdot", 2, lambda sb: _index(sb, "sub/../../x.safetensors"), "is not a file name inside the model directory"),
    ("hf-ref-outside-cache", 2, _escaping_ref, "not a snapshot folder"),
    ("symlinked-weights-outside", 2, lambda sb: _symlinked(sb, "model.safetensors"), "leads outside"),
    ("symlinked-config-outside", 2, lambda sb: _symlinked(sb, "config.json"), "leads outside"),
    ("hf-snapshot-outside-cache", 2, _snapshot_outside_the_cache, "leads outside"),
    ("symlinked-index-outside", 2, lambda sb: (_index(sb, "model.safetensors"), _symlinked(sb, "model.safetensors.index.json"))[1], "leads outside"),
    ("index-value-not-a-name", 2, lambda sb: ((sb.model / "model.safetensors.index.json").write_text('{"weight_map": {"a": ["x"], "b": {}}}'), sb.run())[1], "a weight_map value is not a file name"),
    ("index-name-too-long", 2, lambda sb: _index(sb, "s" * 300 + ".safetensors"), "longer than a file name can be"),
    ("weights-are-a-directory", 1, lambda sb: ((sb.model / "model.safetensors").unlink(), (sb.model / "model.safetensors").mkdir(), sb.run())[2], "has no model.safetensors"),
    # 3. exports: refused before the run when they cannot work or would lose one another
    ("export-same-path-twice", 3, lambda sb: (*RUN, "--csv", str(sb.out / "x"), "--trace", str(sb.out / "x")), "both write"),
    ("export-into-missing-dir", 3, lambda sb: (*RUN, "--csv", str(sb.out / "no" / "x.csv")), "does not exist"),
    ("export-to-a-directory", 3, lambda sb: (*RUN, "--csv", str(sb.out)), "is a directory"),
    ("export-name-too-long", 3, lambda sb: (*RUN, "--csv", str(sb.out / ("a" * 300 + ".csv"))), "longer than a file name can be"),
    ("export-path-too-long", 3, lambda sb: (*RUN, "--csv", "/".join([str(sb.out)] + ["d" * 200] * 25)), "File name too long"),
    ("export-stdout-twice", 3, lambda sb: (*RUN, "--csv", "-", "--trace", "/dev/stdout"), "both write"),
    ("export-under-a-file", 3, lambda sb: ((sb.out / "f").write_text("keep"), (*RUN, "--csv", str(sb.out / "f" / "x.csv")))[1], "--csv"),
    # 4. a tiny config that claims a huge model: refused before anything is built
    ("config-1e9-layers", 4, lambda sb: (sb.config(num_hidden_layers=1_000_000_000), sb.run())[1], "config.json says 1000000000 layers, the weights hold 2"),
    # 5. config numbers: finite, in range, of the right type
    ("config-nan-hidden", 5, lambda sb: (sb.config(hidden_size=float("nan")), sb.run())[1], "'hidden_size' must be an integer"),
    ("config-inf-hidden", 5, lambda sb: (sb.config(hidden_size=float("inf")), sb.run())[1], "'hidden_size' must be an integer"),
    ("config-rope-theta-0", 5, lambda sb: (sb.config(rope_theta=0), sb.run())[1], "'rope_theta' must be positive"),
    ("config-rope-theta-neg", 5, lambda sb: (sb.config(rope_theta=-1e4), sb.run())[1], "'rope_theta' must be positive"),
    ("config-eps-negative", 5, lambda sb: (sb.config(rms_norm_eps=-1e-6), sb.run())[1], "'rms_norm_eps' must be positive"),
    ("config-eps-nan", 5, lambda sb: (sb.config(rms_norm_eps=float("nan")), sb.run())[1], "'rms_norm_eps' must be a finite number"),
    ("config-architectures-str", 5, lambda sb: (sb.config(architectures="Qwen2ForCausalLM"), sb.run())[1], "'architectures' must be a list"),
    ("config-model-type-list", 5, lambda sb: (sb.config(model_type=["qwen2"]), sb.run())[1], "'model_type' must be a name"),
    ("config-heads-0", 5, lambda sb: (sb.config(num_attention_heads=0), sb.run())[1], "must be positive"),
    ("config-hidden-str", 5, lambda sb: (sb.config(hidden_size="abc"), sb.run())[1], "'hidden_size' must be an integer"),
    ("config-400-digit-int", 5, _huge_int, "'rms_norm_eps' is out of range"),
    ("config-not-an-object", 5, lambda sb: ((sb.model / "config.json").write_text("[1, 2]"), sb.run())[1], "config.json"),
    # 6. deeply nested JSON
    ("nested-config", 6, lambda sb: ((sb.model / "config.json").write_text("[" * 100_000 + "]" * 100_000), sb.run())[1], "config.json"),
    ("nested-index", 6, lambda sb: ((sb.model / "model.safetensors.index.json").write_text("[" * 100_000 + "]" * 100_000), sb.run())[1], "model.safetensors.index.json"),
    ("nested-tokenizer", 6, lambda sb: _poisoned_tokenizer(sb, '{"model": ' * 50_000 + "1" + "}" * 50_000), "tokenizer.json"),
    # 7. tokenizer files that make the Rust side fail
    ("tokenizer-not-json", 7, lambda sb: _poisoned_tokenizer(sb, "{nope"), "tokenizer.json"),
    ("tokenizer-fails-to-encode", 7, lambda sb: _poisoned_tokenizer(sb, json.dumps({"model": {"type": "WordLevel", "vocab": {"hello": 1}, "unk_token": "[UNK]"}, "pre_tokenizer": {"type": "Whitespace"}, "added_tokens": []})), "the tokenizer could not encode the prompt"),
    ("tokenizer-wrong-shape", 7, lambda sb: _poisoned_tokenizer(sb, '{"model": {"type": "BPE", "vocab": 3}}'), "tokenizer.json"),
    # 8. options checked before any model loads
    ("prompt-not-utf8", 8, lambda sb: (*sb.run(), "--prompt", b"\xff\xfe abc".decode("utf-8", "surrogateescape")), "--prompt is not valid UTF-8 text"),
    ("seed-negative", 8, lambda sb: (*sb.run(), "--seed", "-1"), "--seed must be 0 or more"),
    ("threads-zero", 8, lambda sb: (*sb.run(), "--threads", "0"), "--threads must be between 1 and"),
    ("model-name-too-long", 8, lambda sb: (*RUN, "-m", "x" * 5000, *sb.exports()), "File name too long"),
    ("model-unknown-user", 8, lambda sb: (*RUN, "-m", "~nouser-aios/x", *sb.exports()), "cannot expand '~nouser-aios': no such user"),
    ("compare-sizes-inf", 8, lambda sb: ("compare", "dot", "--sizes", "inf", "--csv", str(sb.out / "c.csv")), "--sizes: inf is not a whole number"),
    ("compare-sizes-nan", 8, lambda sb: ("compare", "dot", "--sizes", "nan", "--csv", str(sb.out / "c.csv")), "--sizes: nan is not a whole number"),
    ("compare-sizes-1e400", 8, lambda sb: ("compare", "matmul", "--sizes", "1e400"), "--sizes: 1e400 is not a whole number"),
    ("compare-budget-nan", 8, lambda sb: ("compare", "dot", "--scalar-budget", "nan"), "--scalar-budget must be positive"),
    ("bench-reps-zero", 8, lambda sb: ("bench", "latency", "-r", "0"), "--repetitions must be between 1 and 100,000"),
    ("bench-prompt-zero", 8, lambda sb: ("bench", "latency", "-p", "0"), "--n-prompt values must be 1 or more"),
    ("bench-threads-word", 8, lambda sb: ("bench", "latency", "-t", "two"), "--threads takes whole numbers"),
    ("bench-dtype-mismatch", 8, lambda sb: ("bench", "latency", "-b", "simd,torch", "--dtype", "bfloat16"), "the simd engine does not run bfloat16"),
    ("compare-seed-negative", 8, lambda sb: ("compare", "dot", "-b", "simd", "-s", "10", "--seed", "-1"), "--seed must be 0 or more"),
    ("bench-reps-huge", 8, lambda sb: ("bench", "latency", "-r", "9" * 30), "--repetitions must be between 1 and 100,000"),
    ("bench-prompt-huge", 8, lambda sb: ("bench", "latency", "-p", "9" * 30), "is out of range"),
    ("bench-context-overflow", 8, lambda sb: ("bench", "latency", "-m", str(sb.model), "-p", "500", "-n", "100"), "exceed the model's context of 512"),
    # 11. smaller, still wrong
    ("model-name-rich-markup", 11, lambda sb: ("run", "-n", "2", "--prompt-ids", "1", "-m", "[/]x[bold]", *sb.exports()), "[/]x[bold]"),
    ("model-name-escapes", 11, lambda sb: (*RUN, "-m", "bad\nname\x1b[31m", *sb.exports()), r"bad\nname\x1b[31m"),
    ("usage-unknown-option", 11, lambda sb: ("run", "--bogus"), "No such option: --bogus — see `aios run --help`"),
    ("usage-bad-int", 11, lambda sb: ("run", "-n", "abc"), "Invalid value for '--max-new-tokens'"),
    ("hidden-not-multiple-of-heads", 11, lambda sb: (sb.config(hidden_size=129, head_dim=DROP), sb.run())[1], "hidden_size (129) is not a multiple of num_attention_heads (2)"),
    ("context-zero", 11, lambda sb: (sb.config(max_position_embeddings=0), sb.run())[1], "max_position_embeddings must be positive"),
    ("file-as-model-dir", 11, lambda sb: ((sb.out / "f").write_text("x"), (*RUN, "-m", str(sb.out / "f"), *sb.exports()))[1], "is a file, not a model directory"),
    ("fifo-as-config", 11, _fifo_as_model_file, "config.json"),
    # 12. NaN weights stop the run with the layer that holds them
    ("nan-weight-simd", 12, lambda sb: _nan_weight(sb, "simd"), "layer 1 down holds NaN or Inf"),
    ("nan-weight-torch", 12, lambda sb: _nan_weight(sb, "torch"), "layer 1 down holds NaN or Inf"),
    ("nan-weight-scalar", 12, lambda sb: _nan_weight(sb, "scalar"), "layer 1 down holds NaN or Inf"),
]


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (hidden and temporary files too) with its type, size, mode,
    mtime and content hash: any creation, change or removal shows as a difference."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = None
            if p.is_file() and not p.is_symlink():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def sandbox(tmp_path, hf_model_dirs, monkeypatch) -> Sandbox:
    model = tmp_path / "model"
    shutil.copytree(hf_model_dirs[BASE][0], model)
    (tmp_path / "out").mkdir()
    (tmp_path / "hub").mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("AIOS_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # a default export name would land in the sandbox too
    return Sandbox(tmp_path, model, tmp_path / "out")


def test_every_class_has_cases():
    assert {c for _, c, _, _ in CASES} == {1, 2, 3, 4, 5, 6, 7, 8, 11, 12}  # 9 and 10: below and in test_signals
    assert len({i for i, _, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("build,needle", [(b, n) for _, _, b, n in CASES], ids=[i for i, _, _, _ in CASES])
def test_hostile_input(sandbox, build, needle):
    argv = list(build(sandbox))
    before = tree(sandbox.root)
    res = CliRunner().invoke(app, argv)
    assert_refused(res, needle)
    assert tree(sandbox.root) == before, "the sandbox changed"


def assert_refused(res, needle: str) -> str:
    """Exit 2, nothing on stdout, no traceback, and exactly one `aios: error:` line on stderr that
    says `needle`; returns the line."""
    assert res.exit_code == BAD_INPUT, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    assert res.stdout == "", res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aios: error: "), res.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


# --- 3. export targets that are written, not refused ------------------------------------

def test_a_device_file_is_written_in_place_never_replaced(sandbox):
    before = os.stat(os.devnull)
    res = CliRunner().invoke(app, [*RUN, "-m", str(sandbox.model), "--csv", os.devnull, "--trace", os.devnull])
    assert res.exit_code == 0, res.output
    after = os.stat(os.devnull)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_disk_is_one_line_after_the_results(sandbox):
    before = tree(sandbox.root)
    res = CliRunner().invoke(app, [*RUN, "-m", str(sandbox.model), "-f", "json", "--trace", "/dev/full"])
    assert res.exit_code == BAD_INPUT
    assert json.loads(res.stdout)["new_tokens"] == 2  # the results were printed before the failed export
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aios: error: --trace /dev/full: could not write it"), res.stderr
    assert "Traceback" not in res.output and tree(sandbox.root) == before


# --- 9. commands that read caches: a bad entry is skipped or re-measured, never a traceback --

def test_listing_commands_survive_a_poisoned_cache(sandbox):
    from profilers import peaks

    repo = sandbox.root / "hub" / "models--acme--broken"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text("[" * 100_000)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("../../../../etc")
    peaks.cache_path().write_text('{"machine": ' * 5000)
    for argv in (["models", "-f", "json"], ["info", "-f", "json"]):
        res = CliRunner().invoke(app, argv)
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output and json.loads(res.stdout) is not None


# --- through a real process: what only a real file descriptor 2 or stdout shows -------------

PANICS_AT_ENCODE = {  # a post-processor naming a special token it does not define: Rust panics in encode
    "version": "1.0", "model": {"type": "WordLevel", "vocab": {"hello": 0, "[UNK]": 1}, "unk_token": "[UNK]"},
    "pre_tokenizer": {"type": "Whitespace"}, "added_tokens": [],
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "Z", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {}}}


def _aios(*args, cwd, stdout=None):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["RUST_BACKTRACE"] = "1"  # the worst case: Rust's panic report with a backtrace
    return subprocess.run([sys.executable, "-c", "from aios_cli.entry import main; main()", *args], cwd=cwd,
                          stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300)


def test_a_rust_panic_in_the_tokenizer_is_one_line_on_fd_2(sandbox):
    (sandbox.model / "tokenizer.json").write_text(json.dumps(PANICS_AT_ENCODE))
    p = _aios("run", "-b", "simd", "-q", "-n", "2", "-m", str(sandbox.model), "--prompt", "hello", cwd=sandbox.root)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.splitlines() == [err.splitlines()[0]], err
    assert err.startswith("aios: error: the tokenizer could not encode the prompt")


def test_hostile_padding_and_truncation_are_dropped(sandbox):
    """A padding length of 10^12 made the Rust side abort the process (a 4 TB allocation, SIGABRT);
    aios never pads or truncates, so the sections are not loaded."""
    tok = {**{k: v for k, v in PANICS_AT_ENCODE.items() if k != "post_processor"},
           "padding": {"strategy": {"Fixed": 10**12}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                       "pad_type_id": 0, "pad_token": "[UNK]"},
           "truncation": {"direction": "Right", "max_length": 1, "strategy": "LongestFirst", "stride": 5}}
    (sandbox.model / "tokenizer.json").write_text(json.dumps(tok))
    p = _aios("run", "-b", "simd", "-q", "-n", "2", "-m", str(sandbox.model), "--prompt", "hello hello", "-f", "json",
              cwd=sandbox.root)
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout)["prompt_token_ids"] == [0, 0]  # not truncated to 1, not padded


def test_an_export_to_a_symlink_of_stdout_writes_through_it(sandbox):
    """`--csv` naming this process's stdout, when stdout is a regular file: written in place,
    after the results, never renamed over (as root, /dev/stdout itself could have been)."""
    link = sandbox.out / "my_stdout"
    link.symlink_to("/proc/self/fd/1")
    with open(sandbox.out / "result.txt", "wb") as f:
        p = _aios(*RUN, "-m", str(sandbox.model), "-f", "json", "--csv", "/dev/stdout", cwd=sandbox.root, stdout=f)
    assert p.returncode == 0, p.stderr.decode()
    text = (sandbox.out / "result.txt").read_text()
    assert text.lstrip().startswith("{") and "run_id,backend,model,phase" in text  # both, in order
    with open(sandbox.out / "r2.txt", "wb") as f:
        p = _aios(*RUN, "-m", str(sandbox.model), "--csv", str(link), cwd=sandbox.root, stdout=f)
    assert p.returncode == 0 and link.is_symlink() and "run_id,backend" in (sandbox.out / "r2.txt").read_text()


def test_an_export_through_a_symlink_keeps_the_link(sandbox):
    real, link = sandbox.out / "real.csv", sandbox.out / "link.csv"
    real.write_text("old")
    link.symlink_to(real.name)
    res = CliRunner().invoke(app, [*RUN, "-m", str(sandbox.model), "--csv", str(link)])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and real.read_text().startswith("run_id,backend")


def test_long_names_that_fit_the_file_system_are_written(sandbox):
    name = "b" * 251 + ".csv"  # 255 bytes: a legal name, longer than name + temporary suffix would allow
    res = CliRunner().invoke(app, [*RUN, "-m", str(sandbox.model), "--csv", str(sandbox.out / name)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in sandbox.out.iterdir()) == [name]


def test_a_model_directory_whose_name_is_not_utf8(sandbox):
    odd = sandbox.root / os.fsdecode(b"m\xff")
    shutil.copytree(sandbox.model, odd)
    p = _aios(*RUN, "-m", str(odd), "--csv", str(sandbox.out / "x.csv"), cwd=sandbox.root)  # argv as bytes
    assert p.returncode == 0, p.stderr.decode()
    assert (sandbox.out / "x.csv").read_bytes().count(b"m\xff") > 0  # the name as it is on disk


def test_a_peaks_cache_of_the_wrong_types_is_measured_again(sandbox):
    from profilers import peaks

    d = {"machine": peaks.machine_key(), "measured_at": "x", "notes": 5,
         "cpu_bandwidth": {"median": "fast", "min": 0, "max": 1, "unit": "B/s", "how": "?"},
         "cpu_flops": {"median": 0, "min": 0, "max": 0, "unit": "FLOP/s", "how": "?"}}
    peaks.cache_path().write_text(json.dumps(d))
    assert peaks.load_cached() is None
    res = CliRunner().invoke(app, ["info", "-f", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["peaks"] is None


def test_markup_in_a_model_folder_name_is_printed_as_text(sandbox):
    """Rich would read `[/]` in a result table or heading as markup (a MarkupError, exit 1)."""
    odd = sandbox.root / "m[" / "]x[bold]"  # the path holds `[/]`; the folder is named `]x[bold]`
    shutil.copytree(sandbox.model, odd)
    for argv, shown in ((["bench", "latency", "-m", str(odd), "-b", "simd", "-r", "1", "-p", "2", "-n", "1"], str(odd)),
                        (["run", "-m", str(odd), "-b", "simd", "-n", "2", "--prompt-ids", "1,2"], "]x[bold] (qwen2")):
        res = CliRunner().invoke(app, argv)
        assert res.exit_code == 0, res.output
        assert shown in res.stdout


def test_a_numba_thread_count_that_is_not_a_number_is_one_line(monkeypatch):
    from profilers import threads

    monkeypatch.setattr(threads, "_USER_ENV", {"NUMBA_NUM_THREADS": "abc"})
    for argv in (["run", "-q"], ["bench", "latency", "-q"], ["compare", "dot", "-q"]):
        res = CliRunner().invoke(app, argv)
        assert res.exit_code == BAD_INPUT and res.stderr.splitlines() == [
            "aios: error: NUMBA_NUM_THREADS='abc' is not a thread count — unset it, or export a whole number"], res.output


def test_an_export_to_the_file_stdout_goes_to_follows_the_results(sandbox):
    """`aios run -f json --trace F > F`: F is stdout, so the trace goes after the results (as
    with `-`), not renamed over them; and with --csv /dev/stdout as well it is one target twice."""
    f = sandbox.out / "F"
    with open(f, "wb") as out:
        p = _aios(*RUN, "-m", str(sandbox.model), "-f", "json", "--trace", str(f), cwd=sandbox.root, stdout=out)
    assert p.returncode == 0, p.stderr.decode()
    text = f.read_text()
    assert text.startswith("{") and text.rstrip().endswith("}}") and '"traceEvents"' in text and '"run_id"' in text
    with open(f, "wb") as out:
        p = _aios(*RUN, "-m", str(sandbox.model), "--csv", "/dev/stdout", "--trace", str(f), cwd=sandbox.root,
                  stdout=out)
    assert p.returncode == 2 and p.stderr.decode().startswith("aios: error: --csv and --trace both write")


def test_a_peaks_cache_with_a_400_digit_number_is_measured_again(sandbox):
    from profilers import peaks

    big = int("1" + "0" * 400)
    d = {"machine": peaks.machine_key(), "measured_at": "x", "notes": [],
         "cpu_bandwidth": {"median": big, "min": big, "max": big, "unit": "B/s", "how": "?"},
         "cpu_flops": {"median": 1e11, "min": 1e11, "max": 1e11, "unit": "FLOP/s", "how": "?"}}
    peaks.cache_path().write_text(json.dumps(d))
    assert peaks.load_cached() is None
