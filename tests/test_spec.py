"""Speculative decoding keeps the target's output exactly (`engines.spec`).

Greedy: the ids equal the one-token-at-a-time greedy ids, token for token, for every k, on simd
and torch, with a drafter that is always wrong (every round rejects its first draft), one that
is always right (the target's own continuation: every round accepts all k), and prompt lookup.
Sampled: the accept-and-residual rule, enumerated exactly over a small vocabulary, gives the
target's distribution for random p and q, and does not when it is broken; a chi-square test of
the token a verify pass emits on a 12-token model catches the same breaks. The breaks: the
ratio upside down (min(1, q/p)), the drafter's q ignored (accepting with p(x), right only for a
deterministic drafter), and the target's own p drawn at a rejection instead of the residual.
"p/q without the min" is not among them: a draw u < p/q with u in [0, 1) is u < min(1, p/q).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from engines import engine_class
from engines.generate import Generation
from engines.model.checkpoint import Checkpoint
from engines.model.sources import open_preset
from engines.model.weights import ModelWeights
from engines.sampling import Sampler, SamplingParams
from engines.spec import rule
from engines.spec.generate import SpeculativeGeneration
from engines.spec.ngram import PromptLookup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_NEW = 24
PROMPT = [9707, 11, 1879, 0, 220, 16, 17, 18, 11, 220, 16, 17]  # repeats itself, so prompt lookup finds matches


# --- the rule, enumerated ------------------------------------------------------------------------

def emitted_distribution(p, q, accept=rule.accept_probability, residual=rule.residual):
    """P(the token one position emits = y), enumerated over the drafted x ~ q: accepted with
    accept(p, q, x), else a draw from residual(p, q)."""
    out = np.zeros_like(p)
    for x in range(len(q)):
        if q[x] == 0:
            continue
        a = accept(p, q, x)
        out[x] += q[x] * a
        out += q[x] * (1 - a) * residual(p, q)
    return out


def random_pq(rng, V, sparse=False):
    p, q = rng.dirichlet(np.ones(V) * 0.5), rng.dirichlet(np.ones(V) * 0.5)
    if sparse:  # zeros in either: tokens one side never draws
        p[rng.integers(0, V, 2)] = 0.0
        q[rng.integers(0, V, 2)] = 0.0
        p, q = p / p.sum(), q / q.sum()
    return p, q


@pytest.mark.parametrize("seed", range(20))
def test_the_rule_gives_the_target_distribution_exactly(seed):
    rng = np.random.default_rng(seed)
    V = int(rng.integers(2, 9))
    p, q = random_pq(rng, V, sparse=seed % 2 == 1)
    np.testing.assert_allclose(emitted_distribution(p, q), p, atol=1e-12)
    point = np.eye(V)[int(rng.integers(0, V))]  # a deterministic drafter
    np.testing.assert_allclose(emitted_distribution(p, point), p, atol=1e-12)


BROKEN = {
    "ratio upside down": {"accept": lambda p, q, x: min(1.0, float(q[x]) / float(p[x])) if p[x] else 1.0},
    "q ignored": {"accept": lambda p, q, x: float(p[x])},
    "no residual": {"residual": lambda p, q: p},
}


@pytest.mark.parametrize("mistake", BROKEN)
def test_the_enumeration_fails_a_broken_rule(mistake):
    """The check above is not vacuous: each classic mistake moves the distribution."""
    rng = np.random.default_rng(1)
    p, q = random_pq(rng, 6)
    assert np.abs(emitted_distribution(p, q, **BROKEN[mistake]) - p).max() > 0.01


class Script:
    """A stand-in for a NumPy Generator: the uniforms a test chooses, in order."""

    def __init__(self, *us):
        self.us = list(us)

    def random(self):
        return self.us.pop(0)


def test_verify_sampled_follows_the_rule_in_order():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    q = np.array([[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]])
    # x1 = 1: accepted when u < min(1, 0.5/0.75); x2 = 1: accepted when u < 0.3; bonus from p[2]
    assert rule.verify_sampled(p, q, [1, 1], Script(0.6, 0.2, 0.5)) == [1, 1, 2]
    # x1 rejected: the residual max(0, p - q) is all on token 0
    assert rule.verify_sampled(p, q, [1, 1], Script(0.7, 0.99)) == [1 - 1]
    # x2 rejected: the residual of [0.2, 0.3, 0.5] - [0, 1, 0] is [0.2, 0, 0.5] / 0.7
    assert rule.verify_sampled(p, q, [1, 1], Script(0.1, 0.5, 0.5)) == [1, 2]
    assert rule.verify_greedy([4, 7, 7], [4, 7]) == [4, 7, 7] and rule.verify_greedy([4, 5, 7], [4, 7]) == [4, 5]


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    d = PromptLookup(min_n=1, max_n=3)
    assert d.propose([1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 3], 2) == [8, 1]  # the latest earlier "1 2 3"
    assert d.propose([5, 6, 7], 3) == []
    assert d.propose([4, 4], 3) == [4]  # what follows is what there is
    assert PromptLookup(min_n=2, max_n=2).propose([1, 2, 9, 7, 2], 2) == []  # "7 2" never came before


# --- greedy: token for token --------------------------------------------------------------------

class AlwaysWrong:
    """Proposes tokens the target never picks first: every round rejects its first draft."""
    deterministic = True

    def __init__(self, reference, prompt, V):
        self.reference, self.prompt, self.V = reference, prompt, V

    def propose(self, context, k):
        i = len(context) - len(self.prompt)  # the index of the token being drafted
        return [(t + 1) % self.V for t in self.reference[i:i + k]]


class Oracle(AlwaysWrong):
    """Proposes the target's own greedy continuation: every round accepts everything."""

    def propose(self, context, k):
        i = len(context) - len(self.prompt)
        return list(self.reference[i:i + k])


