"""A workload sent to an OpenAI-compatible server over HTTP (`aios bench serve`), measured as
`aios bench throughput` measures the engine: the same `WorkItem`s, arrivals and metrics.

Each request is one streamed POST to /v1/completions (`stream: true`, `ignore_eos: true`, as
vLLM's `bench serve` sends them, so outputs have their asked length on servers that honour it;
`stream_options.include_usage` for the server's own token count), sent at its arrival time on
one `httpx.AsyncClient`. Token times are when each server-sent event carrying text (or, with
`return_token_ids`, ids) arrived; TTFT is the first, E2E the `[DONE]`. A request that fails
(a refused connection, an HTTP error, an error event) is counted as failed with its reason,
never dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from .throughput import RequestResult, ThroughputRun, WorkItem


@dataclass
class Failure:
    id: str
    reason: str


def _request_body(model: str, w: WorkItem, prompt) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": w.max_new_tokens, "temperature": 0.0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}


async def _one(client, url: str, model: str, i: int, w: WorkItem, prompt, t0: float, headers: dict,
               results: list, failures: list, on_done=None, disconnect_after: int | None = None) -> None:
    rid = f"req-{i}"
    arrival = time.perf_counter() - t0
    times: list[float] = []
    usage = None
    reason = None
    done = False
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=_request_body(model, w, prompt),
                                 headers=headers) as r:
            if r.status_code != 200:
                body = (await r.aread()).decode("utf-8", "replace")
                try:
                    msg = json.loads(body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    msg = body[:200]
                failures.append(Failure(rid, f"HTTP {r.status_code}: {msg}"))
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if "error" in obj:
                    failures.append(Failure(rid, f"error event: {obj['error'].get('message')}"))
                    return
                if obj.get("usage"):
                    usage = obj["usage"]
                for c in obj.get("choices") or []:
                    if c.get("text") or c.get("token_ids"):
                        times.append(time.perf_counter() - t0)
                    if c.get("finish_reason"):
                        reason = c["finish_reason"]
                if disconnect_after is not None and len(times) >= disconnect_after:
                    failures.append(Failure(rid, "disconnected on purpose"))
                    return
    except Exception as e:  # noqa: BLE001 - any transport failure is this request's result
        failures.append(Failure(rid, f"{type(e).__name__}: {e}"))
        return
    finally:
        if on_done is not None:
            on_done()
    if not done:
        failures.append(Failure(rid, "the stream ended without [DONE]"))
        return
    end = time.perf_counter() - t0
    n_out = usage["completion_tokens"] if usage else len(times)
    results.append(RequestResult(rid, len(prompt) if isinstance(prompt, list) else (usage or {}).get("prompt_tokens", 0),
                                 n_out, arrival, times[0] if times else None, end, times, 0, 0, reason))


async def run_async(url: str, model: str, work: list[WorkItem], prompts: list, api_key: str | None = None,
                    max_connections: int = 1000, timeout_s: float = 600.0, on_done=None, disconnect: dict | None = None):
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    results: list[RequestResult] = []
    failures: list[Failure] = []
    order = sorted(range(len(work)), key=lambda i: work[i].arrival_s)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=30.0), limits=limits) as client:
        t0 = time.perf_counter()
        tasks = []
        for i in order:
            wait = work[i].arrival_s - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(_one(client, url, model, i, work[i], prompts[i], t0, headers, results,
                                                  failures, on_done, (disconnect or {}).get(i))))
        await asyncio.gather(*tasks)
    return results, failures


def run(url: str, model: str, work: list[WorkItem], prompts: list, api_key: str | None = None, on_done=None,
        timeout_s: float = 600.0, disconnect: dict | None = None) -> tuple[ThroughputRun, list[Failure]]:
    """Send `work` (prompts[i]: token ids or text) and measure it; `disconnect` {i: n}: close
    request i's stream after n tokens (a client going away, for tests)."""
    results, failures = asyncio.run(run_async(url, model, work, prompts, api_key, on_done=on_done,
                                              timeout_s=timeout_s, disconnect=disconnect))
    results.sort(key=lambda r: int(r.id.split("-")[1]))
    end = max((r.finished_s for r in results if r.finished_s is not None), default=0.0)
    first = min((r.arrival_s for r in results), default=0.0)
    return ThroughputRun("serve", results, [], end - first), failures
