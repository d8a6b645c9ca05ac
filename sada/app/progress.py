"""Progress of a long command on stderr: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns, which pile up in a file or a CI
log; so when the stream is not a terminal, the same figures (count, share,
elapsed, estimate, rate) are written as one whole line every few seconds and
once at the end. A step shorter than that writes its final line only.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from tqdm import tqdm

BAR_SECONDS = 0.25  # between redraws of a bar
LINE_SECONDS = 5.0  # between lines in a log
_FIGURES = "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_BAR = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + _FIGURES
_LINE = "{desc}{n_fmt}/{total_fmt} ({percentage:.0f}%) " + _FIGURES
_OPEN = "{desc}{n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]"


class _Bar(tqdm):  # type: ignore[type-arg]
    # No monitor thread: it would redraw from another thread, between the
    # command's own lines; updates come often enough to redraw on.
    monitor_interval = 0
    bounded_format = _BAR

    def _choose_format(self) -> None:
        # A count past its total (an estimate that fell short) shows as an open count.
        total = self.total
        self.bar_format = self.bounded_format if total and self.n < total + 0.5 else _OPEN

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        self._choose_format()
        super().display(msg, pos)


class _Lines(_Bar):
    """tqdm that writes each refresh as a line of its own."""

    bounded_format = _LINE

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        if msg is not None:  # tqdm clearing or moving a bar: nothing to do in a log
            return
        self._choose_format()
        self.fp.write(str(self) + "\n")
        self.fp.flush()


class Progress:
    """Progress of one step: ``advance`` as work gets done, ``done`` at the end.

    ``total`` is how much there is to do, if known (then a share and an
    estimate of the time left show); ``unit`` follows the count (e.g. ``" events"``);
    ``sep`` goes between the label and the figures.
    """

    def __init__(
        self,
        out: TextIO,
        label: str,
        total: int | None = None,
        *,
        unit: str = "",
        sep: str = ": ",
    ) -> None:
        options: dict[str, Any] = {
            "desc": label + sep,
            "total": total or None,
            "file": out,
            "unit": unit,
        }
        terminal = bool(getattr(out, "isatty", lambda: False)())
        if terminal:
            # A terminal that reports no width (some pseudo-terminals) would get an
            # empty bar from tqdm's trimming: give it a fixed one.
            sized = {"dynamic_ncols": True} if _width(out) > 0 else {"ncols": 100, "nrows": 20}
            self._bar: tqdm[Any] = _Bar(mininterval=BAR_SECONDS, **sized, **options)
        else:
            # A log's rate is the average so far (no smoothing); done() writes its last line.
            self._bar = _Lines(
                mininterval=LINE_SECONDS, delay=LINE_SECONDS, smoothing=0, leave=False, **options
            )
        self._terminal = terminal
        self._done = False

    @property
    def count(self) -> int:
        return int(self._bar.n)

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)

    def note(self, text: str) -> None:
        """Shown after the figures from the next update on: what the count alone cannot say."""
        self._bar.set_postfix_str(text, refresh=False)

    def done(self) -> None:
        """The final figures; the bar (or line) stays."""
        if self._done:
            return
        self._done = True
        if not self._terminal:
            self._bar.refresh()  # tqdm itself leaves no line for a step shorter than its delay
        self._bar.close()


def duration(seconds: float) -> str:
    """``seconds`` as the bars show a time: ``MM:SS``, or ``H:MM:SS``."""
    return str(tqdm.format_interval(seconds))


def _width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError):
        return 0