def small_vocab_checkpoint() -> Checkpoint:
    """The tiny preset's shapes with a 12-token vocabulary and weights large enough that greedy
    decoding wanders (the tiny preset's near-zero weights repeat one token, which would hide a
    cache off by one position)."""
    base = open_preset("tiny")
    cfg = replace(base.config, vocab_size=12, eos_token_ids=(), name="tiny-v12")
    rng = np.random.default_rng(7)
    from engines.model.safetensors_mmap import TensorRef
    from engines.model.weights import expected_shapes

    shapes = expected_shapes(cfg)
    tensors = {n: TensorRef((rng.standard_normal(s) * (0.5 if len(s) > 1 else 0.1) + (len(s) == 1)).astype(np.float32),
                            "float32") for n, s in shapes.items()}
    return Checkpoint(cfg, ModelWeights(cfg, tensors.__getitem__, "float32"), None, "test", "preset", None,
                      cfg.weight_bytes("float32"), 0.0)


V12_PROMPT = [1, 5, 2, 7, 3, 1, 5, 2, 9]


@pytest.fixture(scope="module", params=[("tiny", "simd"), ("tiny", "torch"), ("v12", "simd"), ("v12", "torch")],
                ids=lambda p: "-".join(p))
def model(request, tiny):
    name, backend = request.param
    ckpt = tiny if name == "tiny" else small_vocab_checkpoint()
    engine = engine_class(backend)(ckpt)
    prompt = PROMPT if name == "tiny" else V12_PROMPT
    g = Generation(engine, prompt, N_NEW, engine.make_sampler(SamplingParams()))
    while not g.done:
        g.step()
    return engine, prompt, g.generated_ids


def speculate(engine, prompt, drafter, k, n=N_NEW, params=None, stop=()):
    g = SpeculativeGeneration(engine, prompt, n, engine.make_sampler(params or SamplingParams()), drafter, k, stop)
    phases = []
    while not g.done:
        phases.append((g.next_pass()[0], len(g.step())))
    return g, phases


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_greedy_ids_equal_one_token_decoding(model, k):
    engine, prompt, reference = model
    V = engine.cfg.vocab_size
    wrong, oracle = AlwaysWrong(reference, prompt, V), Oracle(reference, prompt, V)
    for drafter in (PromptLookup(), wrong, oracle):
        g, phases = speculate(engine, prompt, drafter, k)
        assert g.generated_ids == reference, (type(drafter).__name__, k)
        acc = g.acceptance()
        if drafter is wrong:
            assert acc["accepted_tokens"] == 0 and acc["verify_steps"] > 0
            assert all(n == 1 for phase, n in phases if phase == "verify")
        if drafter is oracle:
            assert acc["acceptance_rate"] == 1.0
            assert acc["accepted_length_histogram"][k] >= acc["verify_steps"] - 1  # the last round may be cut
        # the passes alternate as the profiler will see them: drafts emit nothing
        assert phases[0] == ("prefill", 1) and all(n == 0 for phase, n in phases if phase == "draft")
        assert sum(n for _, n in phases) == N_NEW


