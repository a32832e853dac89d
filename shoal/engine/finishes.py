"""How an engine reports the end of its tasks: TaskFinished to the scheduler,
then, for a plain success whose owner has a reply channel, the results
straight to the owner (Undelivered if that send fails).

When more tasks wait in the engine's inbox (queued behind it by the
scheduler's pipelining, or a burst of calls to a plain actor), the reports
of the ones that end are held and sent together: one write to the
scheduler, one to each owner, instead of two per task.  They go out when
the inbox empties (before the engine waits for work), when HOLD_MAX are
held, before anything else the engine sends (a task that blocks in get
says so after them), or HOLD_DELAY after the first was held (a long task
behind a short one does not hold the short one's value).  Each batch keeps
the order a lone report has: the scheduler hears first.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from ..protocol import messages as m

HOLD_MAX = m.REPORT_BATCH_MAX
HOLD_DELAY = 0.002
HELD_NOTED = 0.001          # a report held longer says so (TaskFinished.ended_ago): timelines


class Finishes:
    def __init__(self, client, replies) -> None:
        self._client = client
        self._replies = replies
        self._held: list = []            # (TaskFinished, reply address or None)
        # Held across a flush's writes: the timer's flush and the engine's must
        # not cross, or a later batch could reach the scheduler first.  (Its
        # sends flush again, re-entering: nothing is held by then.)
        self._lock = threading.RLock()
        self._wake: Optional[threading.Event] = None    # the timer's, started at the first hold

    def send(self, finished: m.TaskFinished, address: Optional[str], hold: bool = False) -> None:
        """Report a task's end (its results go to `address` too, if given);
        `hold`: more work waits, so it may go with the next reports."""
        with self._lock:
            self._held.append((finished, address, time.monotonic()))
            count = len(self._held)
        if not hold or count >= HOLD_MAX:
            self.flush()
        elif count == 1:
            self._start_timer()

    def flush(self) -> None:
        """Send what is held now."""
        if not self._held:
            return                       # (the engine's every send asks: keep it cheap)
        with self._lock:
            held, self._held = self._held, []
            if held:
                self._send(held)

    def _send(self, held: list) -> None:
        now = time.monotonic()
        # A report held past HELD_NOTED says how long, so the scheduler places
        # its run where it was, not where the batch arrived.
        held = [(f if now - t < HELD_NOTED else m.replace(f, ended_ago=now - t), address)
                for f, address, t in held]
        self._client.send(*[finished for finished, _ in held])
        by_address: dict = {}
        for finished, address in held:
            if address is not None:
                by_address.setdefault(address, []).append(finished)
        for address, finishes in by_address.items():
            entries = [e for f in finishes for e in f.results]
            if not self._replies.send(address, [m.ObjectsReady(entries=entries)]):
                self._client.send(*[m.Undelivered(task_id=f.task_id) for f in finishes])

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def _start_timer(self) -> None:
        if self._wake is None:           # (an engine that never holds has no such thread)
            self._wake = threading.Event()
            threading.Thread(target=self._timer, name="finish-flush", daemon=True).start()
        self._wake.set()

    def _timer(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(HOLD_DELAY)
            self.flush()
