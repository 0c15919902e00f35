"""A GGUF file's tokenizer, rebuilt as a HuggingFace ``tokenizers.Tokenizer``.

Why
---
A GGUF carries no ``tokenizer.json``: llama.cpp's converter stores the vocabulary, the merges, the
token types and the special-token ids as ``tokenizer.ggml.*`` metadata, and names the pre-tokenizer
(the regex that cuts text into words before BPE) by a short label, ``tokenizer.ggml.pre``.  To
encode prompts for a GGUF model aios has to turn that back into a working tokenizer.

How
---
Only ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE) is supported.  The choices follow
llama.cpp (``src/llama-vocab.cpp``), the runtime GGUF files are written for:

* vocabulary: token ``i`` of ``tokenizer.ggml.tokens`` gets id ``i``, spelled as stored;
* merges: ``tokenizer.ggml.merges`` in file order (the order is the rank);
* pre-tokenizer: llama.cpp's regex list for the ``pre`` label (each regex splits every piece the
  previous one left, keeping matches and the text between them), then GPT-2's byte-to-unicode
  mapping;  llama3-family labels also map a word that is itself a token straight to it
  (``ignore_merges``), as llama.cpp does;
* token types 3 (control) and 4 (user-defined) become added tokens, matched whole in the text
  before any splitting; control ones are marked special (``decode(skip_special_tokens=True)``
  drops them), user-defined ones are not -- llama.cpp prints them even when it hides specials;
* ``tokenizer.ggml.add_bos_token`` / ``add_eos_token``: a post-processor adds BOS / EOS when
  ``encode(..., add_special_tokens=True)`` (the default).  When the key is absent llama.cpp's default
  holds: BOS for the llama3 family, none otherwise;
* a ByteLevel decoder: ``decode(ids, skip_special_tokens=False)`` gives the text back, less any
  byte whose one-character token the vocabulary lacks (SmolLM2 has none for 0x04, 0x06, ...): such
  a byte gets no id, in llama.cpp and transformers alike.

Where this differs from transformers' GGUF loader (``transformers.integrations.gguf``): that loader
only knows some ``pre`` labels and falls back to GPT-2's regex for the rest, ``smollm`` included,
so there whitespace before a digit joins the whitespace run ("    1" -> "ĠĠĠ", "Ġ", "1" rather than
llama.cpp's "ĠĠĠĠ", "1"); and it leaves out control tokens not spelled in the byte alphabet.  This
module follows llama.cpp: its converter picks the label by hashing the model's own HF tokenizer's
output, and SmolLM2's tokenizer.json splits every digit off first, as the label's regexes do.

Metadata:  :func:`gguf_metadata` turns a ``gguf.GGUFReader``'s fields into the plain dict
:func:`tokenizer_from_gguf` takes (the files are read by the ``gguf`` package only).

Anything in the metadata that cannot be used raises ``ModelError`` (one line naming the key);
nothing in it is dropped silently (a repeated merge pair is ignored, as llama.cpp does).  This
module imports ``tokenizers`` only (``gguf`` inside :func:`gguf_metadata`); no torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from ..errors import ModelError
from .tokenizer import is_panic, rust_stderr_quiet

if TYPE_CHECKING:  # pragma: no cover
    import gguf

__all__ = ["SUPPORTED_MODELS", "SUPPORTED_PRE", "gguf_metadata", "tokenizer_from_gguf"]

_FIX = "re-convert the model with llama.cpp's convert_hf_to_gguf.py, or pass --prompt-ids"
_UNSUPPORTED_FIX = "pass --prompt-ids (token ids) instead of a text prompt"

# --------------------------------------------------------------------------- pre-tokenizers

# GPT-2's word regex (the one tokenizers' ByteLevel(use_regex=True) applies).  llama.cpp's copy
# lacks the final `|\s+`; that makes no difference to the pieces, because the text between matches
# becomes a piece of its own anyway.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Llama 3's (tiktoken cl100k): numbers in groups of up to three digits, newlines kept together.
# llama.cpp spells the contractions `'[sS]|'[tT]|...` because its regex engine has no (?i:);
# the models' own tokenizer.json (and transformers) use (?i:...), kept here.  The two differ only
# on apostrophe + a character that case-folds to one of s/t/m/d/r/e/v/l (e.g. "'ſ", long s).
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's: Llama 3's with every digit on its own.
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-4o's (o200k): case-aware words with contractions attached.  llama.cpp rewrites the
# \p{Lu}/\p{Ll} classes with lookaheads for its engine; this is the original.
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Mistral's tekken: GPT-4o's without contractions, single digits, "/" kept with punctuation.
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DIGIT = r"\p{N}"  # StarCoder-style vocabularies (SmolLM's) split every digit off first
_PUNCT = r"[\p{P}\$\+<=>\^~\|]+"


@dataclass(frozen=True)
class _Pre:
    regexes: tuple[str, ...]  # applied in order, each to every piece the previous left
    ignore_merges: bool = False  # a word that is a token maps straight to it (llama.cpp's flag)
    add_bos: bool = False  # llama.cpp's default when tokenizer.ggml.add_bos_token is absent


def _table(*groups: tuple[tuple[str, ...], _Pre]) -> dict[str, _Pre]:
    return {label: spec for labels, spec in groups for label in labels}


# tokenizer.ggml.pre label -> pre-tokenizer, as llama.cpp's llama_vocab::impl::load and
# llm_tokenizer_bpe assign them.  Labels llama.cpp handles with custom C++ (kimi-k2, afmoe,
# superbpe ...) or that add separators for encoders (roberta-bpe, jina-v1-en) are left out.
_PRE: dict[str, _Pre] = _table(
    (("gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat", "a.x-4.0",
      "mellum", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4"), _Pre((_GPT2,))),
    (("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"),
     _Pre((_DIGIT, _GPT2))),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
     _Pre((_LLAMA3,), ignore_merges=True, add_bos=True)),
    (("dbrx", "smaug-bpe"), _Pre((_LLAMA3,))),
    (("qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan"), _Pre((_QWEN2,))),
    (("gpt-4o", "llama4", "minimax-m2"), _Pre((_GPT4O,))),
    (("tekken",), _Pre((_TEKKEN,), ignore_merges=True, add_bos=True)),
    # falcon's punctuation class also takes the backtick (default's does not)
    (("falcon",), _Pre((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"))),
    # llama.cpp's fallback: what it uses for "default" and for a file with no `pre` key at all
    (("default",), _Pre((_PUNCT, _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))),
)

#: ``tokenizer.ggml.model`` values this module builds.
SUPPORTED_MODELS: tuple[str, ...] = ("gpt2",)
#: ``tokenizer.ggml.pre`` labels it understands (a missing label means "default", as in llama.cpp).
SUPPORTED_PRE: tuple[str, ...] = tuple(sorted(_PRE))
# `tokenizer.ggml.model` values that say the file deliberately has no vocabulary.
_NO_VOCAB = ("none", "no_vocab")

# llama.cpp's token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


# --------------------------------------------------------------------------- metadata


def gguf_metadata(reader: "gguf.GGUFReader", source: str | None = None) -> dict[str, object]:
    """``{key: value}`` for every metadata field of ``reader`` as plain Python values.

    Scalars come out as ``int`` / ``float`` / ``bool`` / ``str``, arrays as lists of those
    (``gguf``'s ``ReaderField.contents()``).  The reader's own header fields (``GGUF.version``,
    ``GGUF.tensor_count``, ``GGUF.kv_count``) are left out: they are not metadata.  A field that
    does not decode (a string that is not UTF-8, a truncated value, an array of arrays, which
    ``contents()`` would silently flatten) raises ``ModelError`` naming its key and ``source``
    (the file's name; by default the reader's memory map's, where it has one).
    """
    import gguf

    # GGUFReader keeps no path of its own; a plain numpy memmap knows the file name
    source = source or str(getattr(getattr(reader, "data", None), "filename", None) or "GGUF file")
    out: dict[str, object] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            types = list(field.types)
            if types.count(gguf.GGUFValueType.ARRAY) > 1:
                raise ValueError("arrays of arrays are not supported")
            value = field.contents()
        except Exception as exc:  # noqa: BLE001 - any decode failure is the file's fault
            raise ModelError(f"{source}: metadata {_short(key)} cannot be read ({_why(exc)})", _READ_FIX) from None
        out[key] = value
    return out


_READ_FIX = "the file is damaged or not a GGUF; download or convert it again"


def _short(key: object) -> str:
    s = repr(key)
    return s if len(s) <= 80 else s[:77] + "..."


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else type(exc).__name__) or type(exc).__name__


# --------------------------------------------------------------------------- validation


class _Meta:
    """Typed access to the metadata, each failure a one-line ModelError naming the key."""

    def __init__(self, meta: dict[str, object], source: str) -> None:
        self.meta = meta
        self.source = source

    def fail(self, key: str, problem: str, fix: str = _FIX) -> ModelError:
        return ModelError(f"{self.source}: {key} {problem}", fix)

    def str_(self, key: str) -> str | None:
        v = self.meta.get(key)
        if v is not None and not isinstance(v, str):
            raise self.fail(key, f"must be a string, got {_kind(v)}")
        return v

    def bool_(self, key: str) -> bool | None:
        v = self.meta.get(key)
        if v is not None and not isinstance(v, bool):
            raise self.fail(key, f"must be a bool, got {_kind(v)}")
        return v

    def token_id(self, key: str, n_tokens: int) -> int | None:
        v = self.meta.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, f"must be a token id, got {_kind(v)}")
        if not 0 <= v < n_tokens:
            raise self.fail(key, f"is {v}, outside the vocabulary (0..{n_tokens - 1})")
        return v

    def list_(self, key: str, item: type | tuple[type, ...], what: str) -> list | None:
        v = self.meta.get(key)
        if v is None:
            return None
        if not isinstance(v, list):
            raise self.fail(key, f"must be a list of {what}, got {_kind(v)}")
        for i, x in enumerate(v):
            # bool is an int subclass; a list of bools is not a list of ids
            if not isinstance(x, item) or (isinstance(x, bool) and bool not in _as_tuple(item)):
                raise self.fail(key, f"must be a list of {what}, item {i} is {_kind(x)}")
        return v

    def required_list(self, key: str, item: type, what: str) -> list:
        v = self.list_(key, item, what)
        if v is None:
            raise self.fail(key, "is missing")
        return v


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _kind(v: object) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r if len(r) <= 40 else r[:37] + '...'}"


def _vocab(tokens: list[str], m: _Meta) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok == "":
            # llama.cpp loads an empty token as "[EMPTY_<id>]" (it can never match text); so do we,
            # so the id still decodes to something visible instead of vanishing
            tok = tokens[i] = f"[EMPTY_{i}]"
        prev = vocab.setdefault(tok, i)
        if prev != i:
            raise m.fail("tokenizer.ggml.tokens", f"has {tok[:40]!r} twice (ids {prev} and {i}); ids must be unique")
    return vocab


def _merges(raw: list[str], vocab: dict[str, int], m: _Meta) -> list[tuple[str, str]]:
    key = "tokenizer.ggml.merges"
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, line in enumerate(raw):
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise m.fail(key, f"item {i} is {line[:40]!r}, not a pair 'a b' of tokens")
        a, b = parts
        for piece in (a, b, a + b):
            if piece not in vocab:
                raise m.fail(key, f"item {i} ({line[:40]!r}) names {piece[:40]!r}, which is not in tokenizer.ggml.tokens")
        pair = (a, b)
        if pair in seen:
            # a repeated pair adds nothing; llama.cpp keeps its first (best) rank, and so do we
            # (tokenizers would keep the last)
            continue
        seen.add(pair)
        merges.append(pair)
    return merges


# --------------------------------------------------------------------------- build


def tokenizer_from_gguf(meta: dict[str, object], source: str) -> "Tokenizer | None":
    """The tokenizer described by a GGUF file's ``tokenizer.ggml.*`` metadata.

    ``meta`` maps GGUF metadata keys to plain Python values (see :func:`gguf_metadata`);
    ``source`` names the file in error messages.  Returns ``None`` when the file has no tokenizer
    (no ``tokenizer.ggml.model`` key, or the model is ``"none"`` / ``"no_vocab"``).  Raises
    ``ModelError`` (one line, naming the key) for metadata it cannot use: wrong types, lengths that
    disagree, merges that are not ``'a b'`` pairs of known tokens, an unsupported tokenizer model
    or an unknown pre-tokenizer label.
    """
    if not isinstance(meta, dict):
        raise ModelError(f"{source}: GGUF metadata must be a dict, got {_kind(meta)}", _FIX)
    m = _Meta(meta, source)
    model = m.str_("tokenizer.ggml.model")
    if model is None or model in _NO_VOCAB:
        return None
    if model not in SUPPORTED_MODELS:
        raise m.fail(
            "tokenizer.ggml.model",
            f"is {model[:40]!r}; aios reads GGUF tokenizers of type {', '.join(map(repr, SUPPORTED_MODELS))} "
            "(byte-level BPE) only",
            _UNSUPPORTED_FIX,
        )

    pre_label = m.str_("tokenizer.ggml.pre") or "default"  # llama.cpp's choice for a file without one
    spec = _PRE.get(pre_label)
    if spec is None:
        raise m.fail("tokenizer.ggml.pre", f"is {pre_label[:40]!r}, a pre-tokenizer aios does not know (it knows "
                                           f"{len(SUPPORTED_PRE)}, e.g. qwen2, llama-bpe, smollm, gpt-2, default)",
                     _UNSUPPORTED_FIX)

    tokens = m.required_list("tokenizer.ggml.tokens", str, "strings")
    if not tokens:
        raise m.fail("tokenizer.ggml.tokens", "is empty")
    tokens = list(tokens)  # _vocab may rename empty tokens; never touch the caller's list
    n = len(tokens)
    types = m.list_("tokenizer.ggml.token_type", int, "ints")
    if types is not None:
        if len(types) != n:
            raise m.fail("tokenizer.ggml.token_type", f"has {len(types)} entries but tokenizer.ggml.tokens has {n}")
        for i, t in enumerate(types):
            if not 0 <= t <= _BYTE:
                raise m.fail("tokenizer.ggml.token_type", f"item {i} is {t}, not a token type (0..6)")
    # BPE has no use for scores, but a file whose scores disagree with its tokens is broken
    scores = m.list_("tokenizer.ggml.scores", (int, float), "numbers")
    if scores is not None and len(scores) != n:
        raise m.fail("tokenizer.ggml.scores", f"has {len(scores)} entries but tokenizer.ggml.tokens has {n}")
    raw_merges = m.required_list("tokenizer.ggml.merges", str, "strings")

    bos = m.token_id("tokenizer.ggml.bos_token_id", n)
    eos = m.token_id("tokenizer.ggml.eos_token_id", n)
    for key in ("tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"):
        m.token_id(key, n)  # unused for encoding, but checked like the others
    add_bos = m.bool_("tokenizer.ggml.add_bos_token")
    add_eos = m.bool_("tokenizer.ggml.add_eos_token")
    if add_bos is None:
        add_bos = spec.add_bos and bos is not None
    if add_eos is None:
        add_eos = False
    if add_bos and bos is None:
        raise m.fail("tokenizer.ggml.add_bos_token", "is true but tokenizer.ggml.bos_token_id is missing")
    if add_eos and eos is None:
        raise m.fail("tokenizer.ggml.add_eos_token", "is true but tokenizer.ggml.eos_token_id is missing")

    vocab = _vocab(tokens, m)
    merges = _merges(raw_merges, vocab, m)

    control: list[str] = []
    user: list[str] = []
    if types is not None:
        control = [tokens[i] for i, t in enumerate(types) if t == _CONTROL]
        user = [tokens[i] for i, t in enumerate(types) if t == _USER_DEFINED]

    try:
        with rust_stderr_quiet():
            tok = _build(vocab, merges, spec, control, user)
            tok.post_processor = _post_processor(tokens, bos if add_bos else None, eos if add_eos else None)
    except BaseException as exc:  # an Exception from tokenizers, or a Rust panic (a BaseException)
        if not is_panic(exc):
            raise
        raise ModelError(f"{source}: tokenizer.ggml.* does not make a valid tokenizer ({_why(exc)})", _FIX) from None

    # Every added token must have kept its file id (tokenizers reuses the vocab id of a token it
    # already has); anything else would shift ids the model was trained on.
    for s in (*control, *user):
        got = tok.token_to_id(s)
        if got != vocab[s]:
            raise m.fail("tokenizer.ggml.token_type", f"token {s[:40]!r} got id {got}, not its file id {vocab[s]}")
    if tok.get_vocab_size(with_added_tokens=True) != n:
        raise m.fail("tokenizer.ggml.tokens", f"made a vocabulary of {tok.get_vocab_size(with_added_tokens=True)} "
                                              f"tokens, not {n}")
    return tok


def _build(vocab: dict[str, int], merges: list[tuple[str, str]], spec: _Pre,
           control: Sequence[str], user: Sequence[str]) -> Tokenizer:
    # No unk token and no byte fallback, as in llama.cpp and transformers: a byte whose one-character
    # token the vocabulary lacks (SmolLM2 has none for 0x04, 0x06, ...) is left out of the ids.
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=spec.ignore_merges))
    # Split(isolated) keeps both the matches and the text between them as pieces, which is what
    # llama.cpp's unicode_regex_split does with each regex of the list; ByteLevel then only maps
    # bytes to the BPE alphabet (use_regex=False: its own GPT-2 regex would split again).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in spec.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    # normalized=False: matched on the raw text, as llama.cpp's special-token partition does.
    if control:
        tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in control])
    if user:
        tok.add_tokens([AddedToken(s, normalized=False, special=False) for s in user])
    return tok


def _post_processor(tokens: list[str], bos: int | None, eos: int | None) -> "processors.PostProcessor | None":
    """BOS / EOS around each sequence (transformers' template for add_bos_token / add_eos_token)."""
    if bos is None and eos is None:
        return None
    # The template names the tokens by an alias: a real token text may hold ':' or spaces, which
    # the template syntax would misread.
    specials: list[dict[str, object]] = []
    if bos is not None:
        specials.append({"id": "bos", "ids": [bos], "tokens": [tokens[bos]]})
    if eos is not None:
        specials.append({"id": "eos", "ids": [eos], "tokens": [tokens[eos]]})
    single = [*(["bos:0"] if bos is not None else []), "$A:0", *(["eos:0"] if eos is not None else [])]
    pair_b = [*(["bos:1"] if bos is not None else []), "$B:1", *(["eos:1"] if eos is not None else [])]
    return processors.TemplateProcessing(single=single, pair=single + pair_b, special_tokens=specials)
