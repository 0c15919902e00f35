"""`aios top`: the Textual app. It only reads `TopSession.view()` on a timer and sends the
session commands; the engine runs in the session's worker thread, so the UI never waits."""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

from rich.segment import Segment
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Static, TabbedContent, TabPane

from engines.errors import UserError
from engines.files import write_output
from profilers.export import events_csv_chunks

from . import panels
from .engines import engine_gpu
from .view import TopView

REFRESH_S = 0.2  # view refresh period: 5 Hz (the target is >= 4 Hz while generating)
SYSTEM_S = 1.0  # psutil / NVML sampling period
SWITCH_INTERVAL_S = 0.001

KEYS = (
    ("space", "pause / resume the engine (between tokens; paused time is never measured)"),
    ("b", "switch backend: reload the model on the next engine that can run it"),
    ("m", "main plot metric: seconds → % of token time → achieved GB/s"),
    ("l", "layer view: decode (latest token, moving average) ↔ prefill"),
    ("p", "edit the prompt (used from the next generation on)"),
    ("e", "export the session to CSV (same columns as `aios run --csv`)"),
    ("?", "this help"),
    ("q / ctrl+c", "quit"),
)


class StripPanel(Widget):
    """A panel drawn through Textual's line API: the Rich text of one of `panels`' functions is
    turned into one Strip per line, built once per refresh and cropped to the panel's width
    (no wrapping, nothing drawn past the edge). Drawing is the UI's whole cost: on a 2-core
    machine every millisecond of it is taken from the engine, so panels are only refreshed
    when their data changed (see `TopApp.tick`)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._strips: list[Strip] | None = None
        self._strips_width = -1

    def draw(self, width: int, height: int) -> Text:
        raise NotImplementedError

    def refresh(self, *regions, **kw):
        self._strips = None
        return super().refresh(*regions, **kw)

    def render_line(self, y: int) -> Strip:
        strips = self._strips
        if strips is None or self._strips_width != self.size.width:
            strips = self._build()
        return strips[y] if y < len(strips) else self._blank

    def _build(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        base = self.rich_style
        console = self.app.console
        text = self.draw(width, height)  # adjust_cell_length crops each line to the width
        self._strips = [Strip(Segment.apply_style(line.render(console), base), line.cell_len).adjust_cell_length(width, base)
                        for line in text.split("\n", allow_blank=True)[:height]]
        self._strips_width = width
        self._blank = Strip.blank(width, base)
        return self._strips


class Panel(StripPanel):
    """A titled panel whose body is one of `panels`' functions, drawn at its current size."""

    DEFAULT_CSS = """
    Panel { border-top: solid $primary-darken-1; height: 1fr; padding: 0 0; }
    """

    def __init__(self, title: str, draw, **kw):
        super().__init__(**kw)
        self.border_title = title
        self._draw = draw

    def draw(self, width: int, height: int) -> Text:
        return self._draw(self.app.view, width, height)


class LayerPanel(StripPanel):
    DEFAULT_CSS = "LayerPanel { height: 1fr; }"

    def __init__(self, phase: str, **kw):
        super().__init__(**kw)
        self.phase = phase

    def draw(self, width: int, height: int) -> Text:
        return panels.layer_panel(self.app.view, self.phase, self.app.metric, width, height)


class StatusBar(Widget):
    DEFAULT_CSS = "StatusBar { height: 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }"

    def render(self):
        self.app.frame_drawn()
        return panels.status_line(self.app.view, self.app.ui_hz, width=self.size.width)


class Banner(Static):
    """One line for what is loading, or the last engine error. Hidden otherwise."""

    DEFAULT_CSS = """
    Banner { height: auto; max-height: 3; display: none; padding: 0 1; }
    Banner.error { display: block; background: $error 30%; color: $text; }
    Banner.busy { display: block; background: $primary 30%; }
    """


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: 78; max-width: 100%; height: auto; max-height: 100%; border: round $primary; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static("\n".join(self.lines()))

    def lines(self) -> list[str]:
        lines = ["[b]aios top[/b] — the forward pass, live\n"]
        lines += [f"[b]{k:>10}[/b]  {what}" for k, what in KEYS]
        lines += [
            "",
            "[b]layers[/b]  one stacked bar per layer, split by op kind; [b]reduction[/b] ops are the barriers",
            "[b]tokens/s[/b]  1 / wall time of each decode token; prefill rate and TTFT per generation",
            "[b]barriers[/b]  reduction barriers per token, their share of token time, the session total",
            "[b]memory[/b]  host RSS (psutil), GPU used/total (NVML), torch allocator, KV cache",
            "",
            "[dim]escape closes this help. Tabs and footer keys also take mouse clicks.[/dim]",
        ]
        return lines


