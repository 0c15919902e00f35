"""`aios top --serve`: the serving view, a Textual app over a `ServeSession` (or anything with
its `view()`, `start()`, `pause()` and `stop()`). It only reads the latest published view on a
timer; the engine steps in the session's worker thread, so the UI never waits on it."""

from __future__ import annotations

import collections
import json
import statistics
import sys
import time
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Footer

from engines.files import write_output

from . import panels, serve_panels
from .app import SWITCH_INTERVAL_S, SYSTEM_S, Banner, HelpScreen, Panel, SystemSampler

REFRESH_S = 0.2

KEYS = (
    ("space", "pause / resume the engine (between steps; arrivals go on)"),
    ("m", "layer bars: seconds ↔ % of step time"),
    ("e", "export the finished rounds' requests to CSV (aios bench throughput --requests-csv's columns)"),
    ("?", "this help"),
    ("q / ctrl+c", "quit"),
)


class ServeStatusBar(Widget):
    DEFAULT_CSS = "ServeStatusBar { height: 1; background: $panel; }"

    def render(self):
        self.app.frame_drawn()
        return serve_panels.status_line(self.app.view, self.app.ui_hz, width=self.size.width)


class ServeHelp(HelpScreen):
    def lines(self) -> list[str]:
        lines = ["[b]aios top --serve[/b] — the batched engine, live\n"]
        lines += [f"[b]{k:>10}[/b]  {what}" for k, what in KEYS]
        lines += [
            "",
            "[b]batch[/b]  running requests (prefill progress, or tokens out of their limit), then the queue",
            "[b]KV blocks[/b]  the pool, one cell a block, coloured by the request holding it; ▓ shared prefix,",
            "          · free, ░ free with its prefix still cached",
            "[b]throughput[/b]  output tok/s per time bin and the batch size under it",
            "[b]latency[/b]  TTFT and TPOT of finished requests: percentiles and histograms",
            "[b]layers[/b]  per-layer op time of the batched step (latest, and the mean of the last steps)",
            "",
            "[dim]escape closes this help.[/dim]",
        ]
        return lines