def model_drafters(engine):
    """The three kinds of model drafter, for `engine`: the target's own weights in Q8_0, its first
    half of layers (early exit), and the same checkpoint loaded again (the target drafting for
    itself: every draft is the target's own greedy pick)."""
    from engines.spec.drafters import make_drafter
    from engines.spec.model_drafter import ModelDrafter

    half = max(1, engine.cfg.num_layers // 2)
    itself = ModelDrafter(type(engine)(engine.ckpt), "draft:itself", SamplingParams(), engine.cfg.vocab_size)
    return {"self:q8_0": make_drafter("self:q8_0", engine), f"exit:{half}": make_drafter(f"exit:{half}", engine),
            "draft:itself": itself}


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_model_drafters_keep_the_greedy_ids(model, k):
    engine, prompt, reference = model
    for name, drafter in model_drafters(engine).items():
        g, phases = speculate(engine, prompt, drafter, k)
        assert g.generated_ids == reference, (name, k)
        assert sum(n for _, n in phases) == N_NEW and all(n == 0 for ph, n in phases if ph == "draft")
        if name == "draft:itself" and engine.name == "simd":
            # simd's verify is decode bit for bit, so the drafter's picks are the target's
            assert g.acceptance()["acceptance_rate"] == 1.0, g.acceptance()


def test_adaptive_k_grows_on_full_acceptance_and_shrinks_on_rejection(model):
    engine, prompt, reference = model
    V = engine.cfg.vocab_size
    g = SpeculativeGeneration(engine, prompt, N_NEW, engine.make_sampler(SamplingParams()),
                              Oracle(reference, prompt, V), 1, draft_max=5)
    while not g.done:
        g.step()
    assert g.generated_ids == reference and g.ks[:3] == [1, 3, 5]  # +2 a round, capped at 5
    g = SpeculativeGeneration(engine, prompt, N_NEW, engine.make_sampler(SamplingParams()),
                              AlwaysWrong(reference, prompt, V), 4, draft_max=8)
    while not g.done:
        g.step()
    assert g.generated_ids == reference and g.ks[:5] == [4, 3, 2, 1, 1]  # -1 a round, down to 1
    assert g.acceptance()["adaptive_k"] and len(g.acceptance()["accepted_length_histogram"]) == 9


def test_draft_min_drops_short_drafts(model):
    engine, prompt, reference = model
    g = SpeculativeGeneration(engine, prompt, N_NEW, engine.make_sampler(SamplingParams()), PromptLookup(), 8,
                              draft_min=3)
    while not g.done:
        g.step()
    assert g.generated_ids == reference
    assert all(p >= 3 for p in g.proposed)


def test_a_draft_model_must_share_the_tokenizer(tiny):
    from engines.errors import UserError
    from engines.spec.drafters import check_same_vocabulary

    with pytest.raises(UserError, match="12 token ids and the target 151936"):
        check_same_vocabulary(tiny, replace(small_vocab_checkpoint(), tokenizer=None))
    # padded embedding rows (152064 rows for the same 151,6xx-id tokenizer, as Qwen2.5-7B has): compatible
    padded = replace(tiny, config=replace(tiny.config, vocab_size=tiny.config.vocab_size + 128))
    check_same_vocabulary(tiny, padded)
    check_same_vocabulary(padded, tiny)


def test_a_drafter_with_padded_rows_never_drafts_past_the_targets_vocabulary(tiny):
    from engines.spec.model_drafter import ModelDrafter

    drafter = ModelDrafter(engine_class("simd")(tiny), "d", SamplingParams(greedy=False, temperature=1.0),
                           target_vocab=100, seed=3)
    drafter.start(64)
    drafted = drafter.propose(PROMPT, 6)
    assert len(drafted) == 6 and max(drafted) < 100
    assert drafter.q.shape == (6, 100) and np.allclose(drafter.q.sum(axis=1), 1.0)


def test_the_small_vocabulary_model_wanders(model):
    """The oracle above is only as strong as the reference is varied."""
    engine, prompt, reference = model
    if engine.cfg.vocab_size == 12:
        assert len(set(reference)) >= 6


def test_a_stop_token_inside_an_accepted_run_ends_it(model):
    engine, prompt, reference = model
    stop = reference[5]
    g, _ = speculate(engine, prompt, Oracle(reference, prompt, engine.cfg.vocab_size), 4, stop=(stop,))
    assert g.generated_ids == reference[:reference.index(stop) + 1] and g.stopped_at_eos


# --- sampled: the verify pass's token is distributed as the target's ---------------------------

class Uniform:
    """A stochastic drafter: draws each proposal uniformly, so q = 1/V (p/q > 1 where p is
    above uniform: the min matters; the residual is not p)."""
    deterministic = False

    def __init__(self, V, seed):
        self.V, self.rng = V, np.random.default_rng(seed)

    def propose(self, context, k):
        return [int(t) for t in self.rng.integers(0, self.V, k)]

    def distributions(self, context, drafted):
        return np.full((len(drafted), self.V), 1.0 / self.V)


@pytest.fixture(scope="module")
def small_vocab():
    """The 12-token model on the simd engine."""
    return engine_class("simd")(small_vocab_checkpoint())


def verify_token_counts(engine, trials, t1=3, prompt=(1, 5, 2), drafter=None):
    """How often each token is the first one a verify pass emits, after `prompt` and a fixed
    first generated token t1, the draft drawn uniformly (or by `drafter`)."""
    params = SamplingParams(greedy=False, temperature=0.7, seed=0)
    counts = np.zeros(engine.cfg.vocab_size, int)
    g = SpeculativeGeneration(engine, list(prompt), 3, engine.make_sampler(params), drafter or Uniform(12, 1), 1)
    g.step()  # the prefill, once: each trial rolls the cache back to the prompt
    for _ in range(trials):
        engine.truncate(len(prompt))
        g.generated_ids[:] = [t1]  # not in the cache: the verify pass pushes it
        g.stopped_at_eos, g.drafted = False, None
        g.step()  # the draft
        counts[g.step()[0]] += 1
    engine.reset(8)
    p = Sampler(params).distribution(engine.to_host(engine.prefill([*prompt, t1])))
    return counts, p


def chi_square_p(counts, p):
    expected = counts.sum() * p
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    obs, exp = obs[exp > 0], exp[exp > 0]
    return stats.chisquare(obs, exp).pvalue


def test_the_verify_pass_samples_the_targets_distribution(small_vocab):
    counts, p = verify_token_counts(small_vocab, 2000)
    assert p.max() > 2 / 12  # a peaked target: p/q > 1 somewhere, so the rule's parts matter
    assert chi_square_p(counts, p) > 1e-3


def test_a_model_drafter_keeps_the_targets_distribution(small_vocab):
    """The same chi-square with the target's first layer drafting: q is the drafter's own
    sampled distribution (not uniform, not a point mass)."""
    from engines.spec.drafters import make_drafter

    drafter = make_drafter("exit:3", small_vocab, SamplingParams(greedy=False, temperature=0.7, seed=0), seed=5)
    counts, p = verify_token_counts(small_vocab, 2000, drafter=drafter)
    q = drafter.q[0]
    assert q.max() < 0.9 and np.abs(p - q).max() > 0.1  # a real distribution, unlike the target's
    assert chi_square_p(counts, p) > 1e-3


@pytest.mark.parametrize("mistake", ["q ignored", "no residual"])
def test_the_chi_square_catches_a_broken_rule_under_a_model_drafter(small_vocab, monkeypatch, mistake):
    from engines.spec.drafters import make_drafter

    for name, fn in BROKEN[mistake].items():
        monkeypatch.setattr(rule, {"accept": "accept_probability", "residual": "residual"}[name], fn)
    drafter = make_drafter("exit:3", small_vocab, SamplingParams(greedy=False, temperature=0.7, seed=0), seed=5)
    counts, p = verify_token_counts(small_vocab, 2000, drafter=drafter)
    assert chi_square_p(counts, p) < 1e-6, chi_square_p(counts, p)


@pytest.mark.parametrize("mistake", BROKEN)
def test_the_chi_square_catches_a_broken_rule(small_vocab, monkeypatch, mistake):
    """Measured with 2,000 trials: p-values 0.39 for the rule, and 2e-11 (q ignored), 6e-10
    (no residual) and 0 (ratio upside down) for the mistakes."""
    for name, fn in BROKEN[mistake].items():
        monkeypatch.setattr(rule, {"accept": "accept_probability", "residual": "residual"}[name], fn)
    counts, p = verify_token_counts(small_vocab, 2000)
    assert chi_square_p(counts, p) < 1e-6, chi_square_p(counts, p)


# --- aios run --speculate ------------------------------------------------------------------------

def cli(*args):
    from typer.testing import CliRunner

    from aios_cli.main import app

    return CliRunner().invoke(app, list(args))


def test_aios_run_speculate_keeps_the_ids_and_reports_acceptance(tmp_path):
    import csv
    import json

    ids = ",".join(map(str, PROMPT))
    base = ["run", "-m", "tiny", "-b", "simd", "--prompt-ids", ids, "-n", "12", "--ignore-eos", "-f", "json", "-q"]
    plain = json.loads(cli(*base).stdout)
    res = cli(*base, "--speculate", "ngram", "--spec-k", "3", "--csv", str(tmp_path / "ops.csv"))
    assert res.exit_code == 0, res.output
    spec = json.loads(res.stdout)
    assert spec["generated_token_ids"] == plain["generated_token_ids"]
    assert spec["speculate"] == "ngram" and spec["spec_k"] == 3 and plain["speculate"] is None
    acc = spec["meta"]["speculation"]
    assert acc["verify_steps"] > 0 and 0 <= spec["acceptance_rate"] <= 1
    assert spec["tokens_per_verify_step"] == pytest.approx((acc["accepted_tokens"] + acc["verify_steps"]) / acc["verify_steps"])
    assert sum(acc["accepted_length_histogram"]) == acc["verify_steps"] and len(acc["accepted_length_histogram"]) == 4
    steps = spec["tokens"]
    assert {t["phase"] for t in steps} <= {"prefill", "draft", "verify", "decode"} and "verify" in {t["phase"] for t in steps}
    assert sum(t["emitted"] for t in steps) == 12 and all(t["emitted"] == 0 for t in steps if t["phase"] == "draft")
    assert spec["decode_tokens"] == plain["decode_tokens"] == 11
    # bytes per emitted token: a verify pass reads the weights once for all the tokens it emits
    per_verify = spec["tokens_per_verify_step"]
    assert per_verify > 1.5 and spec["decode_bytes_per_token"] < plain["decode_bytes_per_token"] / 1.2
    rows = list(csv.DictReader((tmp_path / "ops.csv").open()))
    assert {r["phase"] for r in rows} >= {"prefill", "verify"}
    # a verify step pushes the last token and the drafts: its rows carry what it emitted
    assert {int(r["emitted"]) for r in rows if r["phase"] == "verify"} <= set(range(1, 5))


@pytest.mark.parametrize("args,line", [
    (["--speculate", "bogus"],
     "--speculate 'bogus' is not a drafter — use --speculate ngram, draft:MODEL, self:q4_0, exit:L"),
    (["--speculate", "self:q2_k"], "--speculate 'self:q2_k': self-speculation takes q4_0 or q8_0 — "
                                   "pass --speculate self:q4_0 or self:q8_0"),
    (["--speculate", "exit:x"], "--speculate 'exit:x': exit takes a layer count (1 or more) — pass --speculate exit:8, say"),
    (["--speculate", "exit:4"], "exit:4 needs 1 to 3 of the model's 4 layers — pass --speculate exit:1, say"),
    (["--speculate", "draft:"], "--speculate draft: names no model — pass --speculate draft:MODEL (a preset, a path or smollm2)"),
    (["--speculate", "self:q4_0", "-b", "scalar"],
     "--speculate self:q4_0: the scalar engine cannot hold quantized weights — use --backend simd or torch"),
    (["--speculate", "ngram", "--draft-p-min", "0.5"], "--draft-p-min needs a model drafter: prompt lookup has no "
     "probabilities — drop --draft-p-min, or use --speculate draft:MODEL, self:q4_0 or exit:L"),
    (["--speculate", "draft:tiny", "--temperature", "0.8", "--draft-min", "2"],
     "--draft-min with a sampled model drafter would bias the output (whether a draft is dropped would depend on "
     "what was drawn) — drop --draft-min, or sample with --greedy"),
    (["--speculate", "ngram", "--spec-k", "0"], "--spec-k must be between 1 and 64, got 0 — pass --spec-k 4, say"),
])
def test_aios_run_speculate_bad_input_is_one_line(args, line):
    res = cli("run", "-m", "tiny", *args)
    assert res.exit_code == 2 and res.stderr.strip() == f"aios: error: {line}", res.output


@pytest.mark.parametrize("quant,dot", [("none", ""), ("q4_0", "int8"), ("q4_1", "int8"), ("q8_0", "int8"),
                                       ("q4_0", "float32"), ("q4_1", "float32"), ("q8_0", "float32")])
def test_a_short_pass_is_decode_bit_for_bit(tiny, quant, dot, monkeypatch):
    """simd's verify pass (a short prefill, every position's logits) against the oracle of
    decoding the same tokens one at a time: equal, not just close, over float32 and quantized
    weights, so a greedy verify can never flip a near-tie that decode would not. (The matmuls
    read each block of weights once for all the tokens and sum each row in the matvec's order;
    attention runs row by row on decode's kernels; the quantized kernels compile without
    reassociation.)"""
    from engines.simd import qkernels as QK

    if dot == "int8" and not QK.HAVE_AVX2:
        pytest.skip("the int8 kernels need x86-64 with AVX2")
    if dot:
        monkeypatch.setenv("AIOS_QUANT_DOT", dot)
    engine = engine_class("simd")(tiny, quant=quant)
    assert engine.quant_dot == dot
    engine.reset(64)
    engine.prefill(PROMPT)
    past = engine.pos
    tokens = [5, 77, 901, 12, 300, 44, 8]
    rows = np.array(engine.prefill(tokens, all_logits=True))
    engine.truncate(past)
    one_by_one = np.stack([np.array(engine.decode(t)) for t in tokens])
    assert np.array_equal(rows, one_by_one), np.abs(rows - one_by_one).max()


def test_a_speculative_trace_has_a_lane_per_engine(tmp_path):
    import json

    trace = tmp_path / "t.json"
    res = cli("run", "-m", "tiny", "-b", "simd", "--prompt-ids", ",".join(map(str, PROMPT)), "-n", "10", "--ignore-eos",
              "--speculate", "exit:2", "--no-baseline", "-q", "--trace", str(trace))
    assert res.exit_code == 0, res.output
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert set(names.values()) == {"tokens · target", "ops · target", "tokens · draft", "ops · draft"}
    lane = {v: k for k, v in names.items()}
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["cat"] for e in slices if e["tid"] == lane["tokens · draft"]} == {"draft"}
    assert "draft" not in {e["cat"] for e in slices if e["tid"] == lane["tokens · target"]}
    draft_ops = [e for e in slices if e["tid"] == lane["ops · draft"]]
    assert draft_ops and all(e["args"]["flops"] is None for e in draft_ops)  # the record's costs are the target's
    # the draft model has the target's first 2 layers: its ops name layers 0, 1 and the head (-1) only
    assert {e["args"]["layer"] for e in draft_ops} == {-1, 0, 1}


