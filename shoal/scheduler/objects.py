"""Objects in the scheduler's state machine (mixed into SchedulerState):
the directory, reference counting, and each host store's memory budget.

An object is pending until its task finishes or it is put.  It stays alive
while a client holds a ref to it (counted per connection), a pending task
needs it, or a live object contains it; then it is freed on every host.

Lineage: a task whose results live in a host store keeps its spec, and its
arguments pinned, while those results live.  If their host is lost, the task
runs again to rebuild them (each rebuild spends one of its retries); a value
that was put, or whose task has no retries left, is reported lost.

Memory: the scheduler knows every stored object's size and host, and when
it was last used (made, put, or handed to a task).  When a host's shared
memory holds more than its limit, the least recently used objects are
spilled to that host's disk; readers find them there without being told.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from ..exceptions import ObjectLostError
from ..protocol import messages as m
from ..protocol.messages import ObjectEntry
from .lifecycle import READY, WAITING

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


class ObjectTracking:
    """Object handling of SchedulerState; uses its peers, hosts and tasks."""

    def _object_ready(self, obj: Obj, entry: ObjectEntry, nested: list, created_by: str) -> None:
        """An object's value exists now (a task returned it or it was put)."""
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
                    self._spill(host)
        self._publish(obj)

    def _on_put(self, conn, msg: m.PutObject) -> None:
        obj = self._object(msg.entry.object_id)
        peer = self.peers[conn]
        self._hold(obj, conn, +1)
        self._object_ready(obj, msg.entry, msg.nested, f"put by {peer.kind} pid {peer.pid}")

    def _on_located(self, conn, msg: m.ObjectLocated) -> None:
        obj = self.objects.get(msg.object_id)
        host = self.hosts.get(msg.host_id)
        if obj is None or obj.entry is None or host is None:
            return
        if msg.host_id != obj.entry.host_id and msg.host_id not in obj.copies:
            obj.copies.add(msg.host_id)
            host.store_used += obj.entry.size

    def _on_subscribe(self, conn, msg: m.Subscribe) -> None:
        for oid in msg.object_ids:
            obj = self.objects.get(oid)
            if obj is None:
                self.out.push(conn, self._lost_entry(oid))
            elif obj.entry is not None:
                obj.last_used = self.clock()
                self.out.push(conn, obj.entry)
            else:
                obj.subscribers.add(conn)

    def _on_ref_updates(self, conn, msg: m.RefUpdates) -> None:
        for oid, delta in msg.ops:
            obj = self.objects.get(oid)
            if obj is not None:
                self._hold(obj, conn, delta)

    def _hold(self, obj: Obj, conn, delta: int) -> None:
        count = obj.holders.get(conn, 0) + delta
        if count > 0:
            obj.holders[conn] = count
        else:
            obj.holders.pop(conn, None)
            obj.subscribers.discard(conn)
            self._maybe_free(obj)

    def _publish(self, obj: Obj) -> None:
        """Push a newly ready object to whoever waits for it."""
        for conn in obj.holders:
            if conn in self.peers and self.peers[conn].kind != "agent":
                self.out.push(conn, obj.entry)
        for conn in obj.subscribers:
            if conn not in obj.holders:
                self.out.push(conn, obj.entry)
        obj.subscribers.clear()
        self._wake_dependents(obj)

    def _wake_dependents(self, obj: Obj) -> None:
        for task in self.task_table.waiting_on(obj.object_id):
            if task.state == WAITING and obj.object_id in task.missing:
                if obj.entry.error:
                    self._finish_with_error(task, obj.entry, why=f"its argument {obj.object_id} "
                                                                 f"is an error")
                    continue
                task.missing.discard(obj.object_id)
                if not task.missing:
                    self._make_ready(task)

    def _unpin(self, oid: str) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins -= 1
            self._maybe_free(obj)

    def _maybe_free(self, obj: Obj) -> None:
        if obj.holders or obj.pins > 0 or obj.entry is None:
            return
        del self.objects[obj.object_id]
        self.out.mark("objects")
        if obj.object_id in self.actors:
            self._actor_handles_gone(obj.object_id)
            return
        host = self.hosts.get(obj.entry.host_id) if obj.entry.host_id else None
        if host is not None:
            if obj.spilled:
                host.spilled_bytes -= obj.entry.size
            else:
                host.store_used -= obj.entry.size
            self.out.free(host.host_id, obj.object_id)
        if obj.lineage is not None:
            obj.lineage.live -= 1
            if obj.lineage.live == 0:
                for oid in (*obj.lineage.spec.deps, *obj.lineage.spec.nested):
                    self._unpin(oid)
        for host_id in obj.copies:
            copy_host = self.hosts.get(host_id)
            if copy_host is not None:
                copy_host.store_used -= obj.entry.size
                self.out.free(host_id, obj.object_id)
        for nid in obj.nested:
            self._unpin(nid)

    # ------------------------------------------------------------------ lineage
    def _keep_lineage(self, task, results: list) -> bool:
        """Give a finished task's stored results its lineage; True if kept."""
        spec = task.spec
        stored = [self.objects.get(oid) for oid, e in zip(spec.return_ids, results)
                  if e.host_id is not None and not e.error]
        stored = [o for o in stored if o is not None]
        if not stored or spec.actor_id is not None or spec.max_retries == 0:
            return False
        lineage = Lineage(spec, task.owner, len(stored), task.retries_left)
        for obj in stored:
            obj.lineage = lineage
        return True

    def _host_objects_lost(self, host) -> None:
        """A host left: its copies are gone; rebuild or report what was only there."""
        rebuild: dict = {}
        for obj in list(self.objects.values()):
            obj.copies.discard(host.host_id)
            e = obj.entry
            if e is None or e.host_id != host.host_id:
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
            obj.entry = self._error_entry(obj.object_id, ObjectLostError(
                f"object {obj.object_id} ({obj.created_by or 'unknown origin'}) was lost with "
                f"host {host.host_id}, the only host holding it; {why}"))
            obj.lineage = None
            self._publish(obj)
        for lineage, objs in rebuild.values():
            self._rebuild(lineage, objs)
        if rebuild:
            self._unready_dependents({o.object_id for _, objs in rebuild.values() for o in objs})

    def _rebuild(self, lineage: "Lineage", objs: list) -> None:
        if lineage.retries_left > 0:
            lineage.retries_left -= 1
        spec = lineage.spec
        log.warning("rebuilding %s from lineage: re-running task %s (%s)",
                    ", ".join(o.object_id for o in objs), spec.name, spec.task_id)
        owner = lineage.owner if lineage.owner in self.peers else next(
            (c for o in objs for c in o.holders), None)
        task = self._new_task(spec, owner, again="run again from its lineage: results of it "
                                                 "were lost with their host")
        task.rebuilding = True
        task.retries_left = lineage.retries_left
        for oid in spec.deps:
            dep = self.objects.get(oid)
            if dep is not None and dep.entry is None:
                self.task_table.wait_for(task, oid)
        if not task.missing:
            self._make_ready(task)

    def _rebuilt(self, task, results: list, nested: list) -> None:
        """A rebuild finished: fill in the objects that were lost (only those)."""
        spec = task.spec
        for i, entry in enumerate(results):
            obj = self.objects.get(spec.return_ids[i])
            if obj is None or obj.entry is not None:
                if entry.host_id and (obj is None or obj.entry.host_id != entry.host_id):
                    self.out.free(entry.host_id, spec.return_ids[i])
                continue
            lineage = obj.lineage
            self._object_ready(obj, entry, [], obj.created_by)
            if entry.error or entry.host_id is None:
                obj.lineage = None
                if lineage is not None:
                    lineage.live -= 1
                    if lineage.live == 0:
                        for oid in (*spec.deps, *spec.nested):
                            self._unpin(oid)

    def _unready_dependents(self, lost: set) -> None:
        """Queued tasks whose arguments are being rebuilt wait for them again."""
        for task in list(self.tasks.values()):
            if task.state != READY or task.spec.method == "__init__":
                continue
            missing = lost.intersection(task.spec.deps)
            if missing:
                self._to(task, WAITING, "an argument was lost with a host and is being rebuilt")
                for oid in missing:
                    self.task_table.wait_for(task, oid)

    # ------------------------------------------------------------------ memory
    def _spill(self, host) -> None:
        """Spill least recently used objects until the host is within its limit."""
        candidates = sorted((o for o in self.objects.values()
                             if o.entry is not None and o.entry.host_id == host.host_id
                             and not o.spilled), key=lambda o: o.last_used)
        chosen = []
        for obj in candidates:
            if host.store_used <= host.store_limit:
                break
            obj.spilled = True
            host.store_used -= obj.entry.size
            host.spilled_bytes += obj.entry.size
            chosen.append(obj.object_id)
        if chosen:
            self.out.send(host.conn, m.SpillObjects(object_ids=chosen))

    def _describe_holder(self, conn) -> str:
        peer = self.peers.get(conn)
        if peer is None:
            return "?"
        if peer.kind == "engine":
            return f"actor {peer.actor_id}" if peer.actor_id else f"engine {peer.engine_id}"
        return f"{peer.kind} pid {peer.pid}"

    def _query_objects(self, args: dict) -> list:
        rows = []
        for obj in self.objects.values():
            if obj.object_id in self.actors:
                continue                      # actor handles are counted like objects
            e = obj.entry
            holders = [f"{self._describe_holder(c)} x{n}" if n > 1 else self._describe_holder(c)
                       for c, n in obj.holders.items()]
            if obj.pins:
                holders.append(f"{obj.pins} pending task(s) or containing object(s)")
            producer = self.tasks.get(obj.producer) if obj.producer else None
            rows.append({
                "object_id": obj.object_id,
                "state": "pending" if e is None else "error" if e.error else "ready",
                "size": e.size if e else 0,
                "type": e.type_name if e else "",
                "where": "pending" if e is None else "inline" if e.host_id is None else (
                    "spilled" if obj.spilled else "shared memory"),
                "hosts": ([e.host_id] if e is not None and e.host_id else []) + sorted(obj.copies),
                "spilled": obj.spilled,
                "reference_count": sum(obj.holders.values()) + obj.pins,
                "held_by": holders,
                "created_by": obj.created_by or (
                    f"task {producer.spec.name} ({producer.spec.task_id}), running"
                    if producer else ""),
                "last_used": obj.last_used,
            })
        return rows

    def _query_memory(self, args: dict) -> list:
        return [{"host_id": h.host_id, "hostname": h.hostname, "used": h.store_used,
                 "limit": h.store_limit, "spilled": h.spilled_bytes,
                 "objects": sum(1 for o in self.objects.values()
                                if o.entry is not None and o.entry.host_id == h.host_id)}
                for h in self.hosts.values()]
