"""Progress bars: live where someone watches, one update a minute in a log."""
import io

from freeecho_core.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_written_to_a_log_updates_rarely():
    assert progress_bar(range(3), file=io.StringIO()).mininterval == LOG_INTERVAL_S
    assert progress_bar(range(3), file=Terminal()).mininterval < 1  # tqdm's default in a terminal


def test_a_short_bar_leaves_nothing_in_a_log_and_a_cleared_one_nothing_in_a_terminal():
    from freeecho_core.progress import clear_bars

    log = io.StringIO()
    for _ in progress_bar(range(3), file=log):
        pass
    assert log.getvalue() == ""  # seconds of work: no bar in the log
    terminal = Terminal()
    bar = progress_bar(total=3, file=terminal)
    bar.update(1)
    assert "0/3" in terminal.getvalue()  # the bar is on the screen
    clear_bars()  # an error ends the command while the bar runs
    assert terminal.getvalue().endswith("\r") and "\n" not in terminal.getvalue()  # its line erased, none left
