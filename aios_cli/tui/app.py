"""`aios top`: the Textual app. It only reads `TopSession.view()` on a timer and sends the
session commands; the engine runs in the session's worker thread, so the UI never waits.
`LiveApp` (live_app.py) holds what it shares with the serving view; here: the layout, the
backend, metric, layer-tab and prompt keys, the op-event export and the decode stats."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, TabbedContent, TabPane

from engines.errors import UserError
from engines.files import write_output
from profilers.export import events_csv_chunks
from profilers.probe import GENERATION_PHASES
from profilers.record import token_walls

from . import panels
from .live_app import LIVE_CSS, LiveApp
from .view import TopView
from .widgets import KeysHelp, Panel, StripPanel

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


class LayerPanel(StripPanel):
    DEFAULT_CSS = "LayerPanel { height: 1fr; }"

    def __init__(self, phase: str, **kw):
        super().__init__(**kw)
        self.phase = phase

    def draw(self, width: int, height: int) -> Text:
        return panels.layer_panel(self.app.view, self.phase, self.app.metric, width, height)


class HelpScreen(KeysHelp):
    HEADING = "[b]aios top[/b] — the forward pass, live\n"
    KEYS = KEYS
    NOTES = """
[b]layers[/b]  one stacked bar per layer, split by op kind; [b]reduction[/b] ops are the barriers
[b]tokens/s[/b]  1 / wall time of each decode token; prefill rate and TTFT per generation
[b]barriers[/b]  reduction barriers per token, their share of token time, the session total
[b]memory[/b]  host RSS (psutil), GPU used/total (NVML), torch allocator, KV cache

[dim]escape closes this help. Tabs and footer keys also take mouse clicks.[/dim]"""
    SPEC = ("[b]speculation[/b]  drafts kept, tokens a verify pass, k, rounds by drafts accepted",
            "[b]decode tab[/b]  a model drafter's rounds beside the target's passes")

    def lines(self) -> list[str]:
        lines = super().lines()
        if self.app.view.speculate:  # after the panel notes, before the closing hint
            at = next(i for i, line in enumerate(lines) if line.startswith("[b]memory"))
            lines[at + 1:at + 1] = self.SPEC
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


class LayerTabs:
    """The per-layer bars in two tabs, `decode` and `prefill`, and `l` switching them: what
    `TopApp` and the ranks' view (`RanksApp`) share. A mixin for a `LiveApp`."""

    CSS = """
    #layers { height: 1fr; }
    #layers > ContentSwitcher { height: 1fr; }
    TabPane { padding: 0 0; height: 1fr; }
    """

    def compose_layer_tabs(self) -> ComposeResult:
        with TabbedContent(id="layers", initial="decode"):
            with TabPane("decode", id="decode"):
                yield LayerPanel("decode", id="layers-decode")
            with TabPane("prefill", id="prefill"):
                yield LayerPanel("prefill", id="layers-prefill")

    def action_layer_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "prefill" if tabs.active == "decode" else "decode"


class TopApp(LayerTabs, LiveApp):
    TITLE = "aios top"
    CSS = LIVE_CSS + LayerTabs.CSS + """
    #tokens { height: 1fr; min-height: 4; }
    #barriers { height: 3; }
    #memory { height: 1fr; min-height: 5; }
    #system { height: 1fr; min-height: 4; }
    #text { height: 5; }
    #speculation { height: 7; }
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
    LIVE_STATES = ("generating",)
    DATA_PANELS = "LayerPanel, #tokens, #barriers, #memory, #text, #speculation"
    HELP = HelpScreen
    PAUSED_NOTICE = "paused: the engine waits between tokens"
    EXPORT_PREFIX = "aios-top"

    view: TopView

    # --- layout ------------------------------------------------------------------------------
    def compose_panels(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield from self.compose_layer_tabs()
                if self.view.speculate:
                    yield Panel("speculation", panels.speculation_panel, id="speculation")
            with Vertical(id="right"):
                yield Panel("tokens/s", panels.tokens_panel, id="tokens")
                yield Panel("reduction barriers", panels.barriers_panel, id="barriers")
                yield Panel("memory", panels.memory_panel, id="memory")
                yield Panel("system", self.draw_system, id="system")
        yield Panel("text", panels.text_panel, id="text")

    def status_line(self, width: int) -> Text:
        return panels.status_line(self.view, self.ui_hz, width=width)

    def fresh_data(self, v: TopView) -> bool:
        """A new token, generation, backend, memory sample, message or metric (the session
        copies its view at every read, so a new object says nothing)."""
        key = (v.state, v.total_tokens, v.generation, v.backend, len(v.memory), v.message, self.metric)
        fresh = key != self._drawn
        self._drawn = key
        return fresh

    def progress_note(self, v: TopView) -> str:
        return f" {100 * v.load_progress[0] / max(1, v.load_progress[1]):.0f}%" if v.load_progress else ""

    # --- actions -------------------------------------------------------------------------------------
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

    def action_prompt(self) -> None:
        self.push_screen(PromptScreen(self.view.prompt))

    def can_export(self) -> bool:
        if self.view.profile != "op":
            self.notify(f"export writes one row per op event, which --profile {self.view.profile} does not record"
                        " — restart with --profile op", severity="error", timeout=6)
            return False
        return True

    def write_export(self, path: Path) -> tuple[int, str]:
        records = self.session.records()
        lines = 0

        def counted():
            nonlocal lines
            for chunk in events_csv_chunks(records):
                lines += chunk.count("\n")
                yield chunk

        write_output(path, counted())  # streamed: a long session is never held whole
        rows = lines - 1
        return rows, f"{rows:,} op events from {len(records)} generations"

    def stats(self) -> dict:
        """Engine rate under the TUI (decode tokens/s) and the UI refresh rate."""
        gen = [s for r in self.session.records() for s in r.steps if s.phase in GENERATION_PHASES]
        walls = token_walls(gen)  # a speculative round's tokens share its draft and verify time
        tokens = sum(s.emitted for s in gen)
        total = sum(s.wall_s for s in gen)
        return {
            "backend": self.view.backend, "model": self.view.model, "profile": self.view.profile,
            "decode_tokens": tokens,
            "decode_tokens_per_s": tokens / total if total else None,
            "decode_ms_median": statistics.median(walls) * 1e3 if walls else None,
            **self.ui_stats(),
            "data_redraw_hz_median": statistics.median(self._data_hz_log) if self._data_hz_log else None,
            "generations": self.view.generation,
        }
