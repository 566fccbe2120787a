"""Progress bars that suit both a terminal and a log file.

On a terminal a bar redraws ten times a second; written to a file or a pipe (a cluster
job's log) it redraws at most every LOG_INTERVAL_S seconds, so a long run adds a handful
of lines to the log instead of thousands.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

TERMINAL_INTERVAL_S = 0.1  # tqdm's default redraw interval on a terminal
LOG_INTERVAL_S = 30.0  # in a log file: one line per half minute is plenty


def bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True,
        leave: bool = True, position: int | None = None) -> tqdm:
    interactive = sys.stderr.isatty()
    # nothing to do: no bar (an empty one is noise on a rerun that finds everything done)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or total == 0, leave=leave,
                position=position, dynamic_ncols=True,
                mininterval=TERMINAL_INTERVAL_S if interactive else LOG_INTERVAL_S)


def close_bars() -> None:
    """Close every open bar (as it stands), so that a message printed next starts on a line of
    its own and no bar redraws after it (an error raised midway leaves its bars open)."""
    import tqdm.std

    for b in list(tqdm.std.tqdm._instances):
        b.close()
