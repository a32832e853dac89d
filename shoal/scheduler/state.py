"""The cluster's state machine, with no sockets and no event loop.

Events come in through `handle(conn, msg)` and `connection_closed(conn)`;
what to send goes out through `take_output()` as (conn, message) pairs.  The
I/O shell (server.py) is the only caller.  Connections are opaque handles
here: anything hashable works, which is what the tests pass.

Tasks move through: waiting (for arguments) -> ready -> (queued on a busy
engine ->) running -> finished, with failed/cancelled as finished variants;
lifecycle.py lists every state and the transitions allowed between them.
Objects are pending until their task finishes or they are put; they are freed
once no client holds them, no pending task needs them and no live object
contains them.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable, Optional

from ..exceptions import ObjectLostError, TaskCancelledError, WorkerCrashedError
from ..protocol import messages as m
from ..protocol.messages import ObjectEntry
from ..protocol.object_ids import item_id, task_of
from ..protocol.serialization import dumps
from . import policy, tasks, views
from .actors import ActorScheduling
from .events import EventStream
from .leases import Leasing
from .lifecycle import (BLOCKED, BUSY, CANCELLED, CANCELLING, FAILED, HOLDING, IDLE, ON_ENGINE, QUEUED,
                        READY, REVOKING, RUNNING, STOPPING, WAITING, strict_default)
from .membership import Engine, Host, Membership
from .membership_events import MembershipEvents
from .object_messages import ObjectTracking
from .objects import ObjectDirectory
from .outbox import AwaitingAgent, Outbox
from .pipeline import Pipelining
from .placement import Placement
from .tasks import Task, TaskTable

log = logging.getLogger("shoal.scheduler")
HEARTBEAT_INTERVAL = 1.0
# Per engine: its last batch of reports (and the one before), whose values it
# may not have sent when it dies.
SENT_STRAIGHT_KEPT = 2 * m.REPORT_BATCH_MAX
DEFAULT_HEARTBEAT_TIMEOUT = 6.0    # a silent host is lost well within 10 s


_ENDED_WHY = {"finished": "it returned", "failed": "it raised an exception",
              "cancelled": "cancelled"}          # a task's last story record, by default


class SchedulerState(MembershipEvents, Pipelining, Leasing, EventStream, ObjectTracking,
                     ActorScheduling, Placement):
    def __init__(self, cluster_id: str, session_dir: str,
                 clock: Callable[[], float] = time.time,
                 heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
                 strict: Optional[bool] = None, queue_max: int = policy.QUEUE_MAX) -> None:
        self.cluster_id = cluster_id
        self.session_dir = session_dir
        self.clock = clock
        self.out = Outbox()                            # all that leaves the state machine
        self.task_table = table = TaskTable(self.out, clock,
                                            strict_default() if strict is None else strict)
        self._to = table.to                            # (bound once: called per transition)
        self.members = members = Membership(self.out, table.illegal)
        # Membership owns these tables; the names are for reading them.
        self.peers, self.hosts, self.engines = members.peers, members.hosts, members.engines
        self.host_by_conn, self.engine_by_conn = members.host_by_conn, members.engine_by_conn
        self.departed_hosts, self.last_heard = members.departed_hosts, members.last_heard
        # TaskTable owns these; the names are for reading them.
        self.tasks, self.ready, self.pinned = table.live, table.ready, table.pinned
        self.dependents, self.history = table.dependents, table.history
        self.ended_stories = table.ended_stories
        self.functions: dict[str, m.RegisterFunction] = {}
        self.may_prefetch: set = set()                 # engines that may take a queued task
        self.queued_on: set = set()                    # engines with a task queued (may be stale)
        self.run_times: dict = {}                      # function id -> its run time estimate (s)
        self.queue_max = queue_max                     # most tasks queued behind a running one
        # The I/O shell sets this: the messages of one read each ask for a
        # placement pass, and one pass runs when the read is done (take_output),
        # not one per message.
        self.batch_placement = False
        self._placement_due = False
        self.directory = ObjectDirectory(self.out, members.peers, members.hosts, clock,
                                         self._actor_handle_freed)
        self.objects = self.directory.objects          # (the directory owns them)
        self.event_subscribers: set = self.out.subscribers
        self.stopping = False
        self.heartbeat_timeout = heartbeat_timeout
        # task id -> when to force-cancel it: running tasks of departed owners
        # that may have sent them their results already (see connection_closed)
        self.orphans: dict[str, float] = {}
        # engine connection -> its last results sent straight to their owners,
        # as (task id, owner, return ids): pushed after all if the engine says
        # the send failed, or its connection closes (it may have died, or been
        # stopped, between telling us and sending)
        self.sent_straight: dict = {}
        self._init_actors()
        self._init_placement()
        self._init_leases()

    @property
    def strict(self) -> bool:
        """Illegal transitions raise (SHOAL_STRICT_STATES=1), and the indexes
        are checked after every event; else they are logged as bugs."""
        return self.task_table.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self.task_table.strict = value

    @property
    def stimulus(self) -> tuple:
        return self.task_table.stimulus

    def _stimulate(self, kind: str) -> None:
        self.task_table.stimulate(kind)

    def _engine_to(self, engine: Engine, state: str) -> None:
        self.members.engine_to(engine, state)

    def story(self, task_id: str) -> Optional[list]:
        """The story of a live or recently ended task, as records, or None."""
        return self.task_table.story(task_id)

    def _query_story(self, args: dict) -> dict:
        """Query "story": args task_id, or object_id (the task that makes it);
        either may be given the other's kind of id, or an actor's id (its
        own story: pending, starting, creating, alive, restarting, dead)."""
        ident = args.get("task_id") or args["object_id"]
        actor_story = self.actor_table.story(ident)
        if actor_story is not None:
            return {"task_id": ident, "kind": "actor", "story": actor_story}
        task_id, story = ident, self.story(ident)
        if story is None:
            obj = self.objects.get(ident)
            task_id = (obj.producer if obj is not None and obj.producer
                       else task_of(ident))
            story = self.story(task_id)
        if story is None:
            raise LookupError(f"no story for task {ident}: it is not a task of this cluster, "
                              f"or it ended more than {tasks.FINISHED_STORIES:,} tasks ago")
        return {"task_id": task_id, "story": story}

    # ------------------------------------------------------------------ I/O seam
    def take_output(self) -> list:
        """Messages to send, as (conn, msg), in order; clears the outbox."""
        if self._placement_due:
            self._placement_due = False
            self._place()
        hosts = self.hosts
        return self.out.take(lambda host_id: hosts[host_id].conn if host_id in hosts else None)

    def handle(self, conn, msg) -> None:
        handler = self._HANDLERS.get(type(msg))
        if handler is None:
            raise ValueError(f"unexpected message {type(msg).__name__}")
        if conn not in self.peers and type(msg) not in (m.ClientHello, m.RegisterHost):
            raise ValueError(f"{type(msg).__name__} before hello")
        now = self.clock()
        if conn in self.host_by_conn:
            self.last_heard[conn] = now
        table = self.task_table              # (TaskTable.stimulate, inlined: per message)
        table._stimuli += 1
        table.stimulus = (msg.__class__.__name__, table._stimuli, now)
        handler(self, conn, msg)
        if table.strict:
            self.members.check()

    # ------------------------------------------------------------------ tasks
    def _on_register_function(self, conn, msg: m.RegisterFunction) -> None:
        self.functions[msg.func_id] = msg

    def _new_task(self, spec: m.SubmitTask, owner, again: str = "") -> Task:
        return self.task_table.new(spec, owner, again)

    def _on_submit(self, conn, spec: m.SubmitTask) -> None:
        if spec.func_id is not None and spec.func_id not in self.functions:
            raise ValueError(f"task {spec.task_id} uses unregistered function {spec.func_id}")
        task = self._new_task(spec, conn)
        for oid in spec.return_ids:
            obj = self.directory.make(oid)
            obj.producer = spec.task_id
            if spec.method != "__init__":          # nobody holds an actor's creation result
                self.directory.hold(obj, conn, +1)
        parent = self.tasks.get(spec.parent_task_id) if spec.parent_task_id else None
        if parent is not None:
            parent.children.add(spec.task_id)
            task.origin = parent.origin or (parent.owner, parent.spec.task_id)
            task.provisional = parent.provisional
        elif spec.parent_task_id is not None:
            self._early_child(task)             # its parent may be a straight call, on its way
        if self.early_children:
            self._adopt_early_children(task)
        failed = None
        for oid in (*spec.deps, *spec.nested):
            obj = self.objects.get(oid)
            if obj is None:
                failed = failed or self._lost_entry(oid)
                continue
            obj.pins += 1
        for oid in spec.deps:
            obj = self.objects.get(oid)
            if obj is None:
                continue
            if obj.entry is None:
                self.task_table.wait_for(task, oid)
            elif obj.entry.error and failed is None:
                failed = obj.entry
        if spec.method == "__init__":
            self._actor_submitted(conn, task)
        elif spec.actor_id is not None:
            self._actor_call_submitted(conn, task)
        if spec.task_id in self.tasks:              # else it failed already (actor gone)
            if failed is not None:
                self._finish_with_error(task, failed, why="an argument is an error or is gone")
            elif not task.missing:
                self._make_ready(task)
        self._schedule()

    def _make_ready(self, task: Task, front: bool = False, why: str = "its arguments are ready"
                    ) -> None:
        self._to(task, READY, why)
        if task.spec.method == "__init__":
            self._actor_creation_ready(task)
            return
        if task.spec.actor_id is not None:
            self._actor_call_ready(task)
            return
        if task.spec.direct_to is not None:
            self._leased_task(task)
            return
        if task.spec.engine_id is not None:
            if task.spec.engine_id not in self.engines:
                self._finish_with_error(task, self._error_entry("", ValueError(
                    f"task {task.spec.name!r} is pinned to engine {task.spec.engine_id}, "
                    f"which is not in the cluster")))
                return
            self.task_table.pin(task)
            return
        self.task_table.enqueue(task, front)

    def _all_ready(self):
        return self.task_table.all_ready()

    def _schedule(self) -> None:
        """Place what can run now: at once, or after the read (batch_placement)."""
        if self.batch_placement:
            self._placement_due = True
        else:
            self._place()

    def _place(self) -> None:
        if self.pending_groups:
            self._place_groups()
        if self.pending_actors:
            self._place_actors()
        if self.pinned:
            self._schedule_pinned()
        # Only hosts with an idle engine can take a task now: under load that is
        # few of them, so placement costs O(idle hosts), not O(hosts).
        idle_hosts = self.members.idle_hosts()
        for shape, queue in list(self.ready.items()):
            while queue:
                task = self.tasks.get(queue[0])
                if task is None or task.state != READY:
                    queue.popleft()
                    continue
                if not self.members.idle:       # the common case under load
                    self._cannot_place(task, len(queue), shape)
                    break
                request = task.spec.resources
                gpu = "GPU" in request
                why = self._placement_error(task.spec)
                if why is not None:
                    queue.popleft()
                    self._unschedulable(task, why)
                    continue
                local = self._argument_bytes(task) if len(self.hosts) > 1 else None
                host = None
                if not (local or task.spec.placement) and len(request) == 1 and "CPU" in request:
                    host = self._most_free_host(request, idle_hosts)
                if host is None:
                    host = self._choose_placed_host(
                        task.spec, request, idle_hosts,
                        lambda h: self._idle_engine(h, gpu) is not None, local)
                gpus = policy.allocate_gpus(host.gpus, request.get("GPU", 0)) if host else None
                if host is None or gpus is None:
                    self._cannot_place(task, len(queue), shape)
                    break
                queue.popleft()
                self._dispatch(task, host, self._idle_engine(host, gpu), gpus)
            if not queue:
                del self.ready[shape]
        self._pipeline()
        if self.leased or self.lease_wanted:
            self._lend_or_revoke()

    def _most_free_host(self, request: dict, idle_hosts: list) -> Optional[Host]:
        """policy.choose_host's choice for a one-resource CPU task with no stored
        arguments, from the membership's heap instead of a walk over the idle
        hosts; None if the top host cannot take it (the walk decides then)."""
        host = self.members.most_free_idle_host()
        if host is None or not policy.fits(request, host.available) or \
                self.members.idle_engine(host) is None:
            return None
        if self.task_table.strict:        # the same choice as the walk, or a bug
            walk = policy.choose_host(request, idle_hosts,
                                      lambda h: self.members.idle_engine(h) is not None)
            assert walk is host, (walk, host)
        return host

    def _schedule_pinned(self) -> None:
        for engine_id, queue in list(self.pinned.items()):
            engine = self.engines.get(engine_id)
            if engine is None:
                del self.pinned[engine_id]
                for tid in queue:
                    task = self.tasks.get(tid)
                    if task is not None:
                        self._finish_with_error(task, self._error_entry("", WorkerCrashedError(
                            f"engine {engine_id}, which task {task.spec.name!r} was pinned to, "
                            f"left the cluster")))
                continue
            host = self.hosts.get(engine.host_id)
            while queue and engine.state == IDLE and host is not None:
                task = self.tasks.get(queue.popleft())
                if task is not None and task.state == READY:
                    self._dispatch(task, host, engine, [])
            if not queue:
                del self.pinned[engine_id]

    def _argument_bytes(self, task: Task) -> dict:
        """Bytes of a task's stored arguments on each host (for locality)."""
        where: dict = {}
        for oid in task.spec.deps:
            obj = self.objects.get(oid)
            if obj is not None and obj.entry is not None and obj.entry.host_id:
                for host_id in (obj.entry.host_id, *obj.copies):
                    where[host_id] = where.get(host_id, 0) + obj.entry.size
        return where

    def _idle_engine(self, host: Host, gpu: bool = False) -> Optional[Engine]:
        return self.members.idle_engine(host, gpu)

    def _assign(self, engine: Engine, task_id: Optional[str]) -> None:
        """Set what an engine runs (Membership.assign); one that got a task may
        take a queued one behind it."""
        self.members.assign(engine, task_id)
        if task_id is not None:
            self.may_prefetch.add(engine.engine_id)

    def _cannot_place(self, task: Task, backlog: int = 1, shape: tuple = ()) -> None:
        """No engine can take `task` now (its ready queue, of `shape`, holds
        `backlog`): warn once if no host ever could, else start engines where
        resources are free but every engine is busy."""
        request = task.spec.resources
        where = task.spec.placement
        in_group = bool(where) and where["kind"] == "pg"
        if not where:
            feasible = self.members.feasible(request, shape or policy.shape_of(request))
        else:
            feasible = in_group or policy.feasible_anywhere(
                request, self._candidates(task.spec, list(self.hosts.values())))
        if not feasible:
            hosts = self._candidates(task.spec, list(self.hosts.values()))
            if not task.warned_infeasible and hosts:
                task.warned_infeasible = True
                totals = "; ".join(f"{h.host_id}: {h.total}" for h in hosts)
                self.out.send(task.owner, m.Notice(text=(
                    f"task {task.spec.name!r} ({task.spec.task_id}) needs {request}, which no host "
                    f"in the cluster has ({totals}). It stays queued until a host that can run "
                    f"it joins; cancel it with shoal.cancel().")))
            return
        # Resources are there but every engine is busy (some blocked in get): start
        # engines for the queued tasks, as many as blocked engines lend CPUs for.
        gpu = "GPU" in request
        for host in self._candidates(task.spec, self.members.hosts_that_may_start()):
            free = (self._bundle_for(task.spec, request, host) is not None if in_group
                    else policy.fits(request, host.available))
            if backlog > 0 and free and self._idle_engine(host, gpu) is None:
                # Idle engines that ran GPU tasks make way for fresh ones.
                for eid in [e for e in host.idle if self.engines[e].ran_gpu][:backlog]:
                    self._retire_engine(host, self.engines[eid])
                count = policy.engines_to_start(host, backlog)
                if count > 0:
                    backlog -= count
                    self.members.start_engines(host, count)

    def _dispatch(self, task: Task, host: Host, engine: Engine, gpu_ids: list) -> None:
        spec = task.spec
        request = spec.resources
        task.pool = self._pool(spec, request, host)
        host.acquire(request, gpu_ids, task.pool)
        task.held, task.gpu_ids = dict(request), gpu_ids
        task.engine_id, task.started_at = engine.engine_id, self.clock()
        task.host_id = host.host_id
        self._to(task, RUNNING, "dispatched")
        engine.ran_gpu = engine.ran_gpu or "GPU" in request
        self._assign(engine, spec.task_id)
        self._running(task)
        self._execute_on(engine, task, gpu_ids)

    def _execute_on(self, engine: Engine, task: Task, gpu_ids: list) -> None:
        spec = task.spec
        blob = retry = None
        if spec.func_id is not None and spec.func_id not in engine.functions:
            engine.functions.add(spec.func_id)
            function = self.functions[spec.func_id]
            blob, retry = function.blob, function.retry_exceptions
        now = self.clock()
        for d in spec.deps:
            self.objects[d].last_used = now
        job, held = spec.job, spec.resources     # (a prefetched task holds them once it runs)
        actor = self.actors.get(spec.actor_id) if spec.actor_id else None
        if actor is not None:            # an actor's calls belong to its creator's job
            job, held = actor.creation.job, actor.held
        reply_to = self._reply_to(task, engine)
        task.direct = reply_to is not None
        self.out.send(engine.conn, m.ExecuteTask(
            task_id=spec.task_id, func_id=spec.func_id, func_blob=blob, name=spec.name,
            args=spec.args, dep_values=[self.objects[d].entry for d in spec.deps],
            return_ids=spec.return_ids, gpu_ids=gpu_ids, func_retry=retry,
            method=spec.method, actor_options=spec.actor_options, generator=spec.generator,
            job=job, resources=held, runtime_env=spec.runtime_env, placement=spec.placement,
            concurrency_group=spec.concurrency_group, reply_to=reply_to))

    def _reply_to(self, task: Task, engine: Engine) -> Optional[str]:
        """Where the engine may send a plain success itself: the owner's
        ReplyChannel, when the owner is a driver on the engine's machine.
        Streamed items, actor creations and rebuilt objects keep the relay."""
        spec = task.spec
        if spec.generator is not None or spec.method == "__init__" or task.rebuilding:
            return None
        peer = self.peers.get(task.owner)
        if peer is None or peer.reply_to is None:
            return None
        host = self.hosts.get(engine.host_id)
        return peer.reply_to if host is not None and host.hostname == peer.hostname else None

    def _delivered_to(self, task: Task, msg: m.TaskFinished):
        """The owner's connection if the engine sends it these results itself
        (only a success, and only to an owner that has a channel), remembered
        on the engine in case that send fails (see _push_undelivered)."""
        if not msg.delivered or msg.failed:
            return None
        peer = self.peers.get(task.owner)
        if peer is None or peer.reply_to is None:
            return None
        engine = self.engines.get(task.engine_id)
        if engine is not None:
            sent = self.sent_straight.get(engine.conn)
            if sent is None:
                sent = self.sent_straight[engine.conn] = deque(maxlen=SENT_STRAIGHT_KEPT)
            sent.append((task.spec.task_id, task.owner, task.spec.return_ids))
        return task.owner

    def _on_undelivered(self, conn, msg: m.Undelivered) -> None:
        if self.early_finishes:
            self._early_undelivered(conn, msg.task_id)
        if self.leased:
            self._lease_waits(self.engine_by_conn.get(conn))     # the value did not go
        self._push_undelivered([d for d in self.sent_straight.get(conn, ()) if d[0] == msg.task_id])

    def _push_undelivered(self, deliveries) -> None:
        """Push results an engine meant to send its owners itself, to the
        owners that still hold them (a copy that did arrive is ignored there)."""
        for _task_id, owner, return_ids in deliveries:
            for oid in return_ids:
                obj = self.objects.get(oid)
                if obj is not None and obj.entry is not None and owner in obj.holders:
                    self.out.push(owner, obj.entry)

    def _on_reply_channel(self, conn, msg: m.ReplyChannel) -> None:
        peer = self.peers[conn]
        if peer.kind == "driver" and type(msg.address) is str and msg.address.startswith("unix:"):
            peer.reply_to = msg.address
            peer.leases = msg.leases is True

    def _release(self, task: Task) -> None:
        """Give back what a running task held and free its engine."""
        engine = self.engines.get(task.engine_id)
        host = self.hosts.get(task.host_id)
        if engine is not None and engine.leased_to is not None \
                and engine.task_id == task.spec.task_id:
            self._back_to_lease(engine, task)
            return
        if host is not None:
            host.release(task.held, task.gpu_ids, task.pool)
        if engine is not None and engine.task_id == task.spec.task_id:
            self._assign(engine, None)
        task.held, task.gpu_ids = {}, []

    def _hand_over_or_release(self, engine, task: Task) -> Optional[dict]:
        """A finished task whose engine goes straight on to the task queued
        behind it (of its shape: pipeline.py) leaves the engine busy and its
        resources held, for that task to take over (_promote), instead of
        freeing both (the engine idle, its host indexed and filed by free CPU)
        and taking them back a moment later.  Returns what it held; None if
        it released them as any task does (_release)."""
        if (engine is None or not engine.queued or engine.task_id != task.spec.task_id
                or engine.leased_to is not None or engine.state != BUSY or task.gpu_ids
                or task.pool is not None or task.held != task.spec.resources):
            self._release(task)
            return None
        held, task.held, task.gpu_ids = task.held, {}, []
        engine.task_id = None               # busy still: the next task is its own
        return held

    def _nobody_takes_over(self, engine, held: dict) -> None:
        """What a finished task kept for the next one goes back: no next one."""
        host = self.hosts.get(engine.host_id)
        if host is not None:
            host.release(held)
        self._assign(engine, None)

    def _on_task_finished(self, conn, msg: m.TaskFinished) -> None:
        task = self.tasks.get(msg.task_id)
        engine_id = self.engine_by_conn.get(conn)
        if task is None and msg.called_direct and msg.task_id not in self.ended_stories:
            self._early_finish(conn, msg)       # its caller's submission is on its way
            if self.early_blocked:
                self.early_blocked.pop(msg.task_id, None)
            return
        if task is None or task.state not in ON_ENGINE or task.engine_id != engine_id:
            return            # stale: the task was cancelled or retried meanwhile
        if msg.ran_for > 0.0:
            # The run's times as its engine saw them: a report held in a batch comes
            # after the run ended, and a task promoted on the report of the one
            # before it started before the scheduler heard.
            task.ended_at = self.clock() - msg.ended_ago
            task.started_at = task.ended_at - msg.ran_for
        if task.spec.method == "__init__":
            self._actor_created(task, msg)
            self._schedule()
            return
        if task.spec.actor_id is not None:
            self._actor_call_finished(task, msg)
            self._schedule()
            return
        if msg.ran_for > 0.0 and task.spec.func_id is not None:
            self.run_times[task.spec.func_id] = policy.run_time(
                self.run_times.get(task.spec.func_id), msg.ran_for)
        engine = self.engines.get(engine_id)
        carried = self._hand_over_or_release(engine, task)
        if self.leased and (msg.failed or not msg.delivered):
            self._lease_waits(engine_id)        # its owner did not get the value from it
        cancelling = task.state == CANCELLING
        if msg.failed and msg.retryable and task.retries_left != 0 and not cancelling:
            task.retries_left -= 1
            self._record(task, "retried")
            self._make_ready(task, why=f"it raised a retryable error; {task.retries_left} "
                                       f"retries left")
        elif msg.failed and cancelling:
            self._finish_with_error(task, self._error_entry(
                "", TaskCancelledError(task.spec.task_id)))
        else:       # a success while CANCELLING counts as finished: cancel came too late
            self._complete(task, msg.results, msg.nested, "failed" if msg.failed else "finished",
                           delivered_to=self._delivered_to(task, msg))
        if msg.delivered and engine is not None and engine.leased_to is None and not engine.queued:
            self._may_want_lease(task, engine)      # (its engine has a connection to the driver)
        if engine is not None and engine.queued:
            self._promote(engine, carried)
        elif carried is not None:                   # what was queued there is gone meanwhile
            self._nobody_takes_over(engine, carried)
        if task.spec.max_calls and engine is not None:
            self._count_call(engine, task.spec)
        self._after_engine_free(engine_id)
        self._schedule()

    def _on_generator_item(self, conn, msg: m.GeneratorItem) -> None:
        """A streaming task yielded: the item is its owner's now, pushed at once."""
        task = self.tasks.get(msg.task_id)
        oid = msg.entry.object_id
        stale = (task is None or task.state not in ON_ENGINE or task.spec.generator != "streaming"
                 or task.engine_id != self.engine_by_conn.get(conn)
                 or oid != item_id(msg.task_id, msg.index))
        obj = self.objects.get(oid)
        if stale or task.owner not in self.peers or (obj is not None and obj.entry is not None):
            # Nobody will hold it (or a retry made it again): drop this copy.
            if msg.entry.host_id and (obj is None or obj.entry is None
                                      or obj.entry.host_id != msg.entry.host_id):
                self.out.free(msg.entry.host_id, oid)
            return
        obj = self.directory.make(oid)
        obj.producer = msg.task_id
        self.directory.hold(obj, task.owner, +1)
        self._object_ready(obj, msg.entry, msg.nested,
                           f"generator task {task.spec.name} ({msg.task_id}), item {msg.index}")

    def _complete(self, task: Task, results: list, nested: list, status: str,
                  why: Optional[str] = None, delivered_to=None) -> None:
        spec = task.spec
        if task.rebuilding:
            self._rebuilt(task, results, nested)
        else:
            made_by = f"task {spec.name} ({spec.task_id})"
            for i, entry in enumerate(results):
                obj = self.objects.get(spec.return_ids[i])
                if obj is not None:
                    self._object_ready(obj, entry, nested[i] if i < len(nested) else [], made_by,
                                       delivered_to)
            # Results in a host store may need this task again if that host is
            # lost: they keep its spec and arguments (lineage) while they live.
            if not self.directory.keep_lineage(spec, task.owner, task.retries_left, results):
                for oid in (*spec.deps, *spec.nested):
                    self.directory.unpin(oid)
        self.task_table.end(task, status, why or _ENDED_WHY[status])
        for oid in spec.return_ids:
            obj = self.objects.get(oid)
            if obj is not None:
                self.directory.maybe_free(obj)

    def _finish_with_error(self, task: Task, entry: ObjectEntry, cancelled: bool = False,
                           why: str = "it failed") -> None:
        """End a task with `entry` as its results: "cancelled" if asked to
        (or it was being cancelled), else "failed"."""
        if task.spec.method == "__init__":          # an actor that cannot be created
            actor = self.actors.get(task.spec.actor_id)
            if actor is not None:
                self._actor_dead(actor, "its creation failed", error=entry.inline)
            return
        if task.state in (QUEUED, REVOKING):
            engine = self.engines.get(task.engine_id)
            if engine is not None and task.spec.task_id in engine.queued:
                engine.queued.remove(task.spec.task_id)
                self.may_prefetch.add(engine.engine_id)
                self.out.send(engine.conn, m.InterruptTask(task_id=task.spec.task_id))   # skip it
        elif task.state in HOLDING:
            self._release(task)
        status = CANCELLED if cancelled or task.state == CANCELLING else FAILED
        self._complete(task, [entry._replace(object_id=oid) for oid in task.spec.return_ids],
                       [], status, why)

    def _record(self, task: Task, status: str) -> None:
        self.task_table.record(task, status)

    def _running(self, task: Task) -> None:
        self.task_table.running(task)

    def _revoked(self, task: Task) -> None:
        self.task_table.revoked(task)

    def _error_entry(self, object_id: str, error: BaseException) -> ObjectEntry:
        return ObjectEntry(object_id, error=True, inline=dumps(error))

    def _lost_entry(self, object_id: str) -> ObjectEntry:
        return self._error_entry(object_id, ObjectLostError(
            f"object {object_id} is gone: it was freed or its owner released it"))

    def _on_engine_blocked(self, conn, msg: m.EngineBlocked) -> None:
        engine = self.engines.get(self.engine_by_conn.get(conn))
        task = self.tasks.get(msg.task_id)
        if engine is not None and task is None and engine.leased_to is not None:
            self.early_blocked[msg.task_id] = (msg.blocked, self.clock())   # its record is coming
            return
        if engine is None or task is None or engine.task_id != msg.task_id \
                or engine.state == STOPPING:
            return
        self._engine_blocked(engine, task, msg.blocked)

    def _engine_blocked(self, engine: Engine, task: Task, blocked: bool) -> None:
        """The engine's task waits in get (or no longer does): lend its CPU."""
        if (engine.state == BLOCKED) == blocked:
            return
        self._engine_to(engine, BLOCKED if blocked else BUSY)
        host = self.hosts[engine.host_id]
        # Lend the CPU back while blocked; taking it again may oversubscribe
        # the host for a while, as in Ray, rather than deadlock.
        pool = host.available if task.pool is None else task.pool
        if blocked:
            task.blocks = True
            if engine.queued:                      # it may be what this task waits for
                self._revoke(engine)
            task.lent_cpu = task.held.pop("CPU", 0.0)
            pool["CPU"] = pool.get("CPU", 0.0) + task.lent_cpu
        else:
            task.held["CPU"] = task.lent_cpu
            pool["CPU"] = pool.get("CPU", 0.0) - task.lent_cpu
            task.lent_cpu = 0.0
            self.may_prefetch.add(engine.engine_id)
        if task.pool is None:
            self.members.cpu_changed(host)
        self._schedule()

    def _on_task_output(self, conn, msg: m.TaskOutput) -> None:
        task = self.tasks.get(msg.task_id)
        if task is None:
            return
        if task.provisional is not None:      # where it prints is known once its root's parent is
            self._hold_early_output(task, msg)
            return
        self._route_output(msg, task.origin or (task.owner, None))

    def _route_output(self, msg: m.TaskOutput, origin: tuple) -> None:
        """Output to where its chain began: (owner, root task id), or its own
        owner as it came (root None)."""
        owner, root = origin
        if owner not in self.peers:
            return
        self.out.send(owner, msg if root is None else m.TaskOutput(
            task_id=msg.task_id, name=msg.name, pid=msg.pid, stream=msg.stream, text=msg.text,
            data=msg.data, origin=root))

    def _on_cancel(self, conn, msg: m.CancelTask) -> None:
        obj = self.objects.get(msg.object_id)
        task = self.tasks.get(obj.producer) if obj and obj.producer else None
        if task is not None:
            self._cancel(task, msg.force, msg.recursive)
            self._schedule()

    def _cancel(self, task: Task, force: bool, recursive: bool) -> None:
        if recursive:
            for child_id in list(task.children):
                child = self.tasks.get(child_id)
                if child is not None:
                    self._cancel(child, force, recursive)
        if task.spec.task_id not in self.tasks:
            return
        if task.spec.actor_id is not None:
            if task.spec.method != "__init__":
                self._cancel_actor_call(task)
            return
        cancelled = self._error_entry("", TaskCancelledError(task.spec.task_id))
        if task.state in (WAITING, READY, QUEUED, REVOKING):
            self._finish_with_error(task, cancelled, cancelled=True, why="cancelled")
        elif task.state in HOLDING:
            engine = self.engines.get(task.engine_id)
            if force and engine is not None:
                self._finish_with_error(task, cancelled, cancelled=True,
                                        why="cancelled with force: its engine is stopped")
                self._stop_engine(engine)
            else:
                if task.state == RUNNING:
                    self._to(task, CANCELLING, "cancelled while running: interrupted")
                if engine is not None:
                    self.out.send(engine.conn, m.InterruptTask(task_id=task.spec.task_id))

    def _stop_engine(self, engine: Engine) -> None:
        """Kill an engine (its task was killed): it is not idle until its
        replacement registers."""
        if engine.leased_to is not None:
            self._unlend(engine)             # its driver must send it nothing more
        if engine.state != STOPPING:
            self.members.stop(engine)

    # ------------------------------------------------------------------ status
    def _on_query(self, conn, msg: m.Query) -> None:
        handler = {"status": lambda args: self.status(), "get_actor": self._query_get_actor,
                   "hosts": lambda args: [self._host_info(h) for h in self.hosts.values()],
                   "list_actors": self._query_list_actors, "scale": self._query_scale,
                   "placement_groups": self._query_placement_groups,
                   "objects": self._query_objects, "memory": self._query_memory,
                   "story": self._query_story,
                   }.get(msg.kind)
        try:
            if handler is None:
                raise LookupError(f"unknown query {msg.kind!r}")
            reply = m.QueryReply(request_id=msg.request_id, value=handler(msg.args))
        except (LookupError, KeyError, TypeError) as exc:
            reply = m.QueryReply(request_id=msg.request_id, error=str(exc).strip("'\""))
        self.out.send(conn, reply)

    def status(self) -> dict:
        """The `status` view (views.ClusterStatus), as the dict clients read."""
        return views.cluster_status(self).as_dict()

    def _on_shutdown(self, conn, msg: m.Shutdown) -> None:
        self.shutdown(msg.reason)

    def shutdown(self, reason: str) -> None:
        """Stop the cluster: every agent is told to stop its engines."""
        self.stopping = True
        for host in list(self.hosts.values()):
            if isinstance(host.conn, AwaitingAgent):
                self.members.drop_host(host.host_id)    # no agent there to stop
            self.out.send(host.conn, m.Shutdown(reason=reason))

    _HANDLERS = {
        m.ClientHello: MembershipEvents._on_hello,
        m.ReplyChannel: _on_reply_channel,
        m.RegisterHost: MembershipEvents._on_register_host,
        m.RegisterFunction: _on_register_function,
        m.SubmitTask: _on_submit,
        m.TaskFinished: _on_task_finished,
        m.Undelivered: _on_undelivered,
        m.GeneratorItem: _on_generator_item,
        m.EngineBlocked: _on_engine_blocked,
        m.TaskRevoked: Pipelining._on_task_revoked,
        m.LeaseReturned: Leasing._on_lease_returned,
        m.SubscribeEvents: EventStream._on_subscribe_events,
        m.TaskOutput: _on_task_output,
        m.CancelTask: _on_cancel,
        m.PutObject: ObjectTracking._on_put,
        m.ObjectLocated: ObjectTracking._on_located,
        m.Subscribe: ObjectTracking._on_subscribe,
        m.RefUpdates: ObjectTracking._on_ref_updates,
        m.EngineExited: MembershipEvents._on_engine_exited,
        m.Query: _on_query,
        m.KillActor: ActorScheduling._on_kill_actor,
        m.CreatePlacementGroup: Placement._on_create_placement_group,
        m.RemovePlacementGroup: Placement._on_remove_placement_group,
        m.Shutdown: _on_shutdown,
        m.Heartbeat: MembershipEvents._on_heartbeat,
    }
