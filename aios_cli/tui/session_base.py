"""What the sessions behind the live views share: a worker thread, and the commands the UI
thread sends it (start, pause, stop), which set a flag under the lock, wake the worker and
return at once. The UI thread reads `view()`: here the latest view the worker published whole
(never changed after), which a subclass may instead build from its state under the lock.

`TopSession` (one generation after another), `ServeSession` (rounds of a batched workload)
and `RemoteSession` (a server's `/aios/state`, polled) each add their worker's `_loop`.
Nothing here imports Textual: `--once` and the tests use the sessions directly.
"""

from __future__ import annotations

import threading


class LiveSession:
    THREAD_NAME = "aios-top"

    def __init__(self, view=None):
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._paused = False
        self._quit = False
        self._thread: threading.Thread | None = None
        self._view = view

    # --- commands from the UI thread: set a flag, wake the worker, return ------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.THREAD_NAME, daemon=True)
        self._thread.start()

    def pause(self, paused: bool | None = None) -> bool:
        """Toggle (or set) the pause; the worker waits between two steps, so paused time is
        never measured."""
        with self._lock:
            self._paused = self._pause_wanted(paused)
            self._pause_changed()
            self._wake.notify_all()
            return self._paused

    def _pause_wanted(self, paused: bool | None) -> bool:
        return (not self._paused) if paused is None else paused

    def _pause_changed(self) -> None:
        """Under the lock, after the pause flag changed."""

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the worker to finish; True if it did within `timeout`."""
        with self._lock:
            self._quit = True
            self._paused = False
            self._stopping()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _stopping(self) -> None:
        """Under the lock, as the stop is asked for."""

    # --- reads from the UI thread ---------------------------------------------------------
    def view(self):
        return self._view  # published whole by the worker; never changed after

    # --- the worker -----------------------------------------------------------------------
    def _loop(self) -> None:
        raise NotImplementedError

    def _show_state(self, state: str, message: str | None = None) -> None:
        """Publish a copy of the current view with a new state and message."""
        v = type(self._view)(**vars(self._view))
        v.state, v.message = state, message
        self._view = v

    def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds`, or until a command wakes the worker."""
        with self._lock:
            if not self._quit:
                self._wake.wait(seconds)
