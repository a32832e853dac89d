"""The scheduler's outbox: everything its state machine wants sent, in order.

Components never send.  They append to the one Outbox of their scheduler: a
message to a connection, an object entry to push to a peer (batched into
ObjectsReady), an object id for a host to free (batched into FreeObjects), a
task event or a "something changed" mark for the live views.  The I/O shell
(server.py) drains it after each message (`SchedulerState.take_output`) and
the events on a timer (`take_events`).  Tests read the same queue.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..protocol import messages as m
from ..protocol.messages import ObjectEntry

PUSH_BATCH_BYTES = 16 << 20     # inline values per ObjectsReady, well under a frame's limit


class AwaitingAgent:
    """The connection of a host whose agent is being restarted: it keeps what
    is sent until the new agent registers (see SchedulerState._await_agent)."""

    def __init__(self) -> None:
        self.queued: list = []

    def send(self, msg) -> None:
        self.queued.append(msg)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def batches(entries: list) -> list:
    """Entries split so that no message carries more than PUSH_BATCH_BYTES inline."""
    out, batch, size = [], [], 0
    for e in entries:
        n = memoryview(e.inline).nbytes if e.inline is not None else 0
        if batch and size + n > PUSH_BATCH_BYTES:
            out.append(batch)
            batch, size = [], 0
        batch.append(e)
        size += n
    return out + [batch] if batch else out


class Outbox:
    """Messages, pushes, frees and view events waiting to leave the scheduler."""

    __slots__ = ("messages", "pushes", "frees", "events", "changed", "subscribers")

    def __init__(self) -> None:
        self.messages: list = []               # (conn, msg), in order
        self.pushes: dict[Any, list] = {}      # conn -> [ObjectEntry]
        self.frees: dict[str, list] = {}       # host id -> [object id]
        self.events: list = []                 # TaskEvents for the live views
        self.changed: set = set()              # "objects", "cluster"
        self.subscribers: set = set()          # who gets the events; none: nothing is kept

    def send(self, conn, msg) -> None:
        if type(conn) is AwaitingAgent:     # held there for the host's next agent
            conn.send(msg)
        else:
            self.messages.append((conn, msg))

    def push(self, conn, entry: ObjectEntry) -> None:
        """An object's entry for `conn` (a waiter, a holder): batched per peer."""
        pushes = self.pushes.get(conn)
        if pushes is None:
            self.pushes[conn] = [entry]
        else:
            pushes.append(entry)

    def free(self, host_id: str, object_id: str) -> None:
        """Tell a host to delete its copy of an object: batched per host."""
        frees = self.frees.get(host_id)
        if frees is None:
            self.frees[host_id] = [object_id]
        else:
            frees.append(object_id)

    def event(self, event: m.TaskEvent) -> None:
        if self.subscribers:
            self.events.append(event)

    def mark(self, what: str) -> None:
        if self.subscribers:
            self.changed.add(what)

    def take(self, host_conn: Callable[[str], Optional[Any]]) -> list:
        """Messages to send, as (conn, msg), in order, pushes and frees last;
        clears the queue.  `host_conn` maps a host id to its agent's connection
        (None for a host that left: its frees are moot)."""
        out = self.messages
        for conn, entries in self.pushes.items():
            out.extend((conn, m.ObjectsReady(entries=batch)) for batch in batches(entries))
        frees = self.frees
        self.messages, self.pushes, self.frees = [], {}, {}
        for host_id, ids in frees.items():
            conn = host_conn(host_id)
            if conn is not None:
                self.send(conn, m.FreeObjects(object_ids=ids))
        out.extend(self.messages)      # (a free to a host awaiting its agent was held there)
        self.messages = []
        return out

    def take_events(self) -> tuple:
        """(task events, changed marks) since the last call; clears them."""
        events, changed = self.events, self.changed
        self.events, self.changed = [], set()
        return events, changed
