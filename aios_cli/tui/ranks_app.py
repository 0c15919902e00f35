"""`aios top --tp N --pp M`: the ranks of a tensor/pipeline-parallel run side by side, live. A
Textual app over a `RanksSession`: the ranks run in their own processes, the session's worker
thread relays what they post, and the app reads the latest view on a timer, as `TopApp` does.

Layout: the model's layers (each stage's, as its tp-rank 0 measured them) with tokens/s and the
system beside them, the ranks panel across the screen under them, then the text."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical

from . import panels
from .app import LayerTabs
from .live_app import LIVE_CSS, LiveApp
from .ranks_panel import panel_lines, ranks_panel
from .view import TopView
from .widgets import KeysHelp, Panel

KEYS = (
    ("m", "layer bars: seconds ↔ % of token time"),
    ("l", "layer view: decode (latest token, moving average) ↔ prefill"),
    ("?", "this help"),
    ("q / ctrl+c", "quit (every rank is stopped)"),
)


class RanksHelp(KeysHelp):
    HEADING = "[b]aios top --tp/--pp[/b] — the ranks of a parallel run, live\n"
    KEYS = KEYS
    NOTES = """
[b]layers[/b]  the model's layers, each as the tp-rank 0 of its stage measured it
        (in: stage 0's embedding; out: the sampling rank's head and the token's broadcast)
[b]ranks[/b]  each rank's decode time per token: its compute, and each collective
        (the transfer and the wait for its peers); imbalance = slowest compute / mean,
        idle = 1 − Σcompute / Σwall, over the same last tokens on every rank
[b]tokens/s[/b]  the sampling rank's tokens: 1 / wall time, TTFT per generation

[dim]No pause: the ranks run in step, and a held rank would be measured as the others' wait.
escape closes this help.[/dim]"""


class RanksApp(LayerTabs, LiveApp):
    TITLE = "aios top --tp/--pp"
    CSS = LIVE_CSS + LayerTabs.CSS + """
    #tokens { height: 1fr; min-height: 4; }
    #system { height: 1fr; min-height: 4; }
    #text { height: 4; }
    """
    BINDINGS = [
        Binding("m", "metric", "Metric"),
        Binding("l", "layer_tab", "Layers"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]
    LIVE_STATES = ("generating",)
    DATA_PANELS = "LayerPanel, #tokens, #ranks, #text"
    HELP = RanksHelp

    view: TopView

    def compose_panels(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield from self.compose_layer_tabs()
            with Vertical(id="right"):
                yield Panel("tokens/s", panels.tokens_panel, id="tokens")
                yield Panel("system", self.draw_system, id="system")
        yield self._fit(Panel("ranks", ranks_panel, id="ranks"), self.size.width)
        yield Panel("text", panels.text_panel, id="text")

    def on_resize(self, event) -> None:
        self._fit(self.query_one("#ranks"), event.size.width)

    def _fit(self, ranks: Panel, width: int) -> Panel:
        """The ranks panel takes the lines it draws at this width (columns, or a line a rank)."""
        r = self.view.ranks
        ranks.styles.height = 1 + panel_lines(r.tp, r.pp, width)  # its top border, then its lines
        return ranks

    def status_line(self, width: int) -> Text:
        return panels.status_line(self.view, self.ui_hz, width=width)

    def fresh_data(self, v: TopView) -> bool:
        key = (v.state, v.total_tokens, v.generation, v.message, v.ranks.tokens, self.metric)
        fresh = key != self._drawn
        self._drawn = key
        return fresh

    def action_metric(self) -> None:
        self.metric = "share" if self.metric == "time" else "time"
        self.tick()

    def stats(self) -> dict:
        return {"backend": self.view.backend, "model": self.view.model, "tp": self.view.ranks.tp,
                "pp": self.view.ranks.pp, **self.session.stats(), **self.ui_stats()}
