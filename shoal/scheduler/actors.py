"""Actors in the scheduler's state machine (mixed into SchedulerState); the
actors themselves, their states and stories live in actor_table.py.

An actor lives in an engine of its own, started for it by a host agent.  Its
creation is a task (method "__init__") whose spec is kept for restarts.
Method calls are tasks with an actor_id: each caller's calls wait in that
caller's queue and go to the actor's engine in submission order, as soon as
their arguments are ready; the engine pipelines them.

Lifetime: a non-detached actor dies with its owner or when the last handle
anywhere is gone (handles are counted like objects, under the actor id);
a detached actor lives until killed or the cluster stops.  When the actor's
engine dies, it restarts (re-running __init__) up to max_restarts times;
calls it was running are retried up to max_task_retries, else fail with
ActorDiedError.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Optional

from ..exceptions import ActorDiedError, TaskCancelledError
from ..protocol import messages as m
from ..protocol.messages import ObjectEntry
from ..protocol.serialization import deserialize
from . import policy, views
from .actor_table import (ALIVE, CREATING, DEAD, RESTARTING, STARTING, WAITING_FOR_HOST, Actor,
                          ActorTable)
from .lifecycle import CANCELLING, FAILED, FINISHED, READY, RUNNING, WAITING

log = logging.getLogger("shoal.scheduler")
EARLY_KEPT = 60.0          # seconds a straight call's early TaskFinished waits for its submission


class EarlyFinish:
    """A straight call's (or leased task's) TaskFinished that came before its
    caller's submission (two sockets: either may be read first)."""
    __slots__ = ("conn", "msg", "at", "push", "pinned")

    def __init__(self, conn, msg: m.TaskFinished, at: float, pinned: list) -> None:
        self.conn, self.msg, self.at = conn, msg, at
        self.push = False          # the straight send failed, or the engine is gone: we push
        # The refs inside its results, pinned until it is handled: the engine
        # drops its own refs to them next, before the submission may come.
        self.pinned = pinned

    def message(self, now: float) -> m.TaskFinished:
        """The report as if it came now: its run ended as much longer ago as it
        waited here (the timeline places it), and if we push, not delivered."""
        return m.replace(self.msg, ended_ago=self.msg.ended_ago + max(0.0, now - self.at),
                         delivered=self.msg.delivered and not self.push)


