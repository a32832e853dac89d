"""Engine leases, in the scheduler's state machine (mixed into SchedulerState).

A task's round trip through the scheduler crosses three processes (driver,
scheduler, engine); one the driver sends an engine itself crosses two, as a
straight actor call does.  So, as Ray lends workers to task owners, an idle
pool engine whose last task came from a driver on its machine (one with a
reply channel that takes leases) is lent to that driver when nothing else
waits to run (EngineLease).  The driver then sends it its plain tasks itself
(core/leases.py) and us each one's submission as the record of a task
running there (SubmitTask.direct_to), which we own as any other: its story,
its refs, retries when the engine dies, cancel.  The engine reports the end
as for any task, maybe before the record comes (kept as an early finish).

While lent the engine is busy to placement, and its CPU is held: by the
lease while the engine waits, by the task while one runs (so a task that
blocks in get lends it, as any does).  As soon as anything else waits to run
the lease is asked back (RevokeLease); the driver sends LeaseReturned after
the records of all it sent there, so every task on the engine is known when
the lease ends.  A lease also ends with its engine or its driver.
"""
from __future__ import annotations

import logging

from ..protocol import messages as m
from .actors import EARLY_KEPT
from .lifecycle import BLOCKED, BUSY, IDLE, QUEUED, RUNNING, STOPPING

log = logging.getLogger("shoal.scheduler")
LEASED = {"CPU": 1.0}        # what a lease holds, and the only request a leased engine runs


