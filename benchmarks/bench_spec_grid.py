"""Speculative decoding's greedy exactness, the full grid: every drafter × k in {1, 2, 4, 8} ×
backend, on the presets and on real SmolLM2, against the one-token-at-a-time greedy ids. Prints;
never asserts (CI runs a representative subset in tests/test_spec.py).

    python benchmarks/bench_spec_grid.py                         # tiny and smollm2, simd and torch
    python benchmarks/bench_spec_grid.py --models smollm2 --backends torch -n 48

Drafters: prompt lookup (`ngram`), the model's own weights in Q8_0 and Q4_0 (`self:*`), its
first half of layers (`exit:L`), the same checkpoint loaded again (`draft:itself`: the target
drafting for itself, full acceptance where verify equals decode), and two forced cases: a
drafter that is always wrong (every round rejects its first draft) and one that proposes the
reference continuation (every round accepts all k).

Where ids differ, the first divergent position is reported with the target's logit margin
there (top-1 minus top-2, relative to |top-1|), computed by a plain prefill over the context:
a k-token verify sums in another order than a one-token decode (torch; simd's short pass is
decode bit for bit), so only a near-tie may flip.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.threads import quiet_blas_pool  # noqa: E402

quiet_blas_pool()

import numpy as np  # noqa: E402

from engines import engine_class  # noqa: E402
from engines.generate import Generation  # noqa: E402
from engines.model.sources import open_model  # noqa: E402
from engines.model.tokenizer import encode  # noqa: E402
from engines.sampling import SamplingParams  # noqa: E402
from engines.spec.drafters import make_drafter  # noqa: E402
from engines.spec.generate import SpeculativeGeneration  # noqa: E402
from engines.spec.model_drafter import ModelDrafter  # noqa: E402
from profilers.spec_bench import WORKLOADS  # noqa: E402


class Forced:
    """Proposes the reference continuation (right) or each reference token plus one (wrong)."""
    deterministic = True

    def __init__(self, reference, n_prompt, V, right):
        self.reference, self.n_prompt, self.V, self.right = reference, n_prompt, V, right

    def propose(self, context, k):
        i = len(context) - self.n_prompt
        got = self.reference[i:i + k]
        return list(got) if self.right else [(t + 1) % self.V for t in got]


def margin_at(engine, ids) -> float:
    engine.reset(len(ids) + 1)
    logits = np.asarray(engine.to_host(engine.prefill(ids)), np.float64)
    top2 = np.sort(logits)[-2:]
    return float((top2[1] - top2[0]) / max(abs(top2[1]), 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--backends", default="simd,torch")
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("-n", "--tokens", type=int, default=32)
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    print(f"# bench_spec_grid · {time.strftime('%Y-%m-%d %H:%M')} · load avg {os.getloadavg()[0]:.2f} · "
          f"{os.cpu_count()} CPUs · greedy, {args.tokens} tokens, the 'code' workload's prompt")
    print(f"{'model':<9} {'backend':<6} {'drafter':<13} " + " ".join(f"{'k=' + str(k):>14}" for k in ks))
    for m in args.models.split(","):
        try:
            ckpt = open_model(m)
        except Exception as e:  # noqa: BLE001 - a model not installed is a line, not a crash
            print(f"{m}: skipped ({e})")
            continue
        prompt = encode(ckpt.tokenizer, WORKLOADS["code"][1])
        for b in args.backends.split(","):
            engine = engine_class(b)(ckpt)
            params = SamplingParams()
            g = Generation(engine, prompt, args.tokens, engine.make_sampler(params))
            while not g.done:
                g.step()
            ref = g.generated_ids
            V = engine.cfg.vocab_size
            half = max(1, engine.cfg.num_layers // 2)
            drafters = {"ngram": make_drafter("ngram"), "self:q8_0": make_drafter("self:q8_0", engine),
                        "self:q4_0": make_drafter("self:q4_0", engine), f"exit:{half}": make_drafter(f"exit:{half}", engine),
                        "draft:itself": ModelDrafter(type(engine)(ckpt), "draft:itself", params, V),
                        "always wrong": Forced(ref, len(prompt), V, False),
                        "always right": Forced(ref, len(prompt), V, True)}
            for name, d in drafters.items():
                cells = []
                for k in ks:
                    sg = SpeculativeGeneration(engine, prompt, args.tokens, engine.make_sampler(params), d, k)
                    while not sg.done:
                        sg.step()
                    got = sg.generated_ids
                    rate = sg.acceptance()["acceptance_rate"]
                    acc = "—" if rate is None else f"{rate:.0%}"
                    if got == ref:
                        cells.append(f"same {acc:>4}")
                    else:
                        i = next(j for j, (a, c) in enumerate(zip(got, ref)) if a != c)
                        cells.append(f"@{i} m={margin_at(engine, prompt + ref[:i]):.1e}")
                print(f"{m:<9} {b:<6} {name:<13} " + " ".join(f"{c:>14}" for c in cells), flush=True)
    print("same NN%: the ids equal the plain greedy ids (NN%: drafts accepted); @i m=X: the first divergent "
          "token and the target's relative top-1/top-2 logit margin there")


if __name__ == "__main__":
    main()
