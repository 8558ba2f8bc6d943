"""The CLI's progress bars: drawn only on a terminal, and nothing of them left on the line when they end."""

from __future__ import annotations

import io
import sys

import pytest

from server.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    bar = progress_bar(3, "building")
    bar.update(3)
    bar.close()
    assert captured.getvalue() == ""


def test_a_finished_bar_leaves_a_clean_line(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress_bar(4, "building", unit="%")
    for _ in range(4):
        bar.update()
    bar.close()
    drawn = terminal.getvalue()
    assert "building" in drawn
    # what follows the last carriage return is what the next output starts beside: blanks at most
    assert drawn.rsplit("\r", 1)[-1].strip() == ""