def test_aios_bench_spec_reports_ratios_with_the_baseline_interleaved():
    import json

    res = cli("bench", "spec", "-m", "tiny", "-d", "ngram,exit:2", "-k", "1,3", "-n", "8", "-r", "2", "-f", "json",
              "-q", "-t", "1")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [(r["workload"], r["drafter"], r["k"]) for r in rows] == [
        (w, d, k) for w in ("code", "text", "open") for d in ("ngram", "exit:2") for k in (1, 3)]
    for r in rows:
        assert r["engine"] == "aios" and r["same_ids"] is True and r["repetitions"] == 2
        assert r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
        assert r["baseline_tok_s_min"] <= r["baseline_tok_s_median"] <= r["baseline_tok_s_max"]
    assert "llama.cpp peer: skipped" in res.stderr


@pytest.mark.parametrize("args,line", [
    (["-d", "bogus"], "--speculate 'bogus' is not a drafter"),
    (["-w", "poem"], "unknown workload 'poem' — choose from: code, text, open"),
    (["-n", "1"], "--n-gen must be between 2 and 4,096, got 1"),
])
def test_aios_bench_spec_bad_input_is_one_line(args, line):
    res = cli("bench", "spec", "-m", "tiny", *args)
    assert res.exit_code == 2 and res.stderr.startswith(f"aios: error: {line}") and "\n" not in res.stderr.strip()