class ServeApp(App):
    TITLE = "aios top --serve"
    CSS = """
    Screen { layout: vertical; }
    #main { height: 1fr; }
    #left { width: 3fr; min-width: 30; }
    #right { width: 2fr; min-width: 26; }
    #batch { height: 2fr; min-height: 5; }
    #kv { height: 1fr; min-height: 5; }
    #layers { height: 2fr; min-height: 6; }
    #throughput { height: 1fr; min-height: 6; }
    #latency { height: 1fr; min-height: 8; }
    #system { height: 6; }
    """
    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("m", "metric", "Metric"),
        Binding("e", "export", "Export"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, session, exit_after: float | None = None, stats_path: Path | None = None, sampler=None,
                 clock=time.monotonic, export_path: Path | None = None):
        super().__init__()
        self.session = session
        self.export_path = export_path
        self.last_export: Path | None = None
        self.last_export_rows = 0
        self.exporting = False
        self.exit_after = exit_after
        self.stats_path = stats_path
        self.sampler = sampler or SystemSampler(session)
        self.clock = clock
        self.metric = "time"
        self.view = session.view()
        self.cpus, self.gpu = self.sampler.sample()
        self._frames: collections.deque[float] = collections.deque(maxlen=64)
        self._hz_log: list[float] = []
        self._serving_since: float | None = None

    def compose(self) -> ComposeResult:
        yield ServeStatusBar(id="status")
        yield Banner(id="banner")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Panel("batch · queue", serve_panels.batch_panel, id="batch")
                yield Panel("KV blocks", serve_panels.kv_map_panel, id="kv")
                yield Panel("layers · batched step", self._draw_layers, id="layers")
            with Vertical(id="right"):
                yield Panel("throughput", serve_panels.throughput_panel, id="throughput")
                yield Panel("latency", serve_panels.latency_panel, id="latency")
                yield Panel("system", self._draw_system, id="system")
        yield Footer(compact=True)

    def _draw_layers(self, v, width, height):
        return serve_panels.step_layers_panel(v, self.metric, width, height)

    def _draw_system(self, v, width, height):
        return panels.system_panel(self.cpus, self.gpu, width, height, None, v.backend)

    def on_mount(self) -> None:
        self._old_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)  # as `aios top`: short GIL waits for the engine thread
        self._drawn = None
        self._data = list(self.query("#batch, #kv, #layers, #throughput, #latency"))
        self.session.start()
        self.set_interval(REFRESH_S, self.tick)
        self.set_interval(SYSTEM_S, self.sample_system)
        self.tick()

    def on_unmount(self) -> None:
        sys.setswitchinterval(getattr(self, "_old_switch_interval", 0.005))

    def tick(self) -> None:
        v = self.view = self.session.view()
        banner = self.query_one(Banner)
        banner.set_classes("error" if v.state == "error" else "busy" if v.state in ("loading", "warming") else "")
        if v.state in ("loading", "warming"):
            banner.update(f"{'⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏'[int(self.clock() * 8) % 10]} {v.message}")
        elif v.state == "error":
            banner.update(f"{'server' if not getattr(self.session, 'can_pause', True) else 'engine'} error: {v.message}")
        if v is not self._drawn:  # a new view was published: redraw the data panels
            self._drawn = v
            for w in self._data:
                w.refresh()
        self.query_one(ServeStatusBar).refresh()
        if v.state in ("serving", "idle"):
            if self._serving_since is None:
                self._serving_since = self.clock()
            if self.ui_hz is not None:
                self._hz_log.append(self.ui_hz)
            if self.exit_after is not None and self.clock() - self._serving_since >= self.exit_after:
                self.finish()

    def frame_drawn(self) -> None:
        self._frames.append(self.clock())

    @property
    def ui_hz(self) -> float | None:
        now = self.clock()
        recent = [t for t in self._frames if now - t <= 3.0]
        if len(recent) < 3 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def sample_system(self) -> None:
        self.cpus, self.gpu = self.sampler.sample()
        self.query_one("#system").refresh()

    def action_pause(self) -> None:
        if not getattr(self.session, "can_pause", True):
            self.notify("watching a server: its engine is not paused from here", severity="warning", timeout=3)
            return
        paused = self.session.pause()
        self.notify("paused: the engine waits between steps" if paused else "resumed", timeout=2)

    def action_metric(self) -> None:
        self.metric = "share" if self.metric == "time" else "time"
        self.query_one("#layers").refresh()

    def action_help(self) -> None:
        self.push_screen(ServeHelp())

    def action_export(self) -> None:
        if not hasattr(self.session, "requests_csv"):
            self.notify("watching a server: it writes its own requests at exit (aios serve --requests-csv)",
                        severity="warning", timeout=5)
            return
        if not self.session.rounds:
            self.notify("no round has finished yet: the export holds finished rounds' requests",
                        severity="warning", timeout=4)
            return
        if self.exporting:
            self.notify("an export is already being written", severity="warning")
            return
        self.exporting = True
        self._export(self.export_path or Path(f"aios-top-serve-{time.strftime('%Y%m%d-%H%M%S')}.csv"))

    @work(thread=True, exclusive=True, group="export")
    def _export(self, path: Path) -> None:
        try:
            text, rows = self.session.requests_csv()
            write_output(path, text)
            self.last_export, self.last_export_rows = path, rows
            self.call_from_thread(self.notify, f"wrote {path}: {rows:,} requests", timeout=6, markup=False)
        except Exception as e:  # a full disk or a bad path: say so, keep serving
            self.call_from_thread(self.notify, f"export failed: {e}", severity="error", timeout=8, markup=False)
        finally:
            self.exporting = False

    async def action_quit(self) -> None:
        self.finish()

    def finish(self) -> None:
        self.session.stop(timeout=0.5)
        if self.stats_path is not None:
            self.write_stats(self.stats_path)
        self.exit()

    def write_stats(self, path: Path) -> None:
        """For benchmarks/bench_top.py: serving rate under the view, and the UI refresh rate."""
        s = self.session.stats()
        hz = self._hz_log
        s.update({"model": self.view.model, "backend": self.view.backend,
                  "ui_hz_median": statistics.median(hz) if hz else None, "ui_hz_min": min(hz) if hz else None})
        write_output(path, json.dumps(s, indent=2) + "\n")
