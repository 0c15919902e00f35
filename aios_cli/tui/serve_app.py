"""`aios top --serve`: the serving view, a Textual app over a `ServeSession` (or anything with
its `view()`, `start()`, `pause()` and `stop()`). It only reads the latest published view on a
timer; the engine steps in the session's worker thread, so the UI never waits on it."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical

from engines.files import write_output

from . import serve_panels
from .live_app import LIVE_CSS, LiveApp
from .widgets import KeysHelp, Panel

KEYS = (
    ("space", "pause / resume the engine (between steps; arrivals go on)"),
    ("m", "layer bars: seconds ↔ % of step time"),
    ("e", "export the finished rounds' requests to CSV (aios bench throughput --requests-csv's columns)"),
    ("?", "this help"),
    ("q / ctrl+c", "quit"),
)


class ServeHelp(KeysHelp):
    HEADING = "[b]aios top --serve[/b] — the batched engine, live\n"
    KEYS = KEYS
    NOTES = """
[b]batch[/b]  running requests (prefill progress, or tokens out of their limit), then the queue
[b]KV blocks[/b]  the pool, one cell a block, coloured by the request holding it; ▓ shared prefix,
          · free, ░ free with its prefix still cached
[b]throughput[/b]  output tok/s per time bin and the batch size under it
[b]latency[/b]  TTFT and TPOT of finished requests: percentiles and histograms
[b]layers[/b]  per-layer op time of the batched step (latest, and the mean of the last steps)

[dim]escape closes this help.[/dim]"""


class ServeApp(LiveApp):
    TITLE = "aios top --serve"
    CSS = LIVE_CSS + """
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
    LIVE_STATES = ("serving", "idle")
    DATA_PANELS = "#batch, #kv, #layers, #throughput, #latency"
    HELP = ServeHelp
    PAUSED_NOTICE = "paused: the engine waits between steps"
    EXPORT_PREFIX = "aios-top-serve"

    @property
    def watching(self) -> bool:
        """A server's view (`aios top --url`): its engine is not ours to pause, nor its requests to export."""
        return not getattr(self.session, "can_pause", True)

    @property
    def error_source(self) -> str:
        return "server" if self.watching else "engine"

    def compose_panels(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Panel("batch · queue", serve_panels.batch_panel, id="batch")
                yield Panel("KV blocks", serve_panels.kv_map_panel, id="kv")
                yield Panel("layers · batched step", self._draw_layers, id="layers")
            with Vertical(id="right"):
                yield Panel("throughput", serve_panels.throughput_panel, id="throughput")
                yield Panel("latency", serve_panels.latency_panel, id="latency")
                yield Panel("system", self.draw_system, id="system")

    def _draw_layers(self, v, width, height):
        return serve_panels.step_layers_panel(v, self.metric, width, height)

    def status_line(self, width: int) -> Text:
        return serve_panels.status_line(self.view, self.ui_hz, width=width)

    def action_pause(self) -> None:
        if self.watching:
            self.notify("watching a server: its engine is not paused from here", severity="warning", timeout=3)
            return
        super().action_pause()  # the view says "paused" once the worker really waits, between two steps

    def action_metric(self) -> None:
        self.metric = "share" if self.metric == "time" else "time"
        self.query_one("#layers").refresh()

    def can_export(self) -> bool:
        if not hasattr(self.session, "requests_csv"):
            self.notify("watching a server: it writes its own requests at exit (aios serve --requests-csv)",
                        severity="warning", timeout=5)
            return False
        if not self.session.rounds:
            self.notify("no round has finished yet: the export holds finished rounds' requests",
                        severity="warning", timeout=4)
            return False
        return True

    def write_export(self, path: Path) -> tuple[int, str]:
        text, rows = self.session.requests_csv()
        write_output(path, text)
        return rows, f"{rows:,} requests"

    def stats(self) -> dict:
        """The session's serving rate under the view, and the UI refresh rate."""
        s = self.session.stats()
        s.update({"model": self.view.model, "backend": self.view.backend, **self.ui_stats()})
        return s
