"""Progress bars that are live in a terminal or a notebook and quiet in logs.

Written to a file or a pipe (CI, `make`, `nohup ... > log`), a tqdm bar redraws itself on one line many times a
second; there it updates once a minute instead, so a log of an hours-long run stays readable.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 60.0  # seconds between updates when the bar goes to a file or a pipe


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm.auto.tqdm(iterable, **kwargs)`, with `mininterval` LOG_INTERVAL_S when not interactive."""
    stream = kwargs.get("file") or sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)() or "ipykernel" in sys.modules
    if not interactive:
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)
