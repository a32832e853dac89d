"""The messages about objects, in the scheduler's state machine (mixed into
SchedulerState): puts, locations, subscriptions and ref counts go to the
object directory (objects.py); a value that exists wakes the tasks waiting
for it; a host's loss rebuilds what lineage can make again."""
from __future__ import annotations

import logging

from ..exceptions import ObjectLostError
from ..protocol import messages as m
from ..protocol.messages import ObjectEntry
from . import views
from .lifecycle import READY, WAITING
from .objects import Lineage, Obj

log = logging.getLogger("shoal.scheduler")


class ObjectTracking:
    """Object handling of SchedulerState; uses its directory, tasks and actors."""

    def _object_ready(self, obj: Obj, entry: ObjectEntry, nested: list, created_by: str,
                      delivered_to=None) -> None:
        """An object's value exists now (a task returned it or it was put);
        `delivered_to` has it already (see ExecuteTask.reply_to)."""
        self.directory.stored(obj, entry, nested, created_by)
        self._publish(obj, delivered_to)

    def _publish(self, obj: Obj, delivered_to=None) -> None:
        """Push a newly ready object to whoever waits for it, and wake its tasks."""
        self.directory.publish(obj, delivered_to)
        for task in self.task_table.waiting_on(obj.object_id):
            if task.state == WAITING and obj.object_id in task.missing:
                if obj.entry.error:
                    self._finish_with_error(task, obj.entry, why=f"its argument {obj.object_id} "
                                                                 f"is an error")
                    continue
                task.missing.discard(obj.object_id)
                if not task.missing:
                    self._make_ready(task)

    def _on_put(self, conn, msg: m.PutObject) -> None:
        obj = self.directory.make(msg.entry.object_id)
        peer = self.peers[conn]
        self.directory.hold(obj, conn, +1)
        self._object_ready(obj, msg.entry, msg.nested, f"put by {peer.kind} pid {peer.pid}")

    def _on_located(self, conn, msg: m.ObjectLocated) -> None:
        self.directory.located(msg.object_id, msg.host_id)

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
        hold, objects = self.directory.hold, self.objects
        for oid, delta in msg.ops:
            obj = objects.get(oid)
            if obj is not None:
                hold(obj, conn, delta)

    def _actor_handle_freed(self, object_id: str) -> bool:
        """The directory freed `object_id`: if it is an actor's handle, the
        actor is out of scope (its own business); True if it was one."""
        if object_id in self.actors:
            self._actor_handles_gone(object_id)
            return True
        return False

    # ------------------------------------------------------------------ lineage
    def _host_objects_lost(self, host) -> None:
        """A host left: rebuild or report what only it had."""
        rebuild, lost = self.directory.host_lost(host.host_id)
        for obj, why in lost:
            obj.entry = self._error_entry(obj.object_id, ObjectLostError(
                f"object {obj.object_id} ({obj.created_by or 'unknown origin'}) was lost with "
                f"host {host.host_id}, the only host holding it; {why}"))
            self._publish(obj)
        for lineage, objs in rebuild:
            self._rebuild(lineage, objs)
        if rebuild:
            self._unready_dependents({o.object_id for _, objs in rebuild for o in objs})

    def _rebuild(self, lineage: Lineage, objs: list) -> None:
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
        for obj, entry in self.directory.rebuilt(task.spec, results):
            lineage = obj.lineage
            self._object_ready(obj, entry, [], obj.created_by)
            if entry.error or entry.host_id is None:
                self.directory.rebuilt_without_lineage(obj, lineage)

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

    # ------------------------------------------------------------------ views
    def _query_objects(self, args: dict) -> list:
        return [row.as_dict() for row in views.object_rows(self.objects, self.peers, self.tasks,
                                                          self.actors)]

    def _query_memory(self, args: dict) -> list:
        return [row.as_dict() for row in views.memory(self.hosts, self.directory)]
