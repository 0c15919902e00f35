"""`aios top --url`: the serving view of a running `aios serve`, read from its `/aios/state`
(the same `ServeView` the local `--serve` session publishes, as JSON) twice a second by a
worker thread. The server's engine is not ours: pausing is not offered, and when the server
stops answering, the last view stays on screen with the reason in the status line."""

from __future__ import annotations

import time

from profilers.serving import ServeView

from .session_base import LiveSession

POLL_S = 0.5


def fetch(url: str, api_key: str | None = None, timeout: float = 5.0) -> ServeView:
    """One `/aios/state` read; raises `RemoteError` with a one-line reason."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url}/aios/state", headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise RemoteError(f"{url} does not answer ({type(e).__name__})") from None
    if r.status_code == 401:
        raise RemoteError(f"{url} wants an API key: pass --api-key")
    if r.status_code == 404:
        raise RemoteError(f"{url} has no /aios/state: is it aios serve?")
    if r.status_code != 200:
        raise RemoteError(f"{url}/aios/state answered HTTP {r.status_code}")
    try:
        return ServeView.from_json(r.json())
    except (ValueError, TypeError) as e:
        raise RemoteError(f"{url}/aios/state is not a serving view ({type(e).__name__})") from None


class RemoteError(Exception):
    pass


class RemoteSession(LiveSession):
    THREAD_NAME = "aios-top-remote"
    can_pause = False
    engine = None  # no local engine: the system panel shows this machine, no GPU of ours

    def __init__(self, url: str, api_key: str | None = None, poll_s: float = POLL_S):
        self.url = url.rstrip("/")
        super().__init__(ServeView(state="starting", model=self.url, message=f"connecting to {self.url}"))
        self.api_key = api_key
        self.poll_s = poll_s
        self.polls = 0
        self.failures = 0

    def _loop(self) -> None:
        while not self._quit:
            t = time.perf_counter()
            try:
                v = fetch(self.url, self.api_key)
                v.workload = v.workload or self.url
                self._view = v
                self.polls += 1
            except RemoteError as e:
                self.failures += 1
                self._show_state("error", str(e))  # the last view stays, with the reason
            self._sleep(max(0.0, self.poll_s - (time.perf_counter() - t)))

    def pause(self, paused=None) -> bool:
        return False  # the server's engine is not ours

    def stats(self) -> dict:
        v = self._view
        return {"url": self.url, "polls": self.polls, "failures": self.failures, "output_tokens": v.output_tokens,
                "steps": v.steps, "engine_output_tokens_per_s": v.engine_tokens_per_s}