def test_aios_bench_spec_says_why_the_peer_did_not_run():
    res = cli("bench", "spec", "-m", "tiny", "-k", "2", "-n", "4", "-r", "1", "-w", "open", "-q", "-f", "json",
              "--llama-python", "/nonexistent/python")
    assert res.exit_code == 0
    # a preset is no GGUF file: llama.cpp cannot read it, and the line says so
    assert "llama.cpp peer: skipped — the target is not a GGUF file" in res.stderr


# --- speculative steps inside continuous batching (the paged cache) ------------------------------

@pytest.fixture(scope="module", params=["tiny", "v12"])
def batch_case(request, tiny):
    """The torch engine, and requests (repetitive prompts, so prompt lookup drafts) with their
    ids decoded alone, greedy: the oracle."""
    ckpt = tiny if request.param == "tiny" else small_vocab_checkpoint()
    eng = engine_class("torch")(ckpt)
    rng = np.random.default_rng(1)
    V = eng.cfg.vocab_size
    prompts = []
    for i in range(8):
        motif = [int(t) for t in rng.integers(0, V, int(rng.integers(2, 6)))]
        prompts.append((motif * 8)[: int(rng.integers(6, 30))])
    news = [int(rng.integers(3, 24)) for _ in prompts]
    ref = []
    for p, n in zip(prompts, news):
        g = Generation(eng, p, n, eng.make_sampler(SamplingParams()))
        while not g.done:
            g.step()
        ref.append(g.generated_ids)
    return eng, prompts, news, ref


