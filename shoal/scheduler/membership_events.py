"""Peers, hosts and engines coming and going, in the scheduler's state machine
(mixed into SchedulerState): hellos and host registrations, closed connections
(a peer, an engine, a host, or a restartable host's agent), engines lost,
retired or replaced, scaling a host, and the heartbeats that find silent hosts.
The tables themselves are the Membership's (membership.py); this is what the
rest of the scheduler does about each change: retry or fail tasks, restart
actors, rebuild objects, release what a departed peer held."""
from __future__ import annotations

import logging
from typing import Optional

from ..exceptions import WorkerCrashedError
from ..protocol import messages as m
from . import views
from .lifecycle import CANCELLING, HOLDING, IDLE, ON_ENGINE, QUEUED, REVOKING, RUNNING
from .membership import Engine, Host, Peer
from .outbox import AwaitingAgent
from .tasks import Task

log = logging.getLogger("shoal.scheduler")
# How long a departed owner's task that may have sent it its results straight
# (its TaskFinished on the way) may take to say so before it is cancelled.
ORPHAN_GRACE = 1.0


class MembershipEvents:
    """Joining and leaving, for SchedulerState; uses its components and glue."""

    # ------------------------------------------------------------------ joining
    def _on_hello(self, conn, msg: m.ClientHello) -> None:
        self.peers[conn] = Peer(msg.kind, msg.client_id, msg.pid, msg.hostname,
                                msg.host_id, msg.engine_id, msg.actor_id)
        self.out.send(conn, m.Welcome(
            cluster_id=self.cluster_id, session_dir=self.session_dir,
            hosts=[self._host_info(h) for h in self.hosts.values()]))
        if msg.kind == "engine":
            host = self.hosts.get(msg.host_id)
            if host is None:
                raise ValueError(f"engine {msg.engine_id} names unknown host {msg.host_id}")
            engine = Engine(msg.engine_id, msg.host_id, conn, msg.pid, actor_id=msg.actor_id)
            self.members.add_engine(engine)
            log.info("engine %s (pid %s) joined on host %s", msg.engine_id, msg.pid, msg.host_id)
            if msg.actor_id is not None:
                self._actor_engine_joined(engine)
                return
            self.out.mark("cluster")
        self._schedule()

    def _host_info(self, h: Host) -> m.HostInfo:
        return m.HostInfo(h.host_id, h.hostname, h.store_dir, h.spill_dir, h.store_limit,
                          h.object_address)

    def _on_register_host(self, conn, msg: m.RegisterHost) -> None:
        self.peers[conn] = Peer("agent", msg.host_id, msg.pid, msg.hostname, msg.host_id)
        old = self.hosts.get(msg.host_id)
        if old is not None and isinstance(old.conn, AwaitingAgent):
            self._agent_restarted(old, conn, msg)
            return
        resources = {k: float(v) for k, v in msg.resources.items() if v}
        host = Host(msg.host_id, conn, msg.hostname, dict(resources), dict(resources),
                    {gpu: 1.0 for gpu in msg.gpu_ids}, msg.store_dir, msg.spill_dir,
                    msg.store_limit, msg.object_address, msg.pid)
        host.starting = host.base_engines          # its agent starts them by itself
        host.restartable = msg.restartable
        self.members.add_host(conn, host)
        log.info("host %s (%s) joined with %s", msg.host_id, msg.hostname, resources)
        for task in self._all_ready():
            task.warned_infeasible = False
        self._schedule()

    # ------------------------------------------------------------------ departures
    def connection_closed(self, conn) -> None:
        peer = self.peers.pop(conn, None)
        if peer is None:
            return
        self._stimulate(f"Closed:{peer.kind}")
        # An engine that died (or was stopped) between telling us of results
        # and sending them straight to their owners: they get them from us.
        self._push_undelivered(self.sent_straight.pop(conn, ()))
        if self.early_finishes:
            self._early_engine_gone(conn)
        self.event_subscribers.discard(conn)
        self.out.mark("cluster")
        engine_id = self.engine_by_conn.pop(conn, None)
        if engine_id is not None:
            self._engine_lost(engine_id)
        host_id = self.host_by_conn.pop(conn, None)
        self.last_heard.pop(conn, None)
        if host_id is not None and self.hosts[host_id].restartable and not self.stopping:
            self._await_agent(self.hosts[host_id])
        elif host_id is not None:
            host = self.members.remove_host(
                host_id, {**views.host_status(self.hosts[host_id]).as_dict(), "engines": []})
            log.warning("host %s left the cluster", host_id)
            for eid in list(host.engines):
                self._engine_lost(eid)
            for eid in [e.engine_id for e in self.engines.values() if e.host_id == host_id]:
                self._engine_lost(eid)          # its actors' engines
            for actor in self._actors_starting_on(host_id):     # placed elsewhere instead
                actor.host_id, actor.held, actor.gpu_ids = None, {}, []
                self.actor_table.to(actor, "restarting" if actor.restarts else "pending",
                                    f"its host {host_id} was lost before its engine joined")
                self.actor_table.wait_for_host(actor)
            self._host_objects_lost(host)
            self._groups_host_lost(host_id)
        # Whatever this peer held or owned goes with it.
        if self.leased:
            self._leases_of_gone(conn)
        self._owner_gone(conn)
        self._groups_owner_gone(conn)
        # Its tasks stop, unless others hold or wait on their results: a ref can
        # outlive the engine that submitted its task (returned to the driver,
        # passed on).  Newest first, so a dependent lets go before its input is judged.
        # A task that may send its results straight to this owner can be done,
        # its TaskFinished written before the owner left but not yet read (it
        # comes on another connection): it gets a grace to say so before it is
        # cancelled.
        for task in reversed([t for t in self.tasks.values() if t.owner is conn]):
            if self._wanted_by_others(task, conn):
                continue
            if task.direct and task.state in (RUNNING, QUEUED):
                self.orphans[task.spec.task_id] = self.clock() + ORPHAN_GRACE
            else:
                self._cancel(task, force=True, recursive=True)
        self.directory.peer_gone(conn)
        self._schedule()
        if self.strict:
            self.members.check()

    def _wanted_by_others(self, task: Task, conn) -> bool:
        """Whether a result of `task` is held by a peer other than `conn`, or
        pinned (a pending task needs it, an object contains it)."""
        for oid in task.spec.return_ids:
            obj = self.objects.get(oid)
            if obj is not None and (obj.pins or any(c is not conn for c in obj.holders)):
                return True
        return False

    def _await_agent(self, host: Host) -> None:
        """A restartable host's agent died: its engines are lost (their tasks
        retried, their actors restarted), but the host keeps its place, its
        resources and the objects in its store, with a stand-in connection
        that holds what we send it until the new agent registers.  If none
        does within the heartbeat timeout, the host is lost for good."""
        log.warning("host %s lost its agent; waiting for its owner to restart it", host.host_id)
        stand_in = AwaitingAgent()
        host.conn, host.restartable = stand_in, False
        self.members.expect_engines(host, 0)
        self.peers[stand_in] = Peer("agent", host.host_id, 0, host.hostname, host.host_id)
        self.host_by_conn[stand_in] = host.host_id
        self.last_heard[stand_in] = self.clock()
        for eid in [e.engine_id for e in self.engines.values() if e.host_id == host.host_id]:
            self._engine_lost(eid)
        for actor in self._actors_starting_on(host.host_id):   # the new agent starts them
            self.out.send(stand_in, m.StartEngines(count=1, actor_id=actor.actor_id))

    def _actors_starting_on(self, host_id: str) -> list:
        return self.actor_table.starting_on(host_id)

    def _agent_restarted(self, host: Host, conn, msg: m.RegisterHost) -> None:
        """The new agent of a host in _await_agent takes its place."""
        stand_in = host.conn
        for table in (self.peers, self.host_by_conn, self.last_heard):
            table.pop(stand_in, None)
        host.conn, host.pid, host.object_address = conn, msg.pid, msg.object_address
        host.restartable = msg.restartable
        self.members.expect_engines(host, host.base_engines)   # it starts them by itself
        self.host_by_conn[conn] = host.host_id
        log.info("host %s is back with a new agent (pid %s)", host.host_id, msg.pid)
        for queued in stand_in.queued:       # pool engines it starts anyway; actors' it must
            if not isinstance(queued, (m.Heartbeat, m.StopEngine)) and not (
                    isinstance(queued, m.StartEngines) and queued.actor_id is None):
                self.out.send(conn, queued)
        self.out.mark("cluster")
        self._schedule()

    def _engine_lost(self, engine_id: str) -> None:
        engine = self.members.engine_gone(engine_id)
        if engine is None:
            return
        if engine.leased_to is not None:
            self._end_lease(engine)
        if engine.actor_id is not None:
            self._actor_engine_lost(engine)
            return
        for queued in map(self.tasks.get, reversed(engine.queued)):   # back to the front, in order
            if queued is None or queued.state not in (QUEUED, REVOKING):
                continue
            if queued.leased:        # its driver sent it once the one before had ended: it may run
                self._crashed(queued, engine_id, f"engine {engine_id}, pid {engine.pid}")
                continue
            queued.engine_id = queued.host_id = None       # never started: no retry
            self._make_ready(queued, front=True,
                             why=f"engine {engine_id} it was queued on died before it started")
        task = self.tasks.get(engine.task_id) if engine.task_id else None
        if task is None or task.state not in HOLDING:
            return
        self._release(task)
        self._crashed(task, engine_id, f"engine {engine_id}, pid {engine.pid}")

    def _crashed(self, task: Task, engine_id: str, engine: str) -> None:
        """The engine running `task` died (`engine` names it): run it again if
        it has retries left, else it fails with WorkerCrashedError."""
        if task.retries_left != 0 and task.state != CANCELLING:
            task.retries_left -= 1
            log.warning("engine %s died running %s; retrying it", engine_id, task.spec.task_id)
            self._record(task, "crashed")
            task.engine_id = None
            self._make_ready(task, why=f"engine {engine_id} died running it; retried, "
                                       f"{task.retries_left} retries left")
        else:
            self._finish_with_error(task, self._error_entry("", WorkerCrashedError(
                f"the engine running task {task.spec.name!r} ({task.spec.task_id}) died "
                f"({engine}) and no retries were left "
                f"(max_retries={task.spec.max_retries})")), why=f"engine {engine_id} died "
                f"running it" + (" while it was being cancelled" if task.state == CANCELLING
                                 else "; no retries left"))

    def _count_call(self, engine: Engine, spec: m.SubmitTask) -> None:
        """max_calls (Ray): an engine that ran a function that many times is
        replaced by a fresh one (a way to shed leaked memory or GPU state)."""
        n = engine.calls[spec.func_id] = engine.calls.get(spec.func_id, 0) + 1
        host = self.hosts.get(engine.host_id)
        if n >= spec.max_calls and host is not None and engine.state == IDLE:
            log.info("engine %s ran %s %d times (max_calls): replacing it", engine.engine_id,
                     spec.name, n)
            self._retire_engine(host, engine)
            self.members.start_engines(host, 1)

    def _after_engine_free(self, engine_id: Optional[str]) -> None:
        """Stop an extra engine (started while others were blocked) once it is idle."""
        engine = self.engines.get(engine_id) if engine_id else None
        if engine is None or engine.state != IDLE:
            return
        host = self.hosts.get(engine.host_id)
        if host is None:
            return
        if len(host.engines) > host.base_engines + len(host.blocked) and not any(True for _ in self._all_ready()):
            self._retire_engine(host, engine)

    def _on_engine_exited(self, conn, msg: m.EngineExited) -> None:
        if msg.engine_id in self.engines:
            log.warning("engine %s exited with %s", msg.engine_id, msg.returncode)
            self._engine_lost(msg.engine_id)
            self._schedule()

    # ------------------------------------------------------------------ scale and heartbeats
    def _query_scale(self, args: dict) -> dict:
        """Set a host's engine count (and its CPUs to match), as ipyparallel scales engines."""
        count = args["count"]
        if not isinstance(count, int) or count < 0:
            raise TypeError(f"the engine count must be a non-negative integer, got {count!r}")
        host = self.hosts.get(args.get("host_id")) if args.get("host_id") else (
            next(iter(self.hosts.values())) if len(self.hosts) == 1 else None)
        if host is None:
            raise LookupError("say which host to scale (host_id): "
                              + ", ".join(self.hosts) if self.hosts else "no hosts")
        self.members.set_cpus(host, count)
        want = max(0, count - len(host.engines) - host.starting)
        if want:
            self.members.start_engines(host, want)
        for eid in list(host.idle):              # busy extras stop when they finish
            if len(host.engines) <= max(count, 1):
                break
            self._retire_engine(host, self.engines[eid])
        log.info("host %s scaled to %d engines", host.host_id, count)
        return {"host_id": host.host_id, "engines": count}

    def _retire_engine(self, host: Host, engine: Engine) -> None:
        self.members.retire(host, engine)

    def heartbeat(self) -> list:
        """Called every state.HEARTBEAT_INTERVAL by the I/O shell: beats go to every
        agent; returns the agent connections silent past the timeout, which
        the shell closes (their hosts are then lost as if they had hung up)."""
        self._stimulate("HeartbeatTimer")
        now = self.clock()
        self._cancel_orphans(now)
        if self.early_finishes or self.early_children:
            self._drop_early(now)
        if self.early_blocked:
            self._drop_early_blocked(now)
        silent = []
        for host in list(self.hosts.values()):
            heard = self.last_heard.setdefault(host.conn, now)
            if isinstance(host.conn, AwaitingAgent):
                if now - heard > self.heartbeat_timeout:
                    log.warning("host %s: no new agent within %.1f s; it is lost",
                                host.host_id, now - heard)
                    self.connection_closed(host.conn)
                continue
            if now - heard > self.heartbeat_timeout:
                log.warning("host %s has been silent for %.1f s; treating it as lost",
                            host.host_id, now - heard)
                silent.append(host.conn)
            else:
                self.out.send(host.conn, m.Heartbeat())
        if self.strict:
            self.members.check()
        return silent

    def _cancel_orphans(self, now: float) -> None:
        """Cancel the departed owners' tasks whose grace has run out."""
        due = [tid for tid, deadline in self.orphans.items() if deadline <= now]
        for tid in due:
            del self.orphans[tid]
            task = self.tasks.get(tid)
            if task is not None and task.state in ON_ENGINE and task.owner not in self.peers:
                self._cancel(task, force=True, recursive=True)
        if due:
            self._schedule()

    def _on_heartbeat(self, conn, msg: m.Heartbeat) -> None:
        pass                       # hearing it is what counts (see handle)
