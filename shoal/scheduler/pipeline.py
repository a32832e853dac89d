"""Pipelining in the scheduler's state machine (mixed into SchedulerState).

A busy engine gets tasks of the same resource shape queued behind its
running one, so it starts the next task the moment one ends instead of a
scheduler round trip later: one task, or, while their functions are known to
be short, up to a few milliseconds of them (policy.QueueRoom), which then
travel as batches.  Queued tasks hold no resources until the scheduler sees
the task before them finish (promotion, in order).  They are taken back
(RevokeTask, acknowledged by TaskRevoked, so none runs twice) when the engine
blocks in get (all of them), or when another engine goes idle with nothing
else to run (the later half); a granted revoke that crosses a promotion
undoes it, and the engine has moved on to the next queued task.
"""
from __future__ import annotations

import logging
from typing import Optional

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
                if (engine is None or engine.actor_id is not None or engine.state == BLOCKED
                        or engine.leased_to is not None
                        or engine.task_id not in self.tasks
                        or not self._queue_room(engine).has_room()):
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
                if engine is None or not engine.queued:
                    self.queued_on.discard(engine_id)      # promoted, revoked or gone
                    continue
                revocable = self._revocable(engine)
                if revocable and policy.runs_elsewhere_now(revocable[-1].spec.resources,
                                                           idle_hosts):
                    for task in revocable[len(revocable) // 2:]:     # the later half
                        self._revoke_task(engine, task)

    def _prefetch_onto(self, engine, shape: tuple) -> bool:
        """Queue ready tasks of `shape` behind the engine's while it has room;
        False if there was none to queue."""
        queue = self.ready.get(shape)
        queued = False
        room = self._queue_room(engine)
        while queue and (not queued or room.has_room()):
            task = self.tasks.get(queue.popleft())
            if task is not None and task.state == READY:
                task.engine_id, task.host_id = engine.engine_id, engine.host_id
                self._to(task, QUEUED, "queued behind the engine's running task")
                engine.queued.append(task.spec.task_id)
                room.add(self.run_times.get(task.spec.func_id))
                self.queued_on.add(engine.engine_id)
                self._execute_on(engine, task, [])
                queued = True
        if queue is not None and not queue:
            del self.ready[shape]
        return queued

    def _queue_room(self, engine) -> policy.QueueRoom:
        run_times, tasks = self.run_times, self.tasks
        running = tasks.get(engine.task_id)
        return policy.QueueRoom(
            run_times.get(running.spec.func_id) if running is not None else None,
            [run_times.get(tasks[t].spec.func_id) if t in tasks else None for t in engine.queued],
            self.queue_max)

    def _revocable(self, engine) -> list:
        """The engine's queued tasks that may still be asked back, in order."""
        return [task for task in map(self.tasks.get, engine.queued)
                if task is not None and task.state == QUEUED]

    def _revoke(self, engine) -> None:
        """Ask back every task queued on the engine."""
        for task in self._revocable(engine):
            self._revoke_task(engine, task)

    def _revoke_task(self, engine, task) -> None:
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
        if msg.task_id in engine.queued:
            # Not a candidate again until its next promotion: what it gave back
            # goes to an engine that has nothing to run.
            engine.queued.remove(msg.task_id)
        elif engine.task_id == msg.task_id:
            # Promoted when its predecessor finished, but the engine had already
            # given it back and skipped it: undo the promotion, and tell the views
            # that the run its "running" event announced did not happen.  The
            # engine went on to the next queued task, if there is one.
            self._revoked(task)
            self._release(task)
            if engine.queued:
                self._promote(engine)
            if task.state == CANCELLING:      # cancelled meanwhile, and it never ran
                self._finish_with_error(task, self._error_entry(
                    "", TaskCancelledError(task.spec.task_id)), why="cancelled; its engine "
                    "gave it back before it started")
                self._schedule()
                return
        task.engine_id, task.host_id = None, None
        self._make_ready(task, front=True, why="its engine gave it back")
        self._schedule()

    def _promote(self, engine, carried: Optional[dict] = None) -> None:
        """The engine finished its task and started the first queued one, which
        takes over `carried`, the resources the finished one held, if given
        (SchedulerState._hand_over_or_release: the engine is busy still)."""
        task = self.tasks.get(engine.queued.popleft())
        if task is None or task.state not in (QUEUED, REVOKING):
            if carried is not None:
                self._nobody_takes_over(engine, carried)
            return
        task.started_at = self.clock()
        self._to(task, RUNNING, "promoted: the task before it on its engine ended")
        if carried is not None:           # (queued behind it: the same resources)
            task.held = carried
            engine.task_id = task.spec.task_id
            self.may_prefetch.add(engine.engine_id)
        else:
            task.held = dict(task.spec.resources)
            if engine.leased_to is None:
                self.hosts.get(engine.host_id).acquire(task.held)   # (a lease held it)
            self._assign(engine, task.spec.task_id)
        self._running(task)
