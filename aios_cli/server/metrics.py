"""`/metrics` of `aios serve`, in Prometheus' text format through `prometheus-client`.

The names follow vLLM's (`vllm:num_requests_running` is `aios_num_requests_running` here), so
a dashboard built for one reads the other with a prefix changed. Every series lives in the
server's own registry (two servers in one process, as the tests run them, do not collide).
Updated from the engine thread after each step; prometheus-client is thread-safe.
"""

from __future__ import annotations

import time

# TTFT and TPOT buckets: vLLM's, which span a GPU's milliseconds and a CPU's seconds
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0)


class ServeMetrics:
    def __init__(self, model: str, num_blocks: int, spec_k: int = 0):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        lab = ["model_name"]
        self.running = Gauge("aios_num_requests_running", "Requests in the running batch.", lab, registry=r)
        self.waiting = Gauge("aios_num_requests_waiting", "Requests queued for the batch.", lab, registry=r)
        self.blocks_used = Gauge("aios_kv_cache_blocks_used", "KV-cache blocks held by requests.", lab, registry=r)
        self.blocks_total = Gauge("aios_kv_cache_blocks_total", "KV-cache blocks in the pool.", lab, registry=r)
        self.usage = Gauge("aios_kv_cache_usage_perc", "Fraction of the KV-cache pool in use (0..1).", lab, registry=r)
        self.prefix_queries = Counter("aios_prefix_cache_queries", "Full prompt blocks looked up in the prefix cache.",
                                      lab, registry=r)
        self.prefix_hits = Counter("aios_prefix_cache_hits", "Prompt blocks found in the prefix cache.", lab, registry=r)
        self.preemptions = Counter("aios_num_preemptions", "Requests preempted (their KV recomputed later).", lab,
                                   registry=r)
        self.prompt_tokens = Counter("aios_prompt_tokens", "Prompt tokens of admitted requests.", lab, registry=r)
        self.generation_tokens = Counter("aios_generation_tokens", "Tokens generated.", lab, registry=r)
        self.requests = Counter("aios_request_success", "Finished requests by finish reason.",
                                lab + ["finished_reason"], registry=r)
        self.ttft = Histogram("aios_time_to_first_token_seconds", "Arrival to first token.", lab,
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("aios_time_per_output_token_seconds", "Gap between two tokens of a request.", lab,
                              buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("aios_e2e_request_latency_seconds", "Arrival to last token.", lab,
                             buckets=E2E_BUCKETS, registry=r)
        self.steps = Counter("aios_engine_steps", "Engine steps run.", lab, registry=r)
        self.step_seconds = Counter("aios_engine_step_seconds", "Wall time of the engine's steps.", lab, registry=r)
        self.spec_k = spec_k
        if spec_k:  # --speculate: vLLM's spec-decode counters, under the same names
            self.spec_drafts = Counter("aios_spec_decode_num_drafts", "Verify passes of requests that had drafts.",
                                       lab, registry=r)
            self.spec_draft_tokens = Counter("aios_spec_decode_num_draft_tokens", "Tokens drafted.", lab, registry=r)
            self.spec_accepted = Counter("aios_spec_decode_num_accepted_tokens", "Drafted tokens the model accepted.",
                                         lab, registry=r)
            self.spec_per_pos = Counter("aios_spec_decode_num_accepted_tokens_per_pos",
                                        "Accepted drafted tokens by their position in the draft (0: the first).",
                                        lab + ["position"], registry=r)
            self._spec = (0, 0, 0, [0] * spec_k)
        self.model = model
        self.blocks_total.labels(model).set(num_blocks)
        self._hits = self._lookups = self._preempted = 0
        for m in (self.running, self.waiting, self.blocks_used, self.usage):
            m.labels(model).set(0)

    def admitted(self, s) -> None:
        self.prompt_tokens.labels(self.model).inc(len(s.prompt_ids))

    def stepped(self, be, out) -> None:
        m = self.model
        self.running.labels(m).set(out.running)
        self.waiting.labels(m).set(out.waiting)
        self.blocks_used.labels(m).set(out.blocks_used)
        self.usage.labels(m).set(out.blocks_used / max(1, out.blocks_used + out.blocks_free))
        self.steps.labels(m).inc()
        self.step_seconds.labels(m).inc(out.wall_s)
        self.generation_tokens.labels(m).inc(len(out.tokens))
        bm, sc = be.blocks, be.scheduler
        if bm.lookups > self._lookups:
            self.prefix_queries.labels(m).inc(bm.lookups - self._lookups)
            self.prefix_hits.labels(m).inc(bm.hits - self._hits)
            self._hits, self._lookups = bm.hits, bm.lookups
        if sc.preemptions > self._preempted:
            self.preemptions.labels(m).inc(sc.preemptions - self._preempted)
            self._preempted = sc.preemptions
        if self.spec_k:
            drafts, drafted, accepted, per_pos = self._spec
            self.spec_drafts.labels(m).inc(be.spec_drafts - drafts)
            self.spec_draft_tokens.labels(m).inc(be.spec_draft_tokens - drafted)
            self.spec_accepted.labels(m).inc(be.spec_accepted_tokens - accepted)
            for i, (now, before) in enumerate(zip(be.spec_accepted_per_pos, per_pos)):
                if now > before:
                    self.spec_per_pos.labels(m, str(i)).inc(now - before)
            self._spec = (be.spec_drafts, be.spec_draft_tokens, be.spec_accepted_tokens, list(be.spec_accepted_per_pos))
        seen: dict[str, int] = {}  # a request's tokens this step (a speculative step gives several)
        for req, _ in out.tokens:
            seen[req.id] = seen.get(req.id, 0) + 1
        for req, _ in out.tokens:
            ts = req.token_s
            seen[req.id] -= 1
            i = len(ts) - 1 - seen[req.id]  # this token's index in the request's output
            if i == 0:
                self.ttft.labels(m).observe(ts[0] - req.arrival_s)
            elif 0 < i < len(ts):
                self.tpot.labels(m).observe(ts[i] - ts[i - 1])

    def finished(self, s, reason: str) -> None:
        self.requests.labels(self.model, reason).inc()
        req = s.request
        end = req.finished_s if req is not None and req.finished_s is not None else time.perf_counter()
        self.e2e.labels(self.model).observe(end - s.submitted_s)

    def idle(self) -> None:
        m = self.model
        self.running.labels(m).set(0)
        self.waiting.labels(m).set(0)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
