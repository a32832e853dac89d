"""What the scheduler shows of itself: `status`, `objects` and `memory`
answers (and the actor list) as typed records, built here from the components.

Each record is a frozen dataclass; `as_dict()` gives the plain dict that goes
over the wire (QueryReply values), so clients, the CLI and the widgets read
the same keys as before.  Building a view reads the components and changes
nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .lifecycle import BLOCKED, BUSY


class Record:
    __slots__ = ()

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HostStatus(Record):
    host_id: str
    hostname: str
    pid: int
    resources: dict
    available: dict
    store_dir: str
    engines: list
    address: str


@dataclass(frozen=True, slots=True)
class EngineStatus(Record):
    engine_id: str
    host_id: str
    pid: int
    task_id: Optional[str]
    blocked: bool
    actor_id: Optional[str]
    state: str                    # idle, busy (blocked too), stopping; "actor" for an actor's
    leased: bool = False          # lent to a driver (scheduler/leases.py): "idle" while it waits


@dataclass(frozen=True, slots=True)
class ActorInfo(Record):
    actor_id: str
    class_name: Optional[str]
    name: Optional[str]
    namespace: Optional[str]
    state: str                    # PENDING ... DEAD, as Ray writes them
    engine_id: Optional[str]
    host_id: Optional[str]
    pid: Optional[int]
    restarts: int
    detached: bool
    death_cause: str
    pending_calls: int


@dataclass(frozen=True, slots=True)
class ClientStatus(Record):
    kind: str
    client_id: str
    pid: int
    hostname: str


@dataclass(frozen=True, slots=True)
class HostMemory(Record):
    host_id: str
    hostname: str
    used: int
    limit: int
    spilled: int
    objects: int


@dataclass(frozen=True, slots=True)
class ObjectRow(Record):
    object_id: str
    state: str                    # pending, ready, error
    size: int
    type: str
    where: str                    # pending, inline, shared memory, spilled
    hosts: list
    spilled: bool
    reference_count: int
    held_by: list
    created_by: str
    last_used: float


@dataclass(frozen=True, slots=True)
class ClusterStatus(Record):
    cluster_id: str
    session_dir: str
    hosts: list                   # [HostStatus]
    departed_hosts: list          # [dict]: HostStatus.as_dict() of hosts that left
    engines: list                 # [EngineStatus]
    actors: list                  # [ActorInfo] of live actors
    clients: list                 # [ClientStatus] of drivers
    tasks: dict                   # live tasks by state, ended ones by how they ended
    objects: dict                 # {"count", "bytes"}
    memory: list                  # [HostMemory]


def host_status(h, waiting_leases: int = 0) -> HostStatus:
    # A lent engine waiting for its driver's next task holds its CPU, but any
    # other work has it at once (the lease is asked back): free, to a reader.
    available = dict(h.available)
    if waiting_leases:
        available["CPU"] = available.get("CPU", 0.0) + waiting_leases
    return HostStatus(h.host_id, h.hostname, h.pid, dict(h.total), available,
                      h.store_dir, sorted(h.engines),
                      h.object_address.rsplit(":", 1)[0].strip("[]"))


def engine_status(e) -> EngineStatus:
    leased = e.leased_to is not None
    state = "actor" if e.actor_id else BUSY if e.state == BLOCKED else \
        "idle" if leased and e.task_id is None else e.state
    return EngineStatus(e.engine_id, e.host_id, e.pid, e.task_id, e.state == BLOCKED, e.actor_id,
                        state, leased)


def _waiting_leases(s, host_id: str) -> int:
    return sum(1 for eid in s.leased if s.engines[eid].host_id == host_id
               and s.engines[eid].task_id is None)


def actor_info(actor, engines: dict) -> ActorInfo:
    engine = engines.get(actor.engine_id) if actor.engine_id else None
    o = actor.options
    return ActorInfo(actor.actor_id, o.get("class_name"), o.get("name"), o.get("namespace"),
                     actor.state.upper(), actor.engine_id, actor.host_id,
                     engine.pid if engine else None, actor.restarts, bool(o.get("detached")),
                     actor.death_cause,
                     len(actor.inflight) + sum(len(q) for q in actor.queues.values()))


def memory(hosts: dict, directory) -> list:
    return [HostMemory(h.host_id, h.hostname, h.store_used, h.store_limit, h.spilled_bytes,
                       directory.on_host(h.host_id)) for h in hosts.values()]


def describe_holder(peer) -> str:
    """Who holds a ref, in words: "driver pid 12", "engine h1.e0", "actor A"."""
    if peer is None:
        return "?"
    if peer.kind == "engine":
        return f"actor {peer.actor_id}" if peer.actor_id else f"engine {peer.engine_id}"
    return f"{peer.kind} pid {peer.pid}"


def object_rows(objects: dict, peers: dict, tasks: dict, actors: dict) -> list:
    """Every object but actors' handles (counted like objects, shown as actors)."""
    rows = []
    for obj in objects.values():
        if obj.object_id in actors:
            continue
        e = obj.entry
        holders = [f"{describe_holder(peers.get(c))} x{n}" if n > 1
                   else describe_holder(peers.get(c)) for c, n in obj.holders.items()]
        if obj.pins:
            holders.append(f"{obj.pins} pending task(s) or containing object(s)")
        producer = tasks.get(obj.producer) if obj.producer else None
        rows.append(ObjectRow(
            obj.object_id,
            "pending" if e is None else "error" if e.error else "ready",
            e.size if e else 0,
            e.type_name if e else "",
            "pending" if e is None else "inline" if e.host_id is None else (
                "spilled" if obj.spilled else "shared memory"),
            ([e.host_id] if e is not None and e.host_id else []) + sorted(obj.copies),
            obj.spilled,
            sum(obj.holders.values()) + obj.pins,
            holders,
            obj.created_by or (f"task {producer.spec.name} ({producer.spec.task_id}), running"
                               if producer else ""),
            obj.last_used))
    return rows


def cluster_status(s) -> ClusterStatus:
    """The `status` view of a SchedulerState `s`."""
    return ClusterStatus(
        s.cluster_id, s.session_dir,
        [host_status(h, _waiting_leases(s, h.host_id) if s.leased else 0)
         for h in s.hosts.values()],
        list(s.departed_hosts.values()),
        [engine_status(e) for e in s.engines.values()],
        [actor_info(a, s.engines) for a in s.actors.values() if a.state != "dead"],
        [ClientStatus(p.kind, p.client_id, p.pid, p.hostname) for p in s.peers.values()
         if p.kind == "driver"],
        s.task_table.counts(),
        {"count": len(s.objects), "bytes": s.directory.total_bytes()},
        memory(s.hosts, s.directory))
