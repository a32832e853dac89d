"""The scheduler's object directory: where each object is, who holds it, what
it costs each host's store, and how to make it again.

An object is pending until its task finishes or it is put.  It stays alive
while a client holds a ref to it (counted per connection), a pending task
needs it, or a live object contains it (pins); then it is freed on every
host that has a copy.

Lineage: a task whose results live in a host store keeps its spec, and its
arguments pinned, while those results live.  If their host is lost, the task
runs again to rebuild them (each rebuild spends one of its retries); a value
that was put, or whose task has no retries left, is reported lost.

Memory: the directory knows every stored object's size and host, and when it
was last used (made, put, or handed to a task).  When a host's shared memory
holds more than its limit, the least recently used objects are spilled to
that host's disk; readers find them there without being told.

One ObjectDirectory per scheduler owns the objects; what it decides leaves
through the Outbox (pushes, frees, SpillObjects).  It reads the membership's
peers and hosts, and calls back `handle_freed(object id)` when an object is
freed, which answers whether that was an actor's handle (the actors' business).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..protocol import messages as m
from ..protocol.messages import ObjectEntry

log = logging.getLogger("shoal.scheduler")


@dataclass(eq=False, slots=True)
class Obj:
    object_id: str
    entry: Optional[ObjectEntry] = None
    holders: dict = field(default_factory=dict)    # conn -> count of holdings
    pins: int = 0                                   # pending tasks + containing objects
    nested: list = field(default_factory=list)
    producer: Optional[str] = None
    subscribers: set = field(default_factory=set)
    created_by: str = ""
    last_used: float = 0.0
    spilled: bool = False
    copies: set = field(default_factory=set)       # other hosts holding a copy
    lineage: Optional["Lineage"] = None             # how to make it again


@dataclass(eq=False, slots=True)
class Lineage:
    spec: m.SubmitTask
    owner: object
    live: int                     # stored results still alive
    retries_left: int


def spill_choice(objects: list, used: int, limit: int) -> list:
    """Which of a host's stored (unspilled) objects to spill, least recently
    used first, until what stays is within `limit` bytes."""
    chosen = []
    for obj in sorted(objects, key=lambda o: o.last_used):
        if used <= limit:
            break
        used -= obj.entry.size
        chosen.append(obj)
    return chosen


class ObjectDirectory:
    """Every object the cluster knows: entries, holders and pins, copies,
    store use per host, spilling and lineage."""

    def __init__(self, out, peers: dict, hosts: dict, clock: Callable[[], float],
                 handle_freed: Callable[[str], bool]) -> None:
        self.out = out                   # the scheduler's Outbox
        self.peers = peers               # (the membership's: read only)
        self.hosts = hosts               # (the membership's: store use is kept here)
        self.clock = clock
        self.handle_freed = handle_freed
        self.objects: dict[str, Obj] = {}

    def make(self, oid: str) -> Obj:
        """The object `oid`, made pending if it is new."""
        obj = self.objects.get(oid)
        if obj is None:
            obj = self.objects[oid] = Obj(oid)
        return obj

    # ------------------------------------------------------------------ values
    def stored(self, obj: Obj, entry: ObjectEntry, nested: list, created_by: str) -> None:
        """An object's value exists now: count it in its host's store (spilling
        if that goes over its limit) and pin the objects it contains."""
        obj.entry = entry
        obj.created_by = created_by
        obj.last_used = self.clock()
        self.out.mark("objects")
        if nested:
            obj.nested = list(nested)
            for nid in obj.nested:
                if nid in self.objects:
                    self.objects[nid].pins += 1
        host = self.hosts.get(entry.host_id) if entry.host_id else None
        if host is not None:
            if entry.spilled:
                obj.spilled = True
                host.spilled_bytes += entry.size
            else:
                host.store_used += entry.size
                if host.store_used > host.store_limit:
                    self.spill(host)

    def publish(self, obj: Obj, delivered_to=None) -> None:
        """Push a newly ready object to its holders (not agents) and subscribers,
        but not to `delivered_to`: its engine sent it the value itself."""
        peers = self.peers
        for conn in obj.holders:
            peer = peers.get(conn)
            if peer is not None and peer.kind != "agent" and conn is not delivered_to:
                self.out.push(conn, obj.entry)
        for conn in obj.subscribers:
            if conn not in obj.holders and conn is not delivered_to:
                self.out.push(conn, obj.entry)
        obj.subscribers.clear()

    def located(self, oid: str, host_id: str) -> None:
        """A host made a copy of an object (a reader pulled it there)."""
        obj = self.objects.get(oid)
        host = self.hosts.get(host_id)
        if obj is None or obj.entry is None or host is None:
            return
        if host_id != obj.entry.host_id and host_id not in obj.copies:
            obj.copies.add(host_id)
            host.store_used += obj.entry.size

    def spill(self, host) -> None:
        """Spill least recently used objects until the host is within its limit."""
        on_host = [o for o in self.objects.values()
                   if o.entry is not None and o.entry.host_id == host.host_id and not o.spilled]
        chosen = spill_choice(on_host, host.store_used, host.store_limit)
        for obj in chosen:
            obj.spilled = True
            host.store_used -= obj.entry.size
            host.spilled_bytes += obj.entry.size
        if chosen:
            self.out.send(host.conn, m.SpillObjects(object_ids=[o.object_id for o in chosen]))

    # ------------------------------------------------------------------ references
    def hold(self, obj: Obj, conn, delta: int) -> None:
        """`conn` takes (+) or drops (-) holdings of `obj`; freed at none."""
        count = obj.holders.get(conn, 0) + delta
        if count > 0:
            obj.holders[conn] = count
        else:
            obj.holders.pop(conn, None)
            obj.subscribers.discard(conn)
            self.maybe_free(obj)

    def pin(self, oid: str) -> bool:
        """A pending task needs `oid`; False if it is gone."""
        obj = self.objects.get(oid)
        if obj is None:
            return False
        obj.pins += 1
        return True

    def unpin(self, oid: str) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins -= 1
            self.maybe_free(obj)

    def maybe_free(self, obj: Obj) -> None:
        """Free `obj` if nothing holds or pins it and its value exists: its
        copies are deleted, and what it pinned (contents, lineage) let go."""
        if obj.holders or obj.pins > 0 or obj.entry is None:
            return
        del self.objects[obj.object_id]
        self.out.mark("objects")
        if self.handle_freed(obj.object_id):
            return
        host = self.hosts.get(obj.entry.host_id) if obj.entry.host_id else None
        if host is not None:
            if obj.spilled:
                host.spilled_bytes -= obj.entry.size
            else:
                host.store_used -= obj.entry.size
            self.out.free(host.host_id, obj.object_id)
        if obj.lineage is not None:
            self._lineage_result_gone(obj.lineage)
        for host_id in obj.copies:
            copy_host = self.hosts.get(host_id)
            if copy_host is not None:
                copy_host.store_used -= obj.entry.size
                self.out.free(host_id, obj.object_id)
        for nid in obj.nested:
            self.unpin(nid)

    def peer_gone(self, conn) -> None:
        """A peer left: it subscribes to nothing and holds nothing any more."""
        for obj in list(self.objects.values()):
            obj.subscribers.discard(conn)
            if conn in obj.holders:
                self.hold(obj, conn, -obj.holders[conn])

    # ------------------------------------------------------------------ lineage
    def keep_lineage(self, spec: m.SubmitTask, owner, retries_left: int, results: list) -> bool:
        """Give a finished task's stored results its lineage; True if kept
        (its arguments then stay pinned while those results live)."""
        stored = [self.objects.get(oid) for oid, e in zip(spec.return_ids, results)
                  if e.host_id is not None and not e.error]
        stored = [o for o in stored if o is not None]
        if not stored or spec.actor_id is not None or spec.max_retries == 0:
            return False
        lineage = Lineage(spec, owner, len(stored), retries_left)
        for obj in stored:
            obj.lineage = lineage
        return True

    def _lineage_result_gone(self, lineage: Lineage) -> None:
        lineage.live -= 1
        if lineage.live == 0:
            for oid in (*lineage.spec.deps, *lineage.spec.nested):
                self.unpin(oid)

    def host_lost(self, host_id: str) -> tuple:
        """A host left: its copies are gone.  Objects with a copy elsewhere
        use it; returns (rebuild, lost): [(lineage, [objects])] to make again
        (now pending) and [(object, why)] that cannot be (the caller gives
        them an error entry and publishes them)."""
        rebuild: dict = {}
        lost = []
        for obj in list(self.objects.values()):
            obj.copies.discard(host_id)
            e = obj.entry
            if e is None or e.host_id != host_id:
                continue
            if obj.copies:                       # another host has it: use that copy
                obj.entry = e._replace(host_id=obj.copies.pop(), spilled=False)
                continue
            lineage = obj.lineage
            if lineage is not None and lineage.retries_left != 0:
                obj.entry = None
                rebuild.setdefault(id(lineage), (lineage, []))[1].append(obj)
                continue
            why = ("it was put, so it cannot be made again" if lineage is None and
                   obj.created_by.startswith("put") else
                   "the task that made it has no retries left")
            obj.lineage = None
            lost.append((obj, why))
        return list(rebuild.values()), lost

    def rebuilt(self, spec: m.SubmitTask, results: list) -> list:
        """A rebuild finished: returns [(object, entry)] for the objects that
        were lost (only those); copies nobody needs are freed."""
        ready = []
        for i, entry in enumerate(results):
            oid = spec.return_ids[i]
            obj = self.objects.get(oid)
            if obj is None or obj.entry is not None:
                if entry.host_id and (obj is None or obj.entry.host_id != entry.host_id):
                    self.out.free(entry.host_id, oid)
                continue
            ready.append((obj, entry))
        return ready

    def rebuilt_without_lineage(self, obj: Obj, lineage: Optional[Lineage]) -> None:
        """A rebuilt result that is an error or inline needs no lineage."""
        obj.lineage = None
        if lineage is not None:
            self._lineage_result_gone(lineage)

    # ------------------------------------------------------------------ totals
    def on_host(self, host_id: str) -> int:
        return sum(1 for o in self.objects.values()
                   if o.entry is not None and o.entry.host_id == host_id)

    def total_bytes(self) -> int:
        return sum(o.entry.size for o in self.objects.values() if o.entry)
