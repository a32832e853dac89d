"""Cell output on Ray: a relay actor, and the driver's thread that drains it.

Ray forwards a worker's prints to the driver by tailing log files, and the
driver prints them on its stdout; in a notebook they land under whatever cell
runs when they arrive.  shoal routes a `%%remote` cell's output itself:

- the cell's code runs inside `worker.CellOutput` (stdout, stderr, displays
  -> `OutputRelay.push`, tagged with the cell's key);
- `OutputRelay` (one async Ray actor per driver, 0 CPUs) keeps the items in
  order until the driver has taken them;
- `DriverRelay` (the driver side) maps each key to the router context of the
  cell that submitted it (its parent message, its label), and its thread
  `shoal-ray-output` long-polls the relay and hands each item to that router,
  which publishes it under that cell: live, and whatever cell runs now.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("shoal.backends.ray")
POLL = 1.0                  # seconds one long-poll of the relay waits for news
RELAY_NAMESPACE = "shoal"
MAX_ROUTES = 10_000         # cells remembered (the oldest are forgotten first)


class OutputRelay:
    """The relay actor: items in arrival order, numbered from 0, kept until taken."""

    def __init__(self) -> None:
        self.items: list = []
        self.first = 0                         # the number of items[0]
        self.news: Optional[asyncio.Event] = None

    def _event(self) -> asyncio.Event:
        if self.news is None:
            self.news = asyncio.Event()
        return self.news

    async def push(self, items: list) -> int:
        self.items.extend(items)
        self._event().set()
        return self.first + len(self.items)

    async def end(self) -> int:
        """The number one past the last item received."""
        return self.first + len(self.items)

    async def take(self, after: int, timeout: float) -> tuple:
        """(end, items numbered `after`..end-1), once there is one or `timeout`
        passes; items before `after` were delivered and are dropped."""
        drop = min(max(0, after - self.first), len(self.items))
        del self.items[:drop]
        self.first += drop
        if not self.items and timeout > 0:
            news = self._event()
            news.clear()
            try:
                await asyncio.wait_for(news.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.first + len(self.items), list(self.items)


@dataclass
class RoutedOutput:
    """One item as shoal.magics.output.OutputRouter.handle reads a TaskOutput."""
    task_id: str
    name: str
    pid: int
    stream: str
    text: str = ""
    data: Optional[dict] = None
    origin: Optional[str] = None


class DriverRelay:
    """The driver's side: the relay actor, the cells' contexts, the draining thread."""

    def __init__(self, ray) -> None:
        self.ray = ray
        # Named, so that a task's route carries only the name (pickling a handle
        # into every task costs more than the task); its workers look it up once.
        self.name = f"shoal-output-{uuid.uuid4().hex[:12]}"
        self.actor = ray.remote(num_cpus=0, max_restarts=0)(OutputRelay).options(
            name=self.name, namespace=RELAY_NAMESPACE).remote()
        self._routes: OrderedDict = OrderedDict()      # key -> (router, context)
        self._keys: OrderedDict = OrderedDict()        # (router, cell, parent, label) -> key
        self._lock = threading.Lock()
        self._delivered = 0
        self._progress = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="shoal-ray-output", daemon=True)
        self._thread.start()

    def route(self, router, name: str = ""):
        """A worker.CellOutput for the work submitted now from `router`'s cell
        (one key per cell and label, however many tasks it submits)."""
        from .worker import CellOutput
        context = router.context()
        parent, label, cell = context[:3]
        msg_id = (parent or {}).get("header", {}).get("msg_id") if isinstance(parent, dict) \
            else id(parent)
        which = (id(router), id(cell), msg_id, label)
        with self._lock:
            key = self._keys.get(which)
            if key is None or key not in self._routes:
                key = self._keys[which] = uuid.uuid4().hex[:16]
                self._routes[key] = (router, context)
                while len(self._routes) > MAX_ROUTES:
                    self._routes.popitem(last=False)
                while len(self._keys) > MAX_ROUTES:
                    self._keys.popitem(last=False)
        return CellOutput(self.name, key, name)

    def _drain(self) -> None:
        while not self._stopping.is_set():
            try:
                end, items = self.ray.get(self.actor.take.remote(self._delivered, POLL))
            except Exception as exc:
                if not self._stopping.is_set():
                    log.warning("the output relay failed (%s); cell output falls back to "
                                "Ray's log forwarding", exc)
                break
            for item in items:
                self._deliver(*item)
            with self._progress:
                self._delivered = end
                self._progress.notify_all()

    def _deliver(self, key: str, stream: str, pid: int, name: str, nested: bool,
                 payload) -> None:
        with self._lock:
            found = self._routes.get(key)
        if found is None:
            return
        router, context = found
        origin = key if nested else None          # started by a task: Ray's line prefix
        task = f"{key}/{name}/{pid}"              # a line left open continues per task
        if stream == "display":
            msg = RoutedOutput(task, name, pid, "display", data=payload, origin=origin)
        else:
            msg = RoutedOutput(task, name, pid, stream, text=payload, origin=origin)
        try:
            router.handle(msg, context)
        except Exception:
            log.exception("routing cell output failed")

    def flush(self, timeout: float) -> None:
        """Wait until everything the relay has now was handed to the routers
        (the cells' code waits for the relay before returning)."""
        if not self._thread.is_alive():
            return
        end = self.ray.get(self.actor.end.remote(), timeout=timeout)
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._delivered < end and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._progress.wait(left)

    def close(self) -> None:
        """Stop the thread (within one poll) and the relay actor; idempotent."""
        self._stopping.set()
        try:
            self.ray.kill(self.actor)
        except Exception:
            pass
        self._thread.join(POLL + 2.0)


__all__ = ["OutputRelay", "DriverRelay", "RoutedOutput"]
