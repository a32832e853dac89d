"""The dashboard's own views: tasks, actors and logs.

The timeline, object store and cluster pages show the notebook's widgets
themselves (shoal.widgets); these three have no notebook counterpart yet.
They are built the same way, so that they run on the same feed, reach the
page through the same comm bridge and render through the same page.js: a
pure model (events or a query in, a plain dict out; tested alone) and a
LiveWidget that pushes `view` to the page.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Callable, Optional

import traitlets

from ..widgets.base import LiveWidget, QueryingWidget, static

MAX_TASKS = 20_000          # tasks remembered by the task list (the oldest ended go first)
SHOWN_TASKS = 500           # rows sent to the page
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class TaskListModel:
    """Each task's latest state, newest change first."""

    def __init__(self, max_tasks: int = MAX_TASKS) -> None:
        self.max_tasks = max_tasks
        self.tasks: "OrderedDict[str, dict]" = OrderedDict()
        self.version = 0

    def apply(self, events, snapshot: bool = False) -> None:
        if snapshot:
            self.tasks.clear()
        for ev in events:
            row = self.tasks.pop(ev.task_id, None) or {"task_id": ev.task_id, "runs": 0}
            if ev.status == "revoked":         # the run it announced never began: no run
                if row.get("status") == "running" and row.get("start") == ev.start:
                    row.update(runs=row["runs"] - 1, status="queued", engine_id=None,
                               host_id=None, start=None, end=None)
                self.tasks[ev.task_id] = row
                self.version += 1
                continue
            if ev.status == "running" and ev.start != row.get("start"):
                row["runs"] += 1
            row.update(name=ev.name, status=ev.status, engine_id=ev.engine_id,
                       host_id=ev.host_id, start=ev.start if ev.start is not None else row.get("start"),
                       end=ev.end)
            self.tasks[ev.task_id] = row
            self.version += 1
        while len(self.tasks) > self.max_tasks:
            self.tasks.popitem(last=False)

    def view(self, limit: int = SHOWN_TASKS) -> dict:
        counts: dict = {}
        for row in self.tasks.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        rows = []
        for row in reversed(self.tasks.values()):
            if len(rows) >= limit:
                break
            rows.append(dict(row))
        return {"counts": counts, "total": len(self.tasks), "rows": rows, "now": time.time()}


class TasksWidget(LiveWidget):
    """Every task the cluster remembers: name, state, engine, duration, retries."""

    _esm = static("tasks.js", folder=STATIC)
    view = traitlets.Dict({}).tag(sync=True)

    def __init__(self, client=None, *, feed=None) -> None:
        self.model = TaskListModel()
        self._sent = -1
        super().__init__(client, feed=feed)

    def _apply(self, batch) -> None:
        self.model.apply(batch.tasks, snapshot=batch.snapshot)

    def _flush(self, now: float) -> Optional[float]:
        with self._lock:
            if self.model.version == self._sent:
                return None
            self._sent = self.model.version
            view = self.model.view()
        self.view = view
        return None


class ActorsWidget(QueryingWidget):
    """Every actor: class, name, state, engine, restarts, pending calls."""

    _esm = static("actors.js", folder=STATIC)
    view = traitlets.Dict({}).tag(sync=True)

    def __init__(self, client=None, *, feed=None, query: Optional[Callable] = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 1.0) -> None:
        self._query = query            # () -> [actor info]; default: ask the scheduler
        self._init_querying(clock, min_interval, budget=10)
        super().__init__(client, feed=feed, view={"actors": [], "updated": None})

    def _relevant(self, batch) -> bool:
        return batch.cluster_changed or bool(batch.tasks)

    def refresh(self) -> bool:
        try:
            actors = self._query() if self._query else self._client.query("list_actors", timeout=5)
        except Exception:              # the cluster is going: closed() follows
            return False
        order = {"ALIVE": 0, "PENDING": 1, "RESTARTING": 2, "DEAD": 3}
        actors = sorted(actors, key=lambda a: (order.get(a.get("state"), 1), a.get("actor_id")))
        self.view = {"actors": actors, "updated": time.time()}
        return True


class LogTail:
    """New text of every `*.log` file in a directory since the last call (tail -f)."""

    def __init__(self, logs_dir: str, backlog: int = 64 * 1024, chunk: int = 256 * 1024) -> None:
        self.logs_dir = logs_dir
        self.backlog = backlog        # a file first seen shows its last `backlog` bytes
        self.chunk = chunk            # at most this much of one file per call
        self.offsets: dict = {}

    def files(self) -> list:
        try:
            names = os.listdir(self.logs_dir)
        except OSError:
            return []
        return sorted(n for n in names if n.endswith(".log"))

    def read(self) -> list:
        """[(file name, new text)] for the files that grew."""
        out = []
        for name in self.files():
            path = os.path.join(self.logs_dir, name)
            try:
                size = os.path.getsize(path)
                start = self.offsets.get(name)
                if start is None:
                    start = max(0, size - self.backlog)
                elif size < start:                 # truncated or replaced
                    start = 0
                if size == start:
                    self.offsets[name] = start
                    continue
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read(min(self.chunk, size - start))
            except OSError:
                continue
            self.offsets[name] = start + len(data)
            out.append((name, data.decode("utf-8", errors="replace")))
        return out


class LogsWidget(LiveWidget):
    """The cluster's log files, followed live (`shoal logs`, as tail -f)."""

    _esm = static("logs.js", folder=STATIC)
    files = traitlets.List([]).tag(sync=True)
    logs_dir = traitlets.Unicode("").tag(sync=True)
    INTERVAL = 0.5

    def __init__(self, client=None, *, feed=None, logs_dir: str) -> None:
        self._tail = LogTail(logs_dir)
        self._sending = False           # the page said hello: send it everything from the start
        super().__init__(client, feed=feed, logs_dir=logs_dir, files=self._tail.files())

    def _apply(self, batch) -> None:
        pass

    def _flush(self, now: float) -> Optional[float]:
        if not self._sending:
            return now + self.INTERVAL
        with self._lock:
            chunks = self._tail.read()
            files = self._tail.files()
        if files != self.files:
            self.files = files
        for name, text in chunks:
            self.send({"type": "lines", "file": name, "text": text})
        return now + self.INTERVAL

    def _handle(self, content: dict) -> None:
        if content.get("type") == "hello":
            with self._lock:
                self._tail.offsets.clear()
                self._sending = True
            self.poke()


VIEWS = ("cluster", "timeline", "objects", "tasks", "actors", "logs")
