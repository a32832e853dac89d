"""Pipelining in the scheduler's state machine (mixed into SchedulerState).

A busy engine gets one more task of the same resource shape, queued behind
its running one, so it starts the next task the moment it ends instead of a
scheduler round trip later.  The queued task holds no resources until the
scheduler sees its predecessor finish (promotion).  It is taken back
(RevokeTask, acknowledged by TaskRevoked, so it never runs twice) when the
engine blocks in get, or when another engine goes idle with nothing else to
run; a granted revoke that crosses a promotion undoes it.
"""
from __future__ import annotations

import logging

from ..exceptions import TaskCancelledError
from ..protocol import messages as m
from . import policy
from .lifecycle import BLOCKED, CANCELLING, ON_ENGINE, QUEUED, READY, REVOKING, RUNNING

log = logging.getLogger("shoal.scheduler")


class Pipelining:
    """Pipelining of SchedulerState; uses its engines, hosts, tasks and ready queues."""

    def _pipeline(self) -> None:
        # Only engines whose state changed since they were last looked at (they
        # got a task, gave one back, stopped blocking) are candidates: under
        # load this is O(changes), not O(engines), per message.  They are taken
        # one at a time while something is ready: once the queues run dry the
        # rest stay candidates untouched, so a task submitted to a cluster of
        # engines waiting for work costs one look, not one per engine.
        may = self.may_prefetch
        if self.ready and may:
            later = []
            while may and self.ready:
                engine_id = may.pop()
                engine = self.engines.get(engine_id)
                if (engine is None or engine.prefetched is not None or engine.actor_id is not None
                        or engine.state == BLOCKED or engine.task_id not in self.tasks):
                    continue                     # ineligible until its state changes again
                running = self.tasks[engine.task_id]
                if not policy.may_queue_behind(running.spec, running.blocks, engine.ran_gpu):
                    continue
                if not self._prefetch_onto(engine, policy.shape_of(running.spec.resources)):
                    later.append(engine_id)      # nothing of its shape yet: look again later
            may.update(later)
        if not self.queued_on:
            return
        if self.members.idle:
            idle_hosts = self.members.idle_hosts()
            for engine_id in list(self.queued_on):
                engine = self.engines.get(engine_id)
                task = self.tasks.get(engine.prefetched) if engine and engine.prefetched else None
                if task is None:
                    self.queued_on.discard(engine_id)      # promoted, revoked or gone
                elif policy.runs_elsewhere_now(task.spec.resources, idle_hosts):
                    self._revoke(engine)

    def _prefetch_onto(self, engine, shape: tuple) -> bool:
        """Queue the next ready task of `shape` behind the engine's; False if none."""
        queue = self.ready.get(shape)
        queued = False
        while queue:
            task = self.tasks.get(queue.popleft())
            if task is not None and task.state == READY:
                task.engine_id, task.host_id = engine.engine_id, engine.host_id
                self._to(task, QUEUED, "queued behind the engine's running task")
                engine.prefetched = task.spec.task_id
                self.queued_on.add(engine.engine_id)
                log.debug("queue %s behind %s on %s", task.spec.task_id, engine.task_id,
                          engine.engine_id)
                self._execute_on(engine, task, [])
                queued = True
                break
        if queue is not None and not queue:
            del self.ready[shape]
        return queued

    def _revoke(self, engine) -> None:
        task = self.tasks.get(engine.prefetched)
        if task is not None and task.state == QUEUED:
            self._to(task, REVOKING, "asked back from its engine")
            log.debug("revoke %s from %s", task.spec.task_id, engine.engine_id)
            self.out.send(engine.conn, m.RevokeTask(task_id=task.spec.task_id))

    def _on_task_revoked(self, conn, msg: m.TaskRevoked) -> None:
        engine = self.engines.get(self.engine_by_conn.get(conn))
        task = self.tasks.get(msg.task_id)
        if (engine is None or task is None or task.state not in ON_ENGINE
                or task.engine_id != engine.engine_id):
            return
        log.debug("revoke %s from %s: %s", msg.task_id, engine.engine_id, msg.ok)
        if not msg.ok:              # it started: it finishes there
            if task.state == REVOKING:
                self._to(task, QUEUED, "its engine refused to give it back")
            return
        if engine.prefetched == msg.task_id:
            engine.prefetched = None
            self.may_prefetch.add(engine.engine_id)
        elif engine.task_id == msg.task_id:
            # Promoted when its predecessor finished, but the engine had already
            # given it back and skipped it: undo the promotion, and tell the views
            # that the run its "running" event announced did not happen.
            self._revoked(task)
            self._release(task)
            if task.state == CANCELLING:      # cancelled meanwhile, and it never ran
                self._finish_with_error(task, self._error_entry(
                    "", TaskCancelledError(task.spec.task_id)), why="cancelled; its engine "
                    "gave it back before it started")
                self._schedule()
                return
        task.engine_id, task.host_id = None, None
        self._make_ready(task, front=True, why="its engine gave it back")
        self._schedule()

    def _promote(self, engine) -> None:
        """The engine finished its task and started the queued one."""
        task = self.tasks.get(engine.prefetched)
        engine.prefetched = None
        if task is None or task.state not in (QUEUED, REVOKING):
            return
        host = self.hosts.get(engine.host_id)
        task.held = dict(task.spec.resources)
        host.acquire(task.held)
        task.started_at = self.clock()
        log.debug("promote %s on %s", task.spec.task_id, engine.engine_id)
        self._to(task, RUNNING, "promoted: the task before it on its engine ended")
        self._assign(engine, task.spec.task_id)
        self._running(task)