class PromptScreen(ModalScreen):
    BINDINGS = [Binding("escape", "dismiss", "Cancel")]
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    #box { width: 76; max-width: 100%; height: auto; border: round $primary; background: $surface; padding: 0 1; }
    #why { color: $error; height: auto; }
    """

    def __init__(self, current: str):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="box"):
            yield Label("Prompt for the next generations (enter: use it, escape: cancel)")
            # the cursor at the end, nothing selected: typing edits the prompt, not replaces it
            yield Input(self.current, id="prompt", select_on_focus=False)
            yield Label("", id="why")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.app.session.set_prompt(event.value)
        except UserError as e:
            self.query_one("#why", Label).update(str(e))
            return
        self.dismiss()


class TopApp(App):
    TITLE = "aios top"
    CSS = """
    Screen { layout: vertical; }
    #main { height: 1fr; }
    #left { width: 3fr; min-width: 30; }
    #right { width: 2fr; min-width: 26; }
    #layers { height: 1fr; }
    #layers > ContentSwitcher { height: 1fr; }
    TabPane { padding: 0 0; height: 1fr; }
    #tokens { height: 1fr; min-height: 4; }
    #barriers { height: 3; }
    #memory { height: 1fr; min-height: 5; }
    #system { height: 1fr; min-height: 4; }
    #text { height: 5; }
    """
    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("b", "backend", "Backend"),
        Binding("m", "metric", "Metric"),
        Binding("l", "layer_tab", "Layers", show=False),
        Binding("p", "prompt", "Prompt"),
        Binding("e", "export", "Export"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, session, export_path: Path | None = None, exit_after: float | None = None,
                 stats_path: Path | None = None, sampler=None, clock=time.monotonic):
        super().__init__()
        self.session = session
        self.export_path = export_path
        self.exit_after = exit_after
        self.stats_path = stats_path
        self.sampler = sampler or SystemSampler(session)
        self.clock = clock
        self.metric = "time"
        self.view: TopView = session.view()
        self.cpus, self.gpu = self.sampler.sample()
        self._frames: collections.deque[float] = collections.deque(maxlen=64)  # screen updates
        self._data_frames: collections.deque[float] = collections.deque(maxlen=64)  # data-panel redraws
        self._hz_log: list[float] = []
        self._data_hz_log: list[float] = []
        self._gen_started: float | None = None
        self.last_export: Path | None = None
        self.last_export_rows = 0
        self.exporting = False

    # --- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Banner(id="banner")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with TabbedContent(id="layers", initial="decode"):
                    with TabPane("decode", id="decode"):
                        yield LayerPanel("decode", id="layers-decode")
                    with TabPane("prefill", id="prefill"):
                        yield LayerPanel("prefill", id="layers-prefill")
            with Vertical(id="right"):
                yield Panel("tokens/s", panels.tokens_panel, id="tokens")
                yield Panel("reduction barriers", panels.barriers_panel, id="barriers")
                yield Panel("memory", panels.memory_panel, id="memory")
                yield Panel("system", self._draw_system, id="system")
        yield Panel("text", panels.text_panel, id="text")
        yield Footer(compact=True)

    def on_unmount(self) -> None:
        sys.setswitchinterval(getattr(self, "_old_switch_interval", 0.005))

    def _draw_system(self, v, width, height):
        return panels.system_panel(self.cpus, self.gpu, width, height, v.no_gpu_reason, v.backend)

    def on_mount(self) -> None:
        # The engine thread needs the GIL between its kernels; while the UI draws, it waits
        # for the switch interval (default 5 ms) each time. 1 ms keeps those waits short.
        self._old_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._drawn_key = None
        self.status_bar = self.query_one(StatusBar)
        self._data_widgets = list(self.query("LayerPanel, #tokens, #barriers, #memory, #text"))
        self.session.start()
        self.set_interval(REFRESH_S, self.tick)
        self.set_interval(SYSTEM_S, self.sample_system)
        self.tick()

    # --- the refresh loop: read the view, repaint; never waits on the engine ----------------------
    def tick(self) -> None:
        self.view = self.session.view()
        v = self.view
        banner = self.query_one(Banner)
        banner.set_classes("error" if v.state == "error" else "busy" if v.state in ("loading", "warming") else "")
        if v.state in ("loading", "warming"):
            pct = f" {100 * v.load_progress[0] / max(1, v.load_progress[1]):.0f}%" if v.load_progress else ""
            spin = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"[int(self.clock() * 8) % 10]
            banner.update(f"{spin} {v.message}{pct}")
        elif v.state == "error":
            banner.update(f"engine error: {v.message}")
        # Redraw only what has new data: drawing is the UI's whole cost, and on a 2-core
        # machine every millisecond of it is taken from the engine.
        key = (v.state, v.total_tokens, v.generation, v.backend, len(v.memory), v.message, self.metric)
        if key != self._drawn_key:
            self._drawn_key = key
            self._data_frames.append(self.clock())
            for w in self._data_widgets:
                w.refresh()
        self.status_bar.refresh()
        if v.state == "generating":
            if self._gen_started is None:
                self._gen_started = self.clock()
            if self.ui_hz is not None:
                self._hz_log.append(self.ui_hz)
            data_hz = self.rate(self._data_frames)
            if data_hz is not None:
                self._data_hz_log.append(data_hz)
            if self.exit_after is not None and self.clock() - self._gen_started >= self.exit_after:
                self.finish()

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
        self.notify("paused: the engine waits between tokens" if paused else "resumed", timeout=2)
        self.tick()

    def action_backend(self) -> None:
        if len(self.session.backends) < 2 and self.session.backend in self.session.backends:
            self.notify(f"{self.session.backend} is the only engine that can run this model here",
                        severity="warning", timeout=4)
            return
        b = self.session.switch_backend()
        self.notify(f"switching to {b}: reloading in the background", timeout=3)
        self.tick()

    def action_metric(self) -> None:
        self.metric = panels.METRICS[(panels.METRICS.index(self.metric) + 1) % len(panels.METRICS)]
        self.tick()

    def action_layer_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "prefill" if tabs.active == "decode" else "decode"

    def action_prompt(self) -> None:
        self.push_screen(PromptScreen(self.view.prompt))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_export(self) -> None:
        if self.view.profile != "op":
            self.notify(f"export writes one row per op event, which --profile {self.view.profile} does not record"
                        " — restart with --profile op", severity="error", timeout=6)
            return
        if self.exporting:
            self.notify("an export is already being written", severity="warning")
            return
        self.exporting = True
        path = self.export_path or Path(f"aios-top-{time.strftime('%Y%m%d-%H%M%S')}.csv")
        self._export(path)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, path: Path) -> None:
        try:
            records = self.session.records()
            lines = 0

            def counted():
                nonlocal lines
                for chunk in events_csv_chunks(records):
                    lines += chunk.count("\n")
                    yield chunk

            write_output(path, counted())  # streamed: a long session is never held whole
            rows = lines - 1
            self.last_export, self.last_export_rows = path, rows
            self.call_from_thread(self.notify, f"wrote {path}: {rows:,} op events from {len(records)} generations",
                                  timeout=6, markup=False)
        except Exception as e:  # a full disk or a bad path: say so, keep running
            self.call_from_thread(self.notify, f"export failed: {e}", severity="error", timeout=8, markup=False)
        finally:
            self.exporting = False

    async def action_quit(self) -> None:
        self.finish()

    def finish(self) -> None:
        if self.stats_path is not None:
            self.write_stats(self.stats_path)
        self.session.stop(timeout=0.5)
        self.exit()

    def write_stats(self, path: Path) -> None:
        """For benchmarks/bench_top.py: engine rate under the TUI and the UI refresh rate."""
        import statistics

        walls = [s.wall_s for r in self.session.records() for s in r.steps if s.phase == "decode"]
        hz = self._hz_log
        write_output(path, json.dumps({
            "backend": self.view.backend, "model": self.view.model, "profile": self.view.profile,
            "decode_tokens": len(walls),
            "decode_tokens_per_s": len(walls) / sum(walls) if walls else None,
            "decode_ms_median": statistics.median(walls) * 1e3 if walls else None,
            "ui_hz_median": statistics.median(hz) if hz else None,
            "ui_hz_min": min(hz) if hz else None,
            "data_redraw_hz_median": statistics.median(self._data_hz_log) if self._data_hz_log else None,
            "generations": self.view.generation,
        }, indent=2) + "\n")


class SystemSampler:
    """CPU % per core (psutil) and GPU utilisation/power/temperature (NVML), for the system panel."""

    def __init__(self, session):
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(percpu=True)  # prime: the next call measures from here
        self.session = session

    def sample(self):
        return self._psutil.cpu_percent(percpu=True), engine_gpu(getattr(self.session, "engine", None))
