"""Progress of a set of refs: done / failed / total, rate and time left.

`ProgressModel` folds task events into per-ref states (monotone: a ref,
once done or failed, stays so; a snapshot adds to what is known instead of
replacing it, so a bar never goes backwards).  A ref whose task ended before
the history the feed holds is settled by `reconcile(ready_ids)`, fed from a
lookup of the values this process already holds.  Rate and time left come from the end times of
the events, so they are the same on every replay.

`ProgressWidget` shows it; its final state stays after completion.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable, Optional, Sequence

import traitlets

from ..protocol.object_ids import task_of

from . import html as h
from .base import LiveWidget, source_of, static

RATE_WINDOW = 10.0          # seconds of recent completions behind the rate
TICK = 1.0                  # refresh elapsed / time left this often while running
_FINAL = {"finished": "done", "failed": "failed", "cancelled": "cancelled"}


class ProgressModel:
    def __init__(self, object_ids: Sequence[str], *, title: str = "",
                 created: Optional[float] = None,
                 task_of: Callable[[str], str] = task_of) -> None:
        self.title = title
        self.created = time.time() if created is None else created
        self.state: dict[str, str] = {}                # object id -> pending|done|failed|cancelled
        self.by_task: dict[str, list[str]] = {}
        for oid in object_ids:
            if oid in self.state:
                continue
            self.state[oid] = "pending"
            self.by_task.setdefault(task_of(oid), []).append(oid)   # the backend's rule
        self.total = len(self.state)
        self.counts = {"done": 0, "failed": 0, "cancelled": 0}
        self.running: set = set()
        self.guessed: set = set()          # settled by reconcile, not (yet) by an event
        self.first_start: Optional[float] = None
        self.last_end: Optional[float] = None
        self._ends: deque = deque()        # (end time, refs completed), for the rate
        self.lost: Optional[str] = None
        self.version = 0

    # ------------------------------------------------------------------ events
    def apply(self, tasks: Iterable) -> None:
        by_task, running = self.by_task, self.running
        for ev in tasks:
            oids = by_task.get(ev.task_id)
            if oids is None:
                continue
            self.version += 1
            if ev.start is not None and (self.first_start is None or ev.start < self.first_start):
                self.first_start = ev.start
            if ev.status == "running":
                running.add(ev.task_id)
                continue
            running.discard(ev.task_id)
            final = _FINAL.get(ev.status)
            if final is None:              # retried / crashed: it runs again
                continue
            state, end = self.state, ev.end
            for oid in oids:
                if state[oid] == "pending":      # the common case, inline
                    state[oid] = final
                    self.counts[final] += 1
                    if end is not None:
                        self._ends.append(end)
                        if self.last_end is None or end > self.last_end:
                            self.last_end = end
                else:
                    self._settle(oid, final, end)

    def reconcile(self, ready_ids: Iterable[str], now: Optional[float] = None) -> None:
        """Refs known to be ready though no event said how they ended: done."""
        for oid in ready_ids:
            if self.state.get(oid) == "pending":
                self._settle(oid, "done", now if now is not None else time.time())
                self.guessed.add(oid)

    def _settle(self, oid: str, final: str, end: Optional[float]) -> None:
        old = self.state.get(oid)
        if old is None:
            return
        if old != "pending":
            if oid not in self.guessed or old == final:
                return
            self.guessed.discard(oid)     # an event corrects a guess
            self.counts[old] -= 1
        self.state[oid] = final
        self.counts[final] += 1
        self.version += 1
        if end is not None:
            if self.last_end is None or end > self.last_end:
                self.last_end = end
            self._ends.append(end)

    def mark_lost(self, reason: str) -> None:
        self.lost = reason
        self.version += 1

    # ------------------------------------------------------------------ derived
    @property
    def settled(self) -> int:
        return self.counts["done"] + self.counts["failed"] + self.counts["cancelled"]

    @property
    def complete(self) -> bool:
        return self.settled >= self.total

    def pending_ids(self) -> list:
        return [o for o, s in self.state.items() if s == "pending"]

    def rate(self, now: float) -> Optional[float]:
        """Refs settled per second over the recent window (None until two have)."""
        ends = self._ends
        if self.settled < 2 or self.last_end is None:
            return None
        until = self.last_end if self.complete else max(now, self.last_end)
        horizon = until - RATE_WINDOW
        while ends and ends[0] < horizon:
            ends.popleft()
        span = until - max(horizon, self.started())
        return len(ends) / span if ends and span > 0 else None

    def started(self) -> float:
        return min(self.created, self.first_start) if self.first_start else self.created

    def view(self, now: Optional[float] = None) -> dict:
        """Everything the widget shows, as plain data."""
        now = time.time() if now is None else now
        c = self.counts
        failed = c["failed"] + c["cancelled"]
        if self.complete:
            status = "failed" if failed else "done"
            end = self.last_end if self.last_end is not None else now
        else:
            status = "lost" if self.lost else "running"
            end = now
        rate = self.rate(now)
        remaining = self.total - self.settled
        eta = remaining / rate if rate and not self.complete and not self.lost else None
        return {
            "title": self.title, "total": self.total, "done": c["done"], "failed": c["failed"],
            "cancelled": c["cancelled"], "running": len(self.running), "status": status,
            "elapsed": max(0.0, end - self.started()), "rate": rate, "eta": eta,
            "lost": self.lost or "",
        }


def summary_text(v: dict) -> str:
    """One line: '812 / 1,000 done · 3 failed · 245/s · 0:03 left'."""
    parts = [f"{h.count(v['done'])} / {h.count(v['total'])} done"]
    if v["failed"]:
        parts.append(f"{h.count(v['failed'])} failed")
    if v["cancelled"]:
        parts.append(f"{h.count(v['cancelled'])} cancelled")
    if v["status"] == "running":
        if v["running"]:
            parts.append(f"{h.count(v['running'])} running")
        parts.append(h.rate(v["rate"]))
        parts.append(f"{h.duration(v['eta'])} left" if v["eta"] is not None else "— left")
    else:
        parts.append(f"in {h.duration(v['elapsed'])}")
        if v["rate"]:
            parts.append(h.rate(v["rate"]))
    if v["status"] == "lost":
        parts.append(f"cluster lost: {v['lost']}")
    return " · ".join(parts)


def snapshot_html(v: dict) -> str:
    total = max(1, v["total"])
    icon, color = {"done": ("✔", h.OK), "failed": ("✘", h.FAILED),
                   "lost": ("✘", h.FAILED)}.get(v["status"], ("⏳", "#0969da"))
    return (f'<div class="shoal-progress-static" data-status="{h.esc(v["status"])}" '
            f'data-done="{v["done"]}" data-total="{v["total"]}" '
            f'style="{h.FONT} display:flex; align-items:center; gap:8px; padding:2px 0">'
            f'<span style="color:{color}">{icon}</span>'
            f'<b>{h.esc(v["title"] or "shoal")}</b>'
            f'{h.meter(v["done"] / total, h.OK if v["status"] != "running" else "#0969da", 220, 10, (v["failed"] + v["cancelled"]) / total)}'
            f'<span style="color:#57606a">{h.esc(summary_text(v))}</span></div>')


class ProgressWidget(LiveWidget):
    """A live progress bar for a set of ObjectRefs (see shoal.progress)."""

    _esm = static("progress.js")
    view = traitlets.Dict({}).tag(sync=True)

    def __init__(self, refs: Sequence, *, title: str = "", client=None, feed=None,
                 wait: Optional[Callable] = None) -> None:
        source = source_of(client, feed)
        object_id = getattr(source, "object_id", lambda r: getattr(r, "id", r))
        self._refs = {}              # object id -> what was given (a ref, or its id)
        for r in refs:
            self._refs.setdefault(r if isinstance(r, str) else object_id(r), r)
        self.model = ProgressModel(list(self._refs), title=title,
                                   task_of=getattr(source, "task_of", task_of))
        self._wait = wait            # (ids) -> ready ids, non-blocking; default: source.ready
        self._reconciled = False
        self._pushed = -1
        self._next_tick: Optional[float] = None
        super().__init__(client, feed=feed, view=self.model.view())

    # ------------------------------------------------------------------ feed
    def _apply(self, batch) -> None:
        self.model.apply(batch.tasks)
        if batch.snapshot:
            self._reconciled = False        # settle what the history no longer holds

    def _flush(self, now: float) -> Optional[float]:
        with self._lock:
            need = not self._reconciled and not self.model.complete
        if need:
            self._reconcile()
        with self._lock:
            m = self.model
            due = self._next_tick is not None and now >= self._next_tick
            if m.version == self._pushed and not due:
                return self._next_tick if not m.complete else None
            self._pushed = m.version
            view = m.view()
            running = not m.complete and not m.lost
            self._next_tick = now + TICK if running else None
        self.view = view
        return self._next_tick

    def _reconcile(self) -> None:
        with self._lock:
            pending = self.model.pending_ids()
            self._reconciled = True
        if not pending:
            return
        try:
            ready = self._ready(pending)
        except Exception:           # the cluster went: closed() will tell
            return
        with self._lock:
            self.model.reconcile(ready)

    def _ready(self, ids: list) -> list:
        """Which of `ids` are ready, without blocking (the backend's `ready`)."""
        if self._wait is not None:
            return self._wait(ids)
        return self._source.ready([self._refs[i] for i in ids])

    def settle_ready(self) -> None:
        """Check again which refs are ready (called when a blocking get returned)."""
        with self._lock:
            self._reconciled = False
        self.poke()

    def _closed(self, reason: str) -> None:
        if not self.model.complete:
            self.model.mark_lost(reason)
        self.view = self.model.view()

    # ------------------------------------------------------------------ display
    def finished(self) -> bool:
        return self.model.complete or bool(self.model.lost)

    def html(self) -> str:
        return snapshot_html(self.model.view())

    def text(self) -> str:
        v = self.model.view()
        return f"{v['title'] or 'shoal'}: {summary_text(v)}"