@pytest.mark.parametrize("kw", [{"num_blocks": 128}, {"num_blocks": 128, "max_num_batched_tokens": 12, "max_num_seqs": 4},
                                {"num_blocks": 14, "block_size": 4}],
                         ids=["roomy", "tight-budget", "preempting"])
@pytest.mark.parametrize("k", [1, 4])
def test_batched_speculation_keeps_each_requests_greedy_ids(batch_case, kw, k):
    from engines.batch.engine import BatchEngine

    eng, prompts, news, ref = batch_case
    be = BatchEngine(eng, speculate="ngram", spec_k=k, **kw)
    reqs = [be.add_request(p, n) for p, n in zip(prompts, news)]
    most = 0  # the most tokens one request got in one step
    while be.has_unfinished():
        out = be.step()
        ids = [r.id for r, _ in out.tokens]
        most = max([most, *(ids.count(i) for i in ids)])
        be.blocks.check([r.table for r in be.requests.values()])  # rollbacks leave the pool consistent
        assert all(not r.draft_ids for r in be.requests.values())  # drafts never outlive their step
    assert [r.output_ids for r in reqs] == ref
    assert be.spec_drafts > 0 and 0 < be.spec_accepted_tokens <= be.spec_draft_tokens
    assert sum(be.spec_accepted_per_pos) == be.spec_accepted_tokens and len(be.spec_accepted_per_pos) == k
    assert most >= 2  # accepted drafts: a request got several tokens in one step


