"""llama.cpp's prompt lookup as the peer of `aios bench spec`, run by another interpreter: the
python of a virtual environment that has `llama-cpp-python` (never the project's own), as

    PEER_PYTHON profilers/llama_peer.py REQUEST.json

REQUEST holds the GGUF path, the prompts (text), the k values, the tokens to generate, the
repetitions and the threads. It prints one JSON object: per workload the baseline's decode tok/s
per repetition, and per k the speculative decode tok/s and whether the ids matched, measured
interleaved as aios measures itself (the baseline, then each k, every repetition). Greedy.
llama-cpp-python's `LlamaPromptLookupDecoding` drafts the way llama.cpp's `llama-lookup` does
(the last n-gram's earlier match in the context). This file imports nothing from aios.
"""

from __future__ import annotations

import json
import sys
import time


def decode_rate(llm, tokens, n_new):
    """(decode tok/s after the first token, the ids): greedy, the prompt's time left out."""
    out, t_first = [], None
    for tok in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
        if t_first is None:
            t_first = time.perf_counter()
        out.append(int(tok))
        if len(out) >= n_new:
            break
    wall = time.perf_counter() - t_first
    return (len(out) - 1) / wall if wall > 0 else float("nan"), out


def main(path: str) -> None:
    import llama_cpp
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    req = json.load(open(path))
    llm = Llama(model_path=req["gguf"], n_ctx=req.get("n_ctx", 1024), n_threads=req["threads"],
                n_threads_batch=req["threads"], verbose=False, seed=0,
                logits_all=True)  # its speculative path reads every drafted position's logits (without: a crash)
    drafters = {k: LlamaPromptLookupDecoding(num_pred_tokens=k, max_ngram_size=3) for k in req["ks"]}
    prompts = {w: llm.tokenize(text.encode(), add_bos=True, special=False) for w, text in req["prompts"].items()}
    res = {"llama_cpp_python": llama_cpp.__version__, "workloads": {}}
    for w, toks in prompts.items():  # a warm-up of each path, untimed
        for d in [None, *drafters.values()]:
            llm.draft_model = d
            decode_rate(llm, toks, 4)
    for _ in range(req["repetitions"]):
        for w, toks in prompts.items():
            row = res["workloads"].setdefault(w, {"baseline": [], "spec": {str(k): [] for k in drafters},
                                                  "same_ids": {str(k): [] for k in drafters}})
            llm.draft_model = None
            b, ref = decode_rate(llm, toks, req["n_new"])
            row["baseline"].append(b)
            for k, d in drafters.items():
                llm.draft_model = d
                s, ids = decode_rate(llm, toks, req["n_new"])
                row["spec"][str(k)].append(s)
                row["same_ids"][str(k)].append(ids == ref)
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
