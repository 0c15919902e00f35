"""What `aios top` and its serving view share: a Textual app over a session (anything with
`view()`, `start()`, `pause()` and `stop()`) that reads the latest view on a timer and never
waits on the engine, which runs in the session's worker thread.

`LiveApp` holds the scaffolding: the refresh and system-sampling timers, the UI rate, the
banner, pause, help, the export written in a worker thread, quitting and `--stats`. A
subclass lays out its panels and says what differs: its live states, its status line, what
it exports and what its stats hold."""

from __future__ import annotations

import collections
import json
import statistics
import sys
import time
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.widgets import Footer

from engines.files import write_output

from . import panels
from .engines import engine_gpu
from .widgets import Banner, KeysHelp, StatusBar

REFRESH_S = 0.2  # view refresh period: 5 Hz (the target is >= 4 Hz while the engine runs)
SYSTEM_S = 1.0  # psutil / NVML sampling period
SWITCH_INTERVAL_S = 0.001
BUSY_STATES = ("loading", "warming")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

LIVE_CSS = """
    Screen { layout: vertical; }
    #main { height: 1fr; }
    #left { width: 3fr; min-width: 30; }
    #right { width: 2fr; min-width: 26; }
"""


class LiveApp(App):
    LIVE_STATES: tuple[str, ...] = ()  # the engine at work: the UI rate is logged, --exit-after counts
    DATA_PANELS = ""  # the panels redrawn when a view brings new data (a query selector)
    HELP: type[KeysHelp] = KeysHelp
    PAUSED_NOTICE = "paused"
    EXPORT_PREFIX = "aios-top"  # the default export file: <prefix>-<date>-<time>.csv
    error_source = "engine"  # whose error the banner shows

    def __init__(self, session, *, export_path: Path | None = None, exit_after: float | None = None,
                 stats_path: Path | None = None, sampler=None, clock=time.monotonic):
        super().__init__()
        self.session = session
        self.export_path = export_path
        self.exit_after = exit_after
        self.stats_path = stats_path
        self.sampler = sampler or SystemSampler(session)
        self.clock = clock
        self.metric = "time"
        self.view = session.view()
        self.cpus, self.gpu = self.sampler.sample()
        self._frames: collections.deque[float] = collections.deque(maxlen=64)  # screen updates
        self._data_frames: collections.deque[float] = collections.deque(maxlen=64)  # data-panel redraws
        self._hz_log: list[float] = []
        self._data_hz_log: list[float] = []
        self._live_since: float | None = None
        self.last_export: Path | None = None
        self.last_export_rows = 0
        self.exporting = False

    # --- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Banner(id="banner")
        yield from self.compose_panels()
        yield Footer(compact=True)

    def compose_panels(self) -> ComposeResult:
        raise NotImplementedError

    def status_line(self, width: int):
        raise NotImplementedError

    def draw_system(self, v, width, height):
        return panels.system_panel(self.cpus, self.gpu, width, height, getattr(v, "no_gpu_reason", None), v.backend)

    def on_mount(self) -> None:
        # The engine thread needs the GIL between its kernels; while the UI draws, it waits
        # for the switch interval (default 5 ms) each time. 1 ms keeps those waits short.
        self._old_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._drawn = None
        self.status_bar = self.query_one("#status")
        self.banner = self.query_one(Banner)
        self._data_widgets = list(self.query(self.DATA_PANELS))
        self.session.start()
        self.set_interval(REFRESH_S, self.tick)
        self.set_interval(SYSTEM_S, self.sample_system)
        self.tick()

    def on_unmount(self) -> None:
        sys.setswitchinterval(getattr(self, "_old_switch_interval", 0.005))

    # --- the refresh loop: read the view, repaint; never waits on the engine ----------------------
    def tick(self) -> None:
        v = self.view = self.session.view()
        self.show_banner(v)
        # Redraw only what has new data: drawing is the UI's whole cost, and on a 2-core
        # machine every millisecond of it is taken from the engine.
        if self.fresh_data(v):
            self._data_frames.append(self.clock())
            for w in self._data_widgets:
                w.refresh()
        self.status_bar.refresh()
        if v.state in self.LIVE_STATES:
            if self._live_since is None:
                self._live_since = self.clock()
            if self.ui_hz is not None:
                self._hz_log.append(self.ui_hz)
            data_hz = self.rate(self._data_frames)
            if data_hz is not None:
                self._data_hz_log.append(data_hz)
            if self.exit_after is not None and self.clock() - self._live_since >= self.exit_after:
                self.finish()

    def fresh_data(self, v) -> bool:
        """Whether `v` holds data the panels have not drawn yet: by default, a view published anew."""
        fresh = v is not self._drawn
        self._drawn = v
        return fresh

    def show_banner(self, v) -> None:
        self.banner.set_classes("error" if v.state == "error" else "busy" if v.state in BUSY_STATES else "")
        if v.state in BUSY_STATES:
            self.banner.update(f"{SPINNER[int(self.clock() * 8) % 10]} {v.message}{self.progress_note(v)}")
        elif v.state == "error":
            self.banner.update(f"{self.error_source} error: {v.message}")

    def progress_note(self, v) -> str:
        """What follows the loading message in the banner (a percentage, where known)."""
        return ""

    def frame_drawn(self) -> None:
        self._frames.append(self.clock())

    @property
    def ui_hz(self) -> float | None:
        """Screen updates per second over the last ~3 s (the status bar is drawn every tick)."""
        return self.rate(self._frames)

    def rate(self, f) -> float | None:
        """Events per second over the last ~3 s of timestamps `f`."""
        if len(f) < 3:
            return None
        now = self.clock()
        recent = [t for t in f if now - t <= 3.0]
        if len(recent) < 3 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def sample_system(self) -> None:
        self.cpus, self.gpu = self.sampler.sample()
        self.query_one("#system").refresh()

    # --- actions -------------------------------------------------------------------------------------
    def action_pause(self) -> None:
        paused = self.session.pause()
        self.notify(self.PAUSED_NOTICE if paused else "resumed", timeout=2)
        self.tick()

    def action_help(self) -> None:
        self.push_screen(self.HELP())

    def action_export(self) -> None:
        if not self.can_export():
            return
        if self.exporting:
            self.notify("an export is already being written", severity="warning")
            return
        self.exporting = True
        self._export(self.export_path or Path(f"{self.EXPORT_PREFIX}-{time.strftime('%Y%m%d-%H%M%S')}.csv"))

    def can_export(self) -> bool:
        """Whether there is something to export; if not, say why in a notice."""
        return True

    def write_export(self, path: Path) -> tuple[int, str]:
        """Write the export to `path` (from the export thread); (rows, what they are, for the notice)."""
        raise NotImplementedError

    @work(thread=True, exclusive=True, group="export")
    def _export(self, path: Path) -> None:
        try:
            rows, what = self.write_export(path)
            self.last_export, self.last_export_rows = path, rows
            self.call_from_thread(self.notify, f"wrote {path}: {what}", timeout=6, markup=False)
        except Exception as e:  # a full disk or a bad path: say so, keep running
            self.call_from_thread(self.notify, f"export failed: {e}", severity="error", timeout=8, markup=False)
        finally:
            self.exporting = False

    async def action_quit(self) -> None:
        self.finish()

    def finish(self) -> None:
        self.session.stop(timeout=0.5)
        if self.stats_path is not None:
            write_output(self.stats_path, json.dumps(self.stats(), indent=2) + "\n")
        self.exit()

    def stats(self) -> dict:
        """For benchmarks/bench_top*.py (--stats): the engine's rate under the view, and the UI's."""
        raise NotImplementedError

    def ui_stats(self) -> dict:
        hz = self._hz_log
        return {"ui_hz_median": statistics.median(hz) if hz else None, "ui_hz_min": min(hz) if hz else None}


class SystemSampler:
    """CPU % per core (psutil) and GPU utilisation/power/temperature (NVML), for the system panel."""

    def __init__(self, session):
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(percpu=True)  # prime: the next call measures from here
        self.session = session

    def sample(self):
        return self._psutil.cpu_percent(percpu=True), engine_gpu(getattr(self.session, "engine", None))
