"""The widgets both live views are built from: panels drawn through Textual's line API, the
status bar, the banner, and the help screen listing an app's keys. Each reads its data from
the app (`app.view`, `app.status_line`), so one widget serves `aios top` and its serving view."""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static


class StripPanel(Widget):
    """A panel drawn through Textual's line API: the Rich text of one of `panels`' functions is
    turned into one Strip per line, built once per refresh and cropped to the panel's width
    (no wrapping, nothing drawn past the edge). Drawing is the UI's whole cost: on a 2-core
    machine every millisecond of it is taken from the engine, so panels are only refreshed
    when their data changed (see `LiveApp.tick`)."""

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


class StatusBar(Widget):
    """The app's one-line status; every draw is a screen update counted for the UI rate."""

    DEFAULT_CSS = "StatusBar { height: 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }"

    def render(self):
        self.app.frame_drawn()
        return self.app.status_line(self.size.width)


class Banner(Static):
    """One line for what is loading, or the last engine error. Hidden otherwise."""

    DEFAULT_CSS = """
    Banner { height: auto; max-height: 3; display: none; padding: 0 1; }
    Banner.error { display: block; background: $error 30%; color: $text; }
    Banner.busy { display: block; background: $primary 30%; }
    """


class KeysHelp(ModalScreen):
    """A heading, the app's keys, then what its panels show (`NOTES`: lines of Rich markup)."""

    HEADING = ""
    KEYS: tuple[tuple[str, str], ...] = ()
    NOTES = ""
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    KeysHelp { align: center middle; }
    #help { width: 78; max-width: 100%; height: auto; max-height: 100%; border: round $primary; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [self.HEADING] + [f"[b]{k:>10}[/b]  {what}" for k, what in self.KEYS] + self.NOTES.split("\n")
