"""A tqdm-style progress bar on a terminal, for a long blocking get/wait.

    shoal.get: 45%|██████▊        | 45/100 [00:03<00:04, 12.3 refs/s]

`shoal.get`/`shoal.wait` of several refs that has waited AUTO_PROGRESS_AFTER
seconds draws one on stderr when stderr is a terminal (not in a notebook,
where a widget does it) and erases nothing: the last state stays on its line.
SHOAL_PROGRESS=0 turns it off.  The bar is redrawn by a named thread owned by
the `TerminalProgress` context manager, which joins it on exit.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional, Sequence, TextIO

ENV = "SHOAL_PROGRESS"
REDRAW = 0.1                # seconds between two redraws
WIDTH = 25                  # characters of the bar itself
_BLOCKS = " ▏▎▍▌▋▊▉█"


def wanted(stream: TextIO) -> bool:
    """Whether to draw on `stream`: a terminal, and not turned off."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def render(what: str, done: int, total: int, elapsed: float) -> str:
    """One line: label, percentage, bar, counts, elapsed<left, rate."""
    frac = done / total if total else 1.0
    eighths = int(frac * WIDTH * 8)
    bar = "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths < WIDTH * 8 else "")
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else None
    return (f"{what}: {frac:4.0%}|{bar:<{WIDTH}}| {done}/{total} "
            f"[{_clock(elapsed)}<{_clock(left) if left is not None else '?'}, "
            f"{rate:.1f} refs/s]")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class TerminalProgress:
    """Draws the bar for `ids` (ready when `is_ready(id)`) until the block ends."""

    def __init__(self, ids: Sequence[str], is_ready: Callable[[str], bool], what: str,
                 stream: TextIO, started: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ids = list(dict.fromkeys(ids))
        self.is_ready = is_ready
        self.what = what
        self.stream = stream
        self.clock = clock
        self.started = clock() if started is None else started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shoal-terminal-progress",
                                        daemon=True)

    def __enter__(self) -> "TerminalProgress":
        self._draw()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._draw()
        self._write("\n")

    def _run(self) -> None:
        while not self._stop.wait(REDRAW):
            self._draw()

    def _draw(self) -> None:
        done = sum(1 for i in self.ids if self.is_ready(i))
        line = render(self.what, done, len(self.ids), self.clock() - self.started)
        self._write("\r" + line)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):       # the terminal went away: nothing to show
            pass