class Leasing:
    """Engine leases of SchedulerState; uses its engines, hosts, peers and tasks."""

    def _init_leases(self) -> None:
        self.leased: dict = {}          # engine id -> the driver connection it is lent to
        self.revoking: set = set()      # engine ids whose lease was asked back
        self.lease_wanted: dict = {}    # engine id -> the driver whose task just ended there
        # task id -> whether it waits in get, said by its engine before its record came
        self.early_blocked: dict = {}   # (blocked, when)

    # ------------------------------------------------------------------ lending
    def _may_want_lease(self, task, engine) -> None:
        """A plain task ended on a pool engine: its driver may get the engine
        (at the end of the placement pass, if nothing else waits) if it has no
        other task going (a burst is the scheduler's to spread)."""
        spec = task.spec
        if not task.direct or task.leased or spec.resources != LEASED or spec.placement \
                or spec.engine_id or spec.max_calls or spec.generator is not None \
                or task.owner in self.task_table.tasks_of:
            return
        peer = self.peers.get(task.owner)
        if peer is not None and peer.leases:
            self.lease_wanted[engine.engine_id] = task.owner

    def _lend_or_revoke(self) -> None:
        """After a placement pass: lend the engines drivers want if nothing
        waits; ask every lease back if something does."""
        if self._work_waits():
            self.lease_wanted.clear()
            for engine_id, owner in self.leased.items():
                if engine_id not in self.revoking:
                    self.revoking.add(engine_id)
                    self.out.send(owner, m.RevokeLease(engine_id=engine_id))
            return
        wanted, self.lease_wanted = self.lease_wanted, {}
        for engine_id, owner in wanted.items():
            engine = self.engines.get(engine_id)
            host = self.hosts.get(engine.host_id) if engine is not None else None
            if (engine is None or host is None or engine.state != IDLE or engine.queued
                    or engine.ran_gpu or owner not in self.peers
                    or host.available.get("CPU", 0.0) < LEASED["CPU"]):
                continue
            host.acquire(LEASED)
            engine.leased_to = owner
            self.leased[engine_id] = owner
            self.members.engine_to(engine, BUSY)
            log.debug("lend %s to %s", engine_id, self.peers[owner].client_id)
            self.out.send(owner, m.EngineLease(engine_id=engine_id))

    def _back_to_lease(self, engine, task) -> None:
        """A task on a lent engine ended: its CPU is the lease's again (taken
        back from the host if the task had lent it, blocked), and the engine
        waits for the driver's next task."""
        lent = LEASED["CPU"] - task.held.get("CPU", 0.0)
        host = self.hosts.get(engine.host_id)
        if lent > 0 and host is not None:
            host.acquire({"CPU": lent})
        task.held, task.gpu_ids = {}, []
        engine.task_id = None
        if engine.state == BLOCKED:
            self.members.engine_to(engine, BUSY)

    def _drop_early_blocked(self, now: float) -> None:
        """Waits in get said of tasks whose record never came (their driver
        died sending it)."""
        for task_id in [t for t, (_, at) in self.early_blocked.items() if now - at > EARLY_KEPT]:
            del self.early_blocked[task_id]

    def _lease_waits(self, engine_id) -> None:
        """A task on a lent engine ended without its value going to its driver
        (it failed, or was cancelled): say the engine waits, as the value
        would have (the driver sends one task at a time)."""
        engine = self.engines.get(engine_id)
        if engine is not None and engine.leased_to is not None and engine.task_id is None \
                and engine_id not in self.revoking:
            self.out.send(engine.leased_to, m.EngineLease(engine_id=engine_id))

    def _work_waits(self) -> bool:
        """Whether any task or actor waits for an engine, or is queued behind
        another task (an idle engine would take some: pipeline.py)."""
        if self.ready or self.pinned or self.pending_actors or self.pending_groups:
            return True
        engines = self.engines
        return any(engines[e].queued for e in self.queued_on if e in engines)

    # ------------------------------------------------------------------ ending
    def _on_lease_returned(self, conn, msg: m.LeaseReturned) -> None:
        engine = self.engines.get(msg.engine_id)
        if engine is not None and engine.leased_to is conn:
            self._end_lease(engine)
            self._schedule()

    def _end_lease(self, engine) -> None:
        """The lease ends (returned, its driver left, its engine died or is
        stopped): what a waiting engine held goes back to its host, and the
        engine to the pool (a gone or stopping one stays out); one running a
        task finishes it as any engine."""
        self.leased.pop(engine.engine_id, None)
        self.revoking.discard(engine.engine_id)
        engine.leased_to = None
        if engine.task_id is None:
            host = self.hosts.get(engine.host_id)
            if host is not None:
                host.release(LEASED)
            self._assign(engine, None)

    def _unlend(self, engine) -> None:
        """End a lease without the driver's word (its engine is being
        stopped), and ask the driver to send it nothing more."""
        owner = engine.leased_to
        self._end_lease(engine)
        if owner in self.peers:
            self.out.send(owner, m.RevokeLease(engine_id=engine.engine_id))

    def _leases_of_gone(self, conn) -> None:
        """A driver left: its leases end."""
        for engine_id in [e for e, owner in self.leased.items() if owner is conn]:
            engine = self.engines.get(engine_id)
            if engine is not None:
                self._end_lease(engine)

    # ------------------------------------------------------------------ tasks sent there
    def _leased_task(self, task) -> None:
        """The record of a task its owner sent the engine it leases: it runs
        there (or queues behind the owner's task before it), or ran (its
        TaskFinished came first), or its engine is gone."""
        engine_id = task.spec.direct_to
        engine = self.engines.get(engine_id)
        if engine is not None and engine.leased_to is not task.owner:
            if engine.state != STOPPING:
                raise ValueError(f"task {task.spec.task_id} was sent to engine {engine_id}, "
                                 "which is not lent to its owner")
            engine = None            # being killed (a task of its was cancelled with force)
        task.spec = m.replace(task.spec, direct_to=None)      # a retry is placed as any
        early = self._take_early(task.spec.task_id)
        blocked = self.early_blocked.pop(task.spec.task_id, (False,))[0] if self.early_blocked \
            else False
        self._leased_task_with(task, engine, engine_id, early, blocked)
        self._early_handled(early)

    def _leased_task_with(self, task, engine, engine_id: str, early, blocked: bool) -> None:
        spec = task.spec
        task.engine_id, task.direct, task.leased = engine_id, True, True
        task.started_at = self.clock()
        if engine is None:
            self._leased_engine_gone(task, engine_id, early)
            return
        task.host_id = engine.host_id
        if engine.task_id is None:
            task.held = dict(LEASED)          # the lease's CPU is the task's while it runs
            self._to(task, RUNNING, "its owner sent it to the engine it leases")
            self._assign(engine, spec.task_id)
            self._running(task)
            if blocked and early is None:     # it waits in get: its CPU is lent meanwhile
                self._engine_blocked(engine, task, True)
        else:                                 # behind the owner's task before it, in order
            self._to(task, QUEUED, "its owner sent it to the engine it leases, "
                                   "behind its task before")
            engine.queued.append(spec.task_id)
        if early is not None:
            self._on_task_finished(early.conn, early.message(self.clock()))

    def _leased_engine_gone(self, task, engine_id: str, early) -> None:
        """Its engine died (all it said has been read): it ran, or it may have
        been running when it died, as for a task we sent there."""
        self._to(task, RUNNING, f"its owner sent it to engine {engine_id}, which is gone")
        if early is not None:
            msg = early.message(self.clock())
            self._complete(task, msg.results, msg.nested, "failed" if msg.failed else "finished",
                           delivered_to=self._delivered_to(task, msg))
        else:            # it may have been running when its engine died: as for any task
            self._crashed(task, engine_id, f"engine {engine_id}, which it was sent to")