class ActorScheduling:
    """Actor handling of SchedulerState; uses its tasks, objects and hosts."""

    def _init_actors(self) -> None:
        self.early_finishes: dict = {}      # task id -> EarlyFinish
        self.early_children: dict = {}      # unknown parent's task id -> [(child id, when)]
        # early child's id -> output of it and its descendants, held until its parent
        # comes: [(TaskOutput, where it would go now)]
        self.early_outputs: dict = {}
        self.actor_table = table = ActorTable(lambda: self.task_table.stimulus,
                                              self.task_table.illegal)
        # The ActorTable owns these; the names are for reading them.
        self.actors, self.named_actors, self.pending_actors = (table.actors, table.named,
                                                               table.pending)

    # ------------------------------------------------------------------ creation
    def _actor_submitted(self, conn, task) -> None:
        """A creation task arrived (its deps are registered, maybe pending)."""
        spec = task.spec
        options = spec.actor_options or {}
        actor = Actor(spec.actor_id, spec, conn, options)
        refused = self.actor_table.add(actor)
        handle = self.directory.make(spec.actor_id)
        handle.entry = ObjectEntry(spec.actor_id)       # "ready": frees like an object
        self.directory.hold(handle, conn, +1)
        if refused is not None:
            self._actor_dead(actor, refused)

    def _actor_creation_ready(self, task) -> None:
        actor = self.actors.get(task.spec.actor_id)
        if actor is not None and actor.state in WAITING_FOR_HOST:
            self.actor_table.wait_for_host(actor)

    def _place_actors(self) -> None:
        hosts = list(self.hosts.values())
        for _ in range(len(self.pending_actors)):
            actor = self.actors.get(self.pending_actors.popleft())
            if actor is None or actor.state not in WAITING_FOR_HOST:
                continue
            request = actor.creation.resources            # what scheduling needs
            why = self._placement_error(actor.creation)
            if why is not None:
                self._actor_dead(actor, f"it cannot be scheduled: {why}")
                continue
            host = self._choose_placed_host(actor.creation, request, hosts, lambda h: True, None)
            held = actor.options.get("held_resources") or {}
            gpus = policy.allocate_gpus(host.gpus, held.get("GPU", 0)) if host else None
            if host is None or gpus is None:
                self.actor_table.wait_for_host(actor)
                if not policy.feasible_anywhere(request, hosts) and hosts \
                        and not actor.warned_infeasible and actor.owner in self.peers:
                    actor.warned_infeasible = True
                    self.out.send(actor.owner, m.Notice(text=(
                        f"actor {actor.options.get('class_name')} ({actor.actor_id}) needs "
                        f"{request}, which no host in the cluster has; it waits until a host "
                        f"that can run it joins.")))
                continue
            actor.pool = self._pool(actor.creation, request, host)
            host.acquire(held, gpus, actor.pool)
            actor.held, actor.gpu_ids, actor.host_id = dict(held), gpus, host.host_id
            self.actor_table.to(actor, STARTING, f"placed on host {host.host_id}")
            self.members.start_engines(host, 1, actor_id=actor.actor_id)

    def _actor_engine_joined(self, engine) -> None:
        actor = self.actors.get(engine.actor_id)
        if actor is None or actor.state != STARTING:
            host = self.hosts.get(engine.host_id)
            if host is not None:         # a leftover: the actor died meanwhile
                self.out.send(host.conn, m.StopEngine(engine_id=engine.engine_id))
            return
        actor.engine_id = engine.engine_id
        self.actor_table.to(actor, CREATING, "its engine joined: its constructor runs")
        task = self.tasks.get(actor.creation.task_id)
        if task is None:                 # a restart: the creation runs again
            task = self._new_task(actor.creation, actor.owner,
                                  again=f"its actor restarts ({actor.restarts} so far)")
            self._to(task, READY, "its arguments are ready")
        task.engine_id, task.host_id = engine.engine_id, engine.host_id
        task.started_at = self.clock()
        self._to(task, RUNNING, "its actor's engine joined")
        self._execute_on(engine, task, actor.gpu_ids)

    def _actor_created(self, task, msg: m.TaskFinished) -> None:
        actor = self.actors.get(task.spec.actor_id)
        del self.tasks[task.spec.task_id]
        for oid in task.spec.return_ids:          # the creation's result object is internal
            self.objects.pop(oid, None)
        self._to(task, FAILED if msg.failed else FINISHED,
                 "its constructor raised" if msg.failed else "its actor is alive")
        self._record(task, "failed" if msg.failed else "finished")
        if actor is None or actor.state != CREATING:
            return
        if msg.failed:
            entry = msg.results[0]
            self._actor_dead(actor, "its constructor raised an exception", error=entry.inline)
            return
        self.actor_table.to(actor, ALIVE, "its constructor returned")
        self.out.mark("cluster")
        log.info("actor %s (%s) is alive on engine %s", actor.actor_id,
                 actor.options.get("class_name"), actor.engine_id)
        self._pump(actor)

    # ------------------------------------------------------------------ straight calls
    def _early_finish(self, conn, msg: m.TaskFinished) -> None:
        """A straight call finished before its submission came: keep it, and
        what its results contain."""
        pinned = [oid for ids in msg.nested for oid in ids if self.directory.pin(oid)]
        self.early_finishes[msg.task_id] = EarlyFinish(conn, msg, self.clock(), pinned)

    def _take_early(self, task_id: str):
        """The early finish of `task_id`, if one came: handle it (its pins stay
        until _early_handled)."""
        return self.early_finishes.pop(task_id, None)

    def _early_handled(self, early) -> None:
        if early is not None:
            for oid in early.pinned:
                self.directory.unpin(oid)

    def _early_undelivered(self, conn, task_id: str) -> None:
        early = self.early_finishes.get(task_id)
        if early is not None and early.conn is conn:
            early.push = True

    def _early_engine_gone(self, conn) -> None:
        for early in self.early_finishes.values():
            if early.conn is conn:
                early.push = True

    def _early_child(self, task) -> None:
        """A task whose parent we do not know yet: a straight call submits
        tasks as it runs, maybe before its own submission comes.  Until it
        comes, what it and its descendants print is held (it prints where its
        parent does)."""
        self.early_children.setdefault(task.spec.parent_task_id, []).append(
            (task.spec.task_id, self.clock()))
        task.provisional = task.spec.task_id

    def _hold_early_output(self, task, msg: m.TaskOutput) -> None:
        self.early_outputs.setdefault(task.provisional, []).append(
            (msg, task.origin or (task.owner, None)))

    def _adopt_early_children(self, parent) -> None:
        """`parent` came: its early children (and theirs) print where it does,
        what they printed meanwhile first."""
        origin = parent.origin or (parent.owner, parent.spec.task_id)
        for child_id, _ in self.early_children.pop(parent.spec.task_id, ()):
            child = self.tasks.get(child_id)
            if child is not None:
                parent.children.add(child_id)
                self._reroot(child, origin)
            else:                       # it ended: its live descendants, by their mark
                for task in self._marked(child_id):
                    task.origin, task.provisional = origin, None
            for msg, _ in self.early_outputs.pop(child_id, ()):
                self._route_output(msg, origin)

    def _marked(self, early_id: str) -> list:
        return [task for task in self.tasks.values() if task.provisional == early_id]

    def _reroot(self, task, origin: tuple) -> None:
        was = task.origin or (task.owner, task.spec.task_id)
        task.origin = origin
        task.provisional = None
        for child_id in task.children:
            child = self.tasks.get(child_id)
            if child is not None and child.origin == was:
                self._reroot(child, origin)

    def _drop_early(self, now: float) -> None:
        """Early finishes whose submission never came (its caller died
        sending it), and early children whose parent never came (it had ended)."""
        for task_id in [t for t, e in self.early_finishes.items() if now - e.at > EARLY_KEPT]:
            self._early_handled(self.early_finishes.pop(task_id))
        for parent_id in [p for p, kids in self.early_children.items()
                          if now - kids[-1][1] > EARLY_KEPT]:
            for child_id, _ in self.early_children.pop(parent_id):
                for task in self._marked(child_id):     # its origin is what it is now
                    task.provisional = None
                for msg, where in self.early_outputs.pop(child_id, ()):
                    self._route_output(msg, where)      # where it would have gone

    # ------------------------------------------------------------------ calls
    def _actor_call_submitted(self, conn, task) -> None:
        actor = self.actors.get(task.spec.actor_id)
        if actor is None or actor.state == DEAD:
            self._finish_with_error(task, self._actor_died_entry(actor, task.spec.actor_id))
            return
        task.retries_left = actor.options.get("max_task_retries", 0)
        if _sent_straight(task.spec):
            task.straight = True            # (until _straight_call finds its engine gone)
        else:
            actor.queues.setdefault(conn, deque()).append(task.spec.task_id)

    def _actor_call_ready(self, task) -> None:
        actor = self.actors.get(task.spec.actor_id)
        if actor is None:
            return
        if task.straight and task.engine_id is None:
            self._straight_call(actor, task)
        else:
            self._pump(actor)

    def _straight_call(self, actor: Actor, task) -> None:
        """A call its caller sent to the actor's engine itself (direct_to; see
        core/direct_calls.py): it runs there already, or ran (its TaskFinished
        may have come first, kept in early_finishes), or its engine is gone."""
        spec = task.spec
        early = self._take_early(spec.task_id)
        self._straight_call_with(actor, task, early)
        self._early_handled(early)

    def _straight_call_with(self, actor: Actor, task, early) -> None:
        spec = task.spec
        engine = self.engines.get(spec.direct_to)
        task.engine_id, task.host_id = spec.direct_to, actor.host_id
        task.started_at = self.clock()
        task.direct = True
        actor.inflight[spec.task_id] = task
        if actor.state == ALIVE and actor.engine_id == spec.direct_to and engine is not None:
            self._to(task, RUNNING, "its caller sent it to its actor's engine")
            actor.straight[task.owner] = actor.straight.get(task.owner, 0) + 1
            if early is not None:
                self._on_task_finished(early.conn, early.message(self.clock()))
            return
        # The engine it went to is gone, and all it said has been read.
        task.straight = False
        self._to(task, RUNNING, f"its caller sent it to engine {spec.direct_to}, which is gone")
        if early is not None:           # ... after running it
            self._actor_call_finished(task, early.message(self.clock()))
            return
        # As for a call sent there by us: it was on its way when the engine died.
        actor.inflight.pop(spec.task_id)
        if actor.state != DEAD and task.retries_left != 0:
            task.retries_left -= 1
            task.engine_id = task.host_id = None
            self._to(task, READY, f"its actor's engine {spec.direct_to} was gone; retried, "
                                  f"{task.retries_left} retries left")
            actor.queues.setdefault(task.owner, deque()).append(spec.task_id)
            self._pump(actor)
        else:
            self._finish_with_error(task, self._actor_died_entry(
                actor, actor.actor_id, f"its engine {spec.direct_to} died before this call "
                "finished (max_task_retries exhausted)" if actor.state != DEAD else ""))

    def _pump(self, actor: Actor) -> None:
        """Send each caller's ready calls, in order, to the actor's engine."""
        if actor.state != ALIVE:
            return
        engine = self.engines.get(actor.engine_id)
        for caller, queue in actor.queues.items():
            if actor.straight and actor.straight.get(caller):
                continue           # behind its calls sent straight: they may not be there yet
            while queue:
                task = self.tasks.get(queue[0])
                if task is None:
                    queue.popleft()
                    continue
                if task.state != READY:
                    break                  # its arguments are pending: later calls wait
                queue.popleft()
                task.engine_id, task.host_id = actor.engine_id, actor.host_id
                task.started_at = self.clock()
                self._to(task, RUNNING, "sent to its actor")
                actor.inflight[task.spec.task_id] = task
                self._execute_on(engine, task, actor.gpu_ids)

    def _actor_call_finished(self, task, msg: m.TaskFinished) -> None:
        actor = self.actors.get(task.spec.actor_id)
        if actor is not None:
            actor.inflight.pop(task.spec.task_id, None)
            if task.straight:
                task.straight = False
                left = actor.straight.pop(task.owner, 1) - 1
                if left:
                    actor.straight[task.owner] = left
                elif actor.queues.get(task.owner):
                    self._pump(actor)           # its relayed calls were held behind
        delivered_to = self._delivered_to(task, msg)
        # Cancelled even if it ran to the end (a plain actor's call), unless its
        # owner has the value already: then the cancel came too late (as in Ray,
        # cancelling a finished task does nothing).
        if task.state == CANCELLING and delivered_to is None:
            self._finish_with_error(task, self._error_entry("", TaskCancelledError(task.spec.task_id)),
                                    why="cancelled while it ran")
        else:
            self._complete(task, msg.results, msg.nested, "failed" if msg.failed else "finished",
                           delivered_to=delivered_to)
        if actor is not None and actor.out_of_scope:
            self._maybe_retire(actor)

    def _cancel_actor_call(self, task) -> None:
        actor = self.actors.get(task.spec.actor_id)
        if task.state in (WAITING, READY):
            self._finish_with_error(task, self._error_entry("", TaskCancelledError(task.spec.task_id)),
                                    cancelled=True, why="cancelled")
        elif actor is not None and task.spec.task_id in actor.inflight:
            if task.state == RUNNING:
                self._to(task, CANCELLING, "cancelled while its actor runs it: interrupted")
            engine = self.engines.get(actor.engine_id)
            if engine is not None:          # the engine cancels it if it has not started, or is async
                self.out.send(engine.conn, m.InterruptTask(task_id=task.spec.task_id))

    # ------------------------------------------------------------------ endings
    def _actor_engine_lost(self, engine) -> None:
        actor = self.actors.get(engine.actor_id)
        if actor is None or actor.engine_id != engine.engine_id:
            return
        actor.engine_id = None
        self._release_actor_resources(actor)
        creation = self.tasks.get(actor.creation.task_id)
        if creation is not None and actor.state == CREATING:
            creation.engine_id = None
            self._to(creation, READY, f"its actor's engine {engine.engine_id} died while "
                                      f"creating it")
        retry, fail = [], []
        for task in actor.inflight.values():
            task.straight = False
            (retry if task.retries_left != 0 and task.state != CANCELLING else fail).append(task)
        actor.inflight.clear()
        actor.straight.clear()
        for task in reversed(retry):        # back to the front of their queues, in order
            task.retries_left -= 1
            task.engine_id = None
            self._to(task, READY, f"its actor's engine {engine.engine_id} died running it; "
                                  f"retried, {task.retries_left} retries left")
            actor.queues.setdefault(task.owner, deque()).appendleft(task.spec.task_id)
        if actor.state == DEAD:
            return
        max_restarts = actor.options.get("max_restarts", 0)
        if (max_restarts == -1 or actor.restarts < max_restarts) and not actor.out_of_scope:
            actor.restarts += 1
            self.actor_table.to(actor, RESTARTING, f"its engine {engine.engine_id} died; "
                                                   f"restart {actor.restarts} of {max_restarts}")
            log.warning("actor %s lost its engine %s; restarting it (%d so far)",
                        actor.actor_id, engine.engine_id, actor.restarts)
            for task in fail:
                self._finish_with_error(task, self._actor_died_entry(
                    actor, actor.actor_id, "it died while running this call (max_task_retries "
                    "exhausted); the actor is restarting"))
            self.actor_table.wait_for_host(actor)
        else:
            for task in fail:
                actor.inflight[task.spec.task_id] = task      # fail with the rest below
            self._actor_dead(actor, f"its engine {engine.engine_id} (pid {engine.pid}) died and "
                                    f"no restarts were left (max_restarts={max_restarts})")

    def _actor_dead(self, actor: Actor, cause: str, error: Optional[bytes] = None) -> None:
        """The actor is gone for good: fail what it owes, free what it holds."""
        if actor.state == DEAD:
            return
        actor.death_cause, actor.death_error = cause, error
        self.actor_table.to(actor, DEAD, cause)
        self.out.mark("cluster")
        log.info("actor %s is dead: %s", actor.actor_id, cause)
        self._release_actor_resources(actor)
        if actor.engine_id is not None:
            engine = self.engines.get(actor.engine_id)
            host = self.hosts.get(engine.host_id) if engine else None
            if host is not None:
                self.out.send(host.conn, m.StopEngine(engine_id=actor.engine_id))
        entry = self._actor_died_entry(actor, actor.actor_id)
        owed = list(actor.inflight.values())
        owed += [self.tasks[t] for q in actor.queues.values() for t in q if t in self.tasks]
        actor.inflight.clear()
        actor.straight.clear()
        actor.queues.clear()
        for task in owed:
            self._finish_with_error(task, entry)
        creation = self.tasks.pop(actor.creation.task_id, None)
        if creation is not None:
            self._to(creation, FAILED, f"its actor died: {cause}")
        for oid in actor.creation.return_ids:
            self.objects.pop(oid, None)
        for oid in (*actor.creation.deps, *actor.creation.nested):
            self.directory.unpin(oid)

    def _release_actor_resources(self, actor: Actor) -> None:
        host = self.hosts.get(actor.host_id)
        if host is not None:
            host.release(actor.held, actor.gpu_ids, actor.pool)
        actor.held, actor.gpu_ids, actor.pool = {}, [], None

    def _actor_died_entry(self, actor: Optional[Actor], actor_id: str, why: str = "") -> ObjectEntry:
        if actor is None:
            return self._error_entry("", ActorDiedError(f"actor {actor_id} does not exist"))
        cause = deserialize(actor.death_error) if actor.death_error else None
        name = actor.options.get("class_name", "actor")
        err = ActorDiedError(f"the actor {name} ({actor_id}) died: {why or actor.death_cause}"
                             + (f"\n{cause}" if cause is not None else ""))
        err.cause = cause
        return self._error_entry("", err)

    def _actor_handles_gone(self, actor_id: str) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None and not actor.options.get("detached"):
            actor.out_of_scope = True
            self._maybe_retire(actor)

    def _maybe_retire(self, actor: Actor) -> None:
        if actor.state != DEAD and not actor.inflight and not any(actor.queues.values()):
            self._actor_dead(actor, "all handles to it went out of scope")

    def _owner_gone(self, conn) -> None:
        """The creator left.  A handle that reached another process (a task
        returned it, or passed it on) keeps the actor: ownership moves to a
        live holder (a driver first), or, while only objects still contain
        the handle, to nobody until the last handle goes."""
        for actor in list(self.actors.values()):
            if actor.owner is not conn or actor.options.get("detached"):
                continue
            handle = self.objects.get(actor.actor_id)
            holders = [c for c in (handle.holders if handle else ()) if c is not conn
                       and c in self.peers]
            if holders:
                holders.sort(key=lambda c: self.peers[c].kind != "driver")
                actor.owner = holders[0]
                log.info("actor %s: its owner left; %s owns it now", actor.actor_id,
                         views.describe_holder(self.peers.get(actor.owner)))
            elif handle is not None and handle.pins > 0:
                actor.owner = None
            else:
                self._actor_dead(actor, "its owner (the driver or task that created it) exited")

    def _on_kill_actor(self, conn, msg: m.KillActor) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None or actor.state == DEAD:
            return
        if msg.no_restart or actor.engine_id is None:
            self._actor_dead(actor, msg.reason or "it was killed with shoal.kill()")
        else:                               # a restartable kill: as if the engine crashed
            engine = self.engines.get(actor.engine_id)
            host = self.hosts.get(engine.host_id) if engine else None
            if host is not None:
                self.out.send(host.conn, m.StopEngine(engine_id=actor.engine_id, restart=True))

    # ------------------------------------------------------------------ state
    def _query_get_actor(self, args: dict):
        key = (args.get("namespace") or "default", args["name"])
        actor = self.actor_table.by_name(*key)
        if actor is None:
            raise LookupError(f"Failed to look up actor with name {key[1]!r} in namespace "
                              f"{key[0]!r}: no live actor has that name (it was never created, "
                              f"it died, or it lives in another namespace).")
        return {"actor_id": actor.actor_id, "options": actor.options}

    def _query_list_actors(self, args: dict):
        return [views.actor_info(a, self.engines).as_dict() for a in self.actors.values()]


def _sent_straight(spec: m.SubmitTask) -> bool:
    """Whether its caller sent this call to the engine itself (a call with refs
    to resolve never goes so: direct_to on one is ignored, and it is relayed)."""
    return (spec.direct_to is not None and not spec.deps and not spec.nested
            and spec.generator is None)
