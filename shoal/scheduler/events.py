"""The event stream in the scheduler's state machine (mixed into SchedulerState):
what widgets and other live views subscribe to.  Nothing is kept while nobody
listens, so the hot path pays nothing for it."""
from __future__ import annotations

from ..protocol import messages as m
from .lifecycle import HOLDING


class EventStream:
    """Event handling of SchedulerState; uses its history, tasks and peers."""

    def _on_subscribe_events(self, conn, msg: m.SubscribeEvents) -> None:
        if not msg.subscribe:
            self.event_subscribers.discard(conn)
            return
        self.event_subscribers.add(conn)
        running = [m.TaskEvent(t.spec.task_id, t.spec.name, "running", t.engine_id, t.host_id,
                               t.started_at, None)
                   for t in self.tasks.values() if t.state in HOLDING]
        self.out.send(conn, m.Events(tasks=list(self.history) + running, objects_changed=True,
                                  cluster_changed=True, snapshot=True))

    def take_events(self) -> list:
        """The batch of events for each subscriber since the last call, as
        (conn, msg); the I/O shell calls this on a timer (the throttle)."""
        events, changed = self.out.take_events()
        if not self.event_subscribers or not (events or changed):
            return []
        msg = m.Events(tasks=events, objects_changed="objects" in changed,
                       cluster_changed="cluster" in changed)
        return [(conn, msg) for conn in self.event_subscribers if conn in self.peers]
