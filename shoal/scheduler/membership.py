"""Who is in the cluster: peers, hosts and their engines, and when each host
last spoke.  One Membership per scheduler owns these tables; the rest of the
scheduler reads them and changes them only through its methods.

It also keeps two indexes, so that placing a task under load does not look at
every host:

- `idle`: the hosts with an idle pool engine (only they can take a task now);
- `short`: the hosts with fewer engines (running or starting) than their CPUs
  plus their blocked engines call for (only they may start more).

Both are kept true by `reindex(host)`, called by every method here that
changes what they depend on; `check()` recomputes them from scratch (strict
schedulers run it after every event).  Engines move between idle, busy,
blocked and stopping only through `engine_to`, which checks the transition
(lifecycle.ENGINE_TRANSITIONS).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any, Callable, Optional

from ..protocol import messages as m
from . import policy
from .lifecycle import BLOCKED, BUSY, ENGINE_TRANSITIONS, IDLE, STOPPING

log = logging.getLogger("shoal.scheduler")
MAX_DEPARTED_HOSTS = 100     # hosts that left, remembered for nodes() (Alive: False)

# engine state -> the states it may go to (a lookup without building a pair per call)
ENGINE_NEXT = {old: frozenset(new for o, new in ENGINE_TRANSITIONS if o == old)
               for old in (IDLE, BUSY, BLOCKED, STOPPING)}


@dataclass(eq=False, slots=True)
class Peer:
    kind: str
    client_id: str
    pid: int
    hostname: str
    host_id: Optional[str] = None
    engine_id: Optional[str] = None
    actor_id: Optional[str] = None
    reply_to: Optional[str] = None      # a driver's ReplyChannel: same-host results go there
    leases: bool = False                # a driver that takes engine leases (scheduler/leases.py)


@dataclass(eq=False, slots=True)
class Host:
    host_id: str
    conn: Any
    hostname: str
    total: dict
    available: dict
    gpus: dict                       # gpu id -> free fraction
    store_dir: str
    spill_dir: str
    store_limit: int
    object_address: str
    pid: int
    store_used: int = 0              # bytes of objects in its shared memory
    spilled_bytes: int = 0           # bytes of objects spilled to its disk
    engines: set = field(default_factory=set)      # pool engines (not actors')
    idle: set = field(default_factory=set)         # those of them with no task
    blocked: set = field(default_factory=set)      # those of them blocked in get
    starting: int = 0                # engines asked for but not yet registered
    restartable: bool = False        # its owner restarts its agent if that dies
    seq: int = 0                     # join order: index walks keep the hosts' order
    on_cpu: Any = None               # told when its available CPU changes (Membership)

    @property
    def base_engines(self) -> int:
        return max(1, int(self.total.get("CPU", 0)))

    @property
    def short_of_engines(self) -> bool:
        """It may start engines: fewer than its CPUs and blocked engines call for."""
        return len(self.engines) + self.starting < self.base_engines + len(self.blocked)

    def acquire(self, request: dict, gpu_ids: list = (), pool: Optional[dict] = None) -> None:
        """Take resources (and GPU shares) for a task or an actor, from the
        host's available resources or a placement group bundle's `pool`."""
        self._add(request, gpu_ids, -1, pool)

    def release(self, held: dict, gpu_ids: list = (), pool: Optional[dict] = None) -> None:
        self._add(held, gpu_ids, +1, pool)

    def _add(self, amounts: dict, gpu_ids, sign: int, pool: Optional[dict] = None) -> None:
        target = self.available if pool is None else pool
        for k, v in amounts.items():
            target[k] = target.get(k, 0.0) + sign * v
        if pool is None and self.on_cpu is not None and "CPU" in amounts:
            self.on_cpu(self)
        share = amounts.get("GPU", 0)
        for gpu in gpu_ids:
            if gpu in self.gpus:         # a fraction shares one GPU; whole ones take it all
                self.gpus[gpu] += sign * (min(1.0, share) if share < 1 else 1.0)


@dataclass(eq=False, slots=True)
class Engine:
    engine_id: str
    host_id: str
    conn: Any
    pid: int
    task_id: Optional[str] = None
    functions: set = field(default_factory=set)
    actor_id: Optional[str] = None       # an engine dedicated to one actor
    queued: deque = field(default_factory=deque)   # task ids queued behind the running one, in order
    state: str = IDLE                    # pool engines: idle, busy, blocked, stopping (lifecycle.py)
    ran_gpu: bool = False                # it ran a GPU task: CPU-only tasks go elsewhere (Ray)
    calls: dict = field(default_factory=dict)    # function id -> runs (for max_calls)
    leased_to: Any = None                # the driver it is lent to (scheduler/leases.py)


class Membership:
    """The cluster's peers, hosts and engines, with the idle and short indexes."""

    def __init__(self, out, illegal: Callable[[str], None]) -> None:
        self.out = out                   # the scheduler's Outbox
        self._illegal = illegal          # reports an illegal engine transition
        self.peers: dict[Any, Peer] = {}
        self.hosts: dict[str, Host] = {}
        self.departed_hosts: dict = {}   # host id -> its last status (bounded), for nodes()
        self.host_by_conn: dict[Any, str] = {}
        self.engines: dict[str, Engine] = {}
        self.engine_by_conn: dict[Any, str] = {}
        self.last_heard: dict = {}       # agent conn -> when it last spoke
        self.idle: dict[str, Host] = {}  # host id -> host with an idle pool engine
        self.short: dict[str, Host] = {}   # host id -> host that may start engines
        self._seq = count()
        # Idle hosts by free CPU, most first (then join order): a heap whose stale
        # entries (a host no longer idle, or whose CPU moved since) are dropped when
        # they reach the top.  Every idle host has an entry with its current CPU.
        self._by_cpu: list = []
        self._in_order: dict = {}        # "idle"/"start" -> those hosts in join order (cached)
        self._feasible: dict = {}        # resource shape -> some host could ever run it

    # ------------------------------------------------------------------ hosts
    def add_host(self, conn, host: Host) -> None:
        host.seq = next(self._seq)
        host.on_cpu = self.cpu_changed
        self.hosts[host.host_id] = host
        self.host_by_conn[conn] = host.host_id
        self._feasible.clear()
        self.reindex(host)

    def remove_host(self, host_id: str, status: dict) -> Host:
        """A host left for good: forget it, remembering `status` for nodes()."""
        host = self.drop_host(host_id)
        self.departed_hosts[host_id] = status
        while len(self.departed_hosts) > MAX_DEPARTED_HOSTS:
            del self.departed_hosts[next(iter(self.departed_hosts))]
        return host

    def drop_host(self, host_id: str) -> Host:
        """Forget a host (and take it out of every index), remembering nothing."""
        host = self.hosts.pop(host_id)
        self.idle.pop(host_id, None)
        self.short.pop(host_id, None)
        self._in_order.clear()
        self._feasible.clear()
        return host

    def set_cpus(self, host: Host, cpus: int) -> None:
        """Scale a host's CPUs (and so its engine count) to `cpus`."""
        delta = cpus - host.total.get("CPU", 0)
        host.total["CPU"] = float(cpus)
        host.available["CPU"] = host.available.get("CPU", 0.0) + delta
        self._feasible.clear()
        self.reindex(host)
        self.cpu_changed(host)

    def start_engines(self, host: Host, count: int, **kw) -> None:
        """Ask a host's agent for `count` more engines (pool engines unless an
        actor_id is given)."""
        if kw.get("actor_id") is None:
            host.starting += count
            self.reindex(host)
        self.out.send(host.conn, m.StartEngines(count=count, **kw))

    def expect_engines(self, host: Host, count: int) -> None:
        """The host's agent starts `count` engines by itself (it registered)."""
        host.starting = count
        self.reindex(host)

    def feasible(self, request: dict, shape: tuple) -> bool:
        """Could some host ever run a task of this request (its `shape`), once idle?"""
        known = self._feasible.get(shape)
        if known is None:
            known = self._feasible[shape] = policy.feasible_anywhere(
                request, list(self.hosts.values()))
        return known

    # ------------------------------------------------------------------ engines
    def add_engine(self, engine: Engine) -> None:
        self.engines[engine.engine_id] = engine
        self.engine_by_conn[engine.conn] = engine.engine_id
        if engine.actor_id is None:
            host = self.hosts[engine.host_id]
            host.engines.add(engine.engine_id)
            host.idle.add(engine.engine_id)
            host.starting = max(0, host.starting - 1)
            self.reindex(host)

    def engine_gone(self, engine_id: str) -> Optional[Engine]:
        """An engine left (it died, or its host did): forget it; returns it."""
        engine = self.engines.pop(engine_id, None)
        if engine is None:
            return None
        host = self.hosts.get(engine.host_id)
        if host is not None and engine.actor_id is None:
            self._drop(host, engine_id)
        return engine

    def retire(self, host: Host, engine: Engine) -> None:
        """Stop an idle engine the host no longer needs."""
        self.engines.pop(engine.engine_id)
        self.engine_by_conn.pop(engine.conn, None)
        self._drop(host, engine.engine_id)
        self.out.send(host.conn, m.StopEngine(engine_id=engine.engine_id))

    def _drop(self, host: Host, engine_id: str) -> None:
        host.engines.discard(engine_id)
        host.idle.discard(engine_id)
        host.blocked.discard(engine_id)
        self.reindex(host)

    def engine_to(self, engine: Engine, state: str) -> None:
        """Move an engine to `state` (checked), keeping its host's sets true."""
        old = engine.state
        if state not in ENGINE_NEXT[old]:
            self._illegal(f"engine {engine.engine_id}: {old} -> {state}")
        engine.state = state
        if engine.actor_id is not None:
            return
        host = self.hosts.get(engine.host_id)
        if host is None or engine.engine_id not in host.engines:
            return
        if state == IDLE:
            host.idle.add(engine.engine_id)
        else:
            host.idle.discard(engine.engine_id)
        if state == BLOCKED or old == BLOCKED:        # the blocked count moves "short"
            if state == BLOCKED:
                host.blocked.add(engine.engine_id)
            else:
                host.blocked.discard(engine.engine_id)
            self.reindex(host)
        else:                                         # idle <-> busy (the hot path)
            self._reindex_idle(host)

    def assign(self, engine: Engine, task_id: Optional[str]) -> None:
        """Set what an engine runs: it is busy with a task, idle without one
        (a stopping engine stays stopping until its replacement joins)."""
        engine.task_id = task_id
        if engine.state != STOPPING:
            self.engine_to(engine, IDLE if task_id is None else BUSY)

    def stop(self, engine: Engine) -> None:
        """Kill an engine (its task was killed): it is not idle until its
        replacement registers."""
        self.engine_to(engine, STOPPING)
        engine.task_id = None
        host = self.hosts.get(engine.host_id)
        if host is not None:
            self.out.send(host.conn, m.StopEngine(engine_id=engine.engine_id, restart=True))

    def idle_engine(self, host: Host, gpu: bool = False) -> Optional[Engine]:
        """An idle engine for a task: one that never ran a GPU task for a
        CPU-only task (Ray isolates them by resource shape); a GPU task takes
        any, one that ran GPU tasks first."""
        other = None
        for eid in host.idle:
            engine = self.engines[eid]
            if engine.ran_gpu == gpu:
                return engine
            if gpu:
                other = engine
        return other

    # ------------------------------------------------------------------ indexes
    def reindex(self, host: Host) -> None:
        """Put `host` in (or out of) the idle and short indexes."""
        host_id = host.host_id
        if host_id not in self.hosts:
            return
        self._reindex_idle(host)
        if host.short_of_engines:
            if host_id not in self.short:
                self.short[host_id] = host
                self._in_order.clear()
        elif self.short.pop(host_id, None) is not None:
            self._in_order.clear()

    def _reindex_idle(self, host: Host) -> None:
        # Only a host entering or leaving an index drops the cached orders:
        # under load that is rare (a host with ten engines stays idle while any is).
        host_id = host.host_id
        if host.idle:
            if host_id not in self.idle and host_id in self.hosts:
                self.idle[host_id] = host
                self._in_order.clear()
                self.cpu_changed(host)
        elif self.idle.pop(host_id, None) is not None:
            self._in_order.clear()

    def cpu_changed(self, host: Host) -> None:
        """A host's available CPU changed (or it became idle): file it again."""
        if host.host_id in self.idle:
            heap = self._by_cpu
            heappush(heap, (-host.available.get("CPU", 0.0), host.seq, host.host_id))
            if len(heap) > 4 * len(self.idle) + 64:        # mostly stale: start afresh
                heap[:] = [(-h.available.get("CPU", 0.0), h.seq, h.host_id)
                           for h in self.idle.values()]
                heapify(heap)

    def most_free_idle_host(self) -> Optional[Host]:
        """The idle host with the most free CPU (the first to join among equals),
        without looking at the others: what choose_host picks for a CPU-only
        task with no stored arguments, if that host can take it."""
        heap, idle = self._by_cpu, self.idle
        while heap:
            neg_cpu, _, host_id = heap[0]
            host = idle.get(host_id)
            if host is not None and host.available.get("CPU", 0.0) == -neg_cpu:
                return host
            heappop(heap)
        return None

    def idle_hosts(self) -> list:
        """The hosts with an idle pool engine, in the order they joined (a
        cached list: read it, do not change it)."""
        hosts = self._in_order.get("idle")
        if hosts is None:
            hosts = self._in_order["idle"] = sorted(self.idle.values(), key=_by_seq)
        return hosts

    def hosts_that_may_start(self) -> list:
        """The hosts with an idle engine or short of engines, in the order they
        joined: the only ones where a backlog can start engines (or retire an
        idle one that ran GPU tasks to make way).  Cached, like idle_hosts."""
        if not self.short:
            return self.idle_hosts()
        hosts = self._in_order.get("start")
        if hosts is None:
            hosts = self._in_order["start"] = sorted({**self.idle, **self.short}.values(),
                                                     key=_by_seq)
        return hosts

    def check(self) -> None:
        """Raise AssertionError if the indexes or a host's sets are not what
        the tables say (a bug here); strict schedulers call it after every event."""
        for host in self.hosts.values():
            pool = [self.engines[e] for e in host.engines]
            assert host.idle == {e.engine_id for e in pool if e.state == IDLE}, host.host_id
            assert host.blocked == {e.engine_id for e in pool if e.state == BLOCKED}, host.host_id
        assert self.idle == {h.host_id: h for h in self.hosts.values() if h.idle}
        assert self.short == {h.host_id: h for h in self.hosts.values() if h.short_of_engines}
        for name, hosts in self._in_order.items():
            index = self.idle if name == "idle" else {**self.idle, **self.short}
            assert hosts == sorted(index.values(), key=_by_seq), name


def _by_seq(host: Host) -> int:
    return host.seq
