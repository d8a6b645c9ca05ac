"""Progress in a log: whole lines, never carriage returns; one final line for a short step."""

from __future__ import annotations

import io

from sada.app.progress import Progress, duration


def test_a_short_step_in_a_log_writes_one_whole_line_with_its_figures() -> None:
    out = io.StringIO()
    progress = Progress(out, "replayed", 5000)
    for _ in range(50):
        progress.advance(100)
    assert progress.count == 5000
    progress.done()
    progress.done()  # a second done() adds nothing

    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("replayed: 5000/5000 (100%) [")
    assert "/s]" in lines[0]


def test_a_count_past_its_estimate_and_a_note_show_as_an_open_count() -> None:
    out = io.StringIO()
    progress = Progress(out, "sada simulate: generated", unit=" events", sep=" ")
    progress.advance(7)
    progress.note("50% of the window")
    progress.done()
    assert out.getvalue().startswith("sada simulate: generated 7 events [")
    assert out.getvalue().rstrip().endswith("/s, 50% of the window]")

    out = io.StringIO()
    progress = Progress(out, "replayed", 10)
    progress.advance(12)
    progress.done()
    assert out.getvalue().startswith("replayed: 12 [")


def test_durations_read_as_the_bars_show_them() -> None:
    assert duration(75) == "01:15"
    assert duration(3 * 3600 + 5) == "3:00:05"