def test_batched_speculation_samples_the_same_tokens_for_the_same_seed(batch_case):
    from engines.batch.engine import BatchEngine

    eng, prompts, news, _ = batch_case
    params = SamplingParams(greedy=False, temperature=0.9, top_k=20, seed=4)
    runs = []
    for _ in range(2):
        be = BatchEngine(eng, num_blocks=128, speculate="ngram", spec_k=3)
        reqs = [be.add_request(p, n, params) for p, n in zip(prompts, news)]
        be.run_all()
        runs.append([r.output_ids for r in reqs])
    assert runs[0] == runs[1] and [len(o) for o in runs[0]] == news


def test_the_batched_engine_refuses_a_model_drafter(tiny):
    from engines.batch.engine import BatchEngine
    from engines.errors import UserError

    with pytest.raises(UserError, match="not built for the batched engine"):
        BatchEngine(engine_class("torch")(tiny), num_blocks=8, speculate="self:q4_0")


def test_a_draft_model_with_another_tokenizer_is_refused_before_loading():
    from .conftest import smollm2_file

    smollm2_file()  # or a skip
    res = cli("run", "-m", "tiny", "--speculate", "draft:smollm2", "-n", "4")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines()[-1].startswith(
        "aios: error: the draft model smollm2's tokenizer is not the target tiny's")
    assert "[simd]" not in res.stdout  # nothing generated


