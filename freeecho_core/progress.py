"""Progress bars that are live in a terminal or a notebook and quiet in logs.

Written to a file or a pipe (CI, `make`, `nohup ... > log`), a tqdm bar redraws itself on one line many times a
second; there it shows itself after a minute and then updates once a minute, so a log of an hours-long run stays
readable and work of seconds leaves no bar in it. `clear_bars` takes the live bars off a terminal (the command
does so before its one line of error).
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 60.0  # seconds between updates when the bar goes to a file or a pipe


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm.auto.tqdm(iterable, **kwargs)`, with `mininterval` LOG_INTERVAL_S when not interactive."""
    stream = kwargs.get("file") or sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)() or in_notebook()
    if not interactive:
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs["delay"] = max(kwargs.get("delay", 0.0), LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)


def in_notebook() -> bool:
    """Whether this process runs a Jupyter kernel's cells (importing ipykernel, as pytest's nbval does, is not)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


def clear_bars() -> None:
    """Close every live bar without leaving its line (in a terminal its line is erased)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()
