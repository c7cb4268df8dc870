"""Progress bars: live where someone watches, one update a minute in a log."""
import io
import sys

from freeecho_core.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_written_to_a_log_updates_rarely(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress_bar(range(3), file=io.StringIO()).mininterval == LOG_INTERVAL_S
    assert progress_bar(range(3), file=Terminal()).mininterval < 1  # tqdm's default in a terminal