def test_a_draft_model_may_run_on_another_backend(tiny):
    """draft:MODEL@simd drafting for a torch target: the ids stay the target's."""
    from engines.spec.drafters import make_drafter

    target = engine_class("torch")(tiny)
    drafter = make_drafter("draft:tiny@simd", target)
    assert drafter.engine.name == "simd" and drafter.name == "draft:tiny@simd"
    g = Generation(target, PROMPT, N_NEW, target.make_sampler(SamplingParams()))
    while not g.done:
        g.step()
    s, _ = speculate(target, PROMPT, drafter, 4)
    assert s.generated_ids == g.generated_ids and s.acceptance()["verify_steps"] > 0


@pytest.mark.parametrize("drafter", ["ngram", "self:q8_0"])
def test_the_same_seed_samples_the_same_tokens_under_speculation(tiny, drafter):
    from engines.spec.drafters import make_drafter

    engine = engine_class("simd")(tiny)
    params = SamplingParams(greedy=False, temperature=0.9, top_k=50, top_p=0.95, seed=11)
    runs = []
    for _ in range(2):
        d = make_drafter(drafter, engine, params, seed=params.seed)
        g, _ = speculate(engine, PROMPT, d, 4, params=params)
        runs.append(g.generated_ids)
    assert runs[0] == runs[1] and len(runs[0]) == N_NEW


class ReferenceDrafts:
    """For the batched engine: proposes each request's reference continuation (right) or each
    reference token plus one (wrong), found by the prompt the context starts with."""
    deterministic = True

    def __init__(self, prompts, refs, V, right):
        self.by_prompt = [(list(p), list(r)) for p, r in zip(prompts, refs)]
        self.V, self.right = V, right

    def propose(self, context, k):
        for p, r in self.by_prompt:
            if context[:len(p)] == p and context[len(p):] == r[:len(context) - len(p)]:
                i = len(context) - len(p)
                return list(r[i:i + k]) if self.right else [(t + 1) % self.V for t in r[i:i + k]]
        raise AssertionError("a context that is no request's reference prefix")


@pytest.mark.parametrize("right", [True, False], ids=["always-right", "always-wrong"])
def test_batched_speculation_with_forced_acceptance_and_forced_rejection(batch_case, right):
    from engines.batch.engine import BatchEngine

    eng, prompts, news, ref = batch_case
    be = BatchEngine(eng, num_blocks=14, block_size=4, speculate="ngram", spec_k=4)  # a pool that preempts
    be.drafter = ReferenceDrafts(prompts, ref, eng.cfg.vocab_size, right)
    reqs = [be.add_request(p, n) for p, n in zip(prompts, news)]
    while be.has_unfinished():
        be.step()
        be.blocks.check([r.table for r in be.requests.values()])
    assert [r.output_ids for r in reqs] == ref
    assert be.spec_drafts > 0
    if right:
        assert be.spec_accepted_tokens == be.spec_draft_tokens
    else:
        assert be.spec_accepted_tokens == 0
