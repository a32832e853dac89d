"""Placement in the scheduler's state machine (mixed into SchedulerState):
scheduling strategies and placement groups.

A task's or actor's `placement` (SubmitTask.placement) is one of
  {"kind": "spread"}                               SPREAD: the least loaded host
  {"kind": "node", "node": host id, "soft": bool}  NodeAffinitySchedulingStrategy
  {"kind": "pg", "pg": group id, "bundle": i}      PlacementGroupSchedulingStrategy
                                                   (bundle -1: any bundle)

A placement group reserves its bundles' resources on hosts (policy.place_bundles)
as soon as they fit, taking them from the hosts' available resources; its
tasks and actors then take theirs from a bundle's pool instead of the host's.
Its "ready" object becomes ready when it is placed.  Removing it (or its
owner leaving, unless detached) gives the reservation back: its queued tasks
fail, its running tasks' engines are stopped, its actors die (Ray).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from ..exceptions import TaskPlacementGroupRemoved, TaskUnschedulableError
from ..protocol import messages as m
from ..protocol.messages import ObjectEntry
from . import policy
from .lifecycle import HOLDING

log = logging.getLogger("shoal.scheduler")


PENDING, CREATED, REMOVED = "PENDING", "CREATED", "REMOVED"     # as Ray names them
GROUP_TRANSITIONS = frozenset({
    (PENDING, CREATED),                 # its bundles fit: reserved
    (CREATED, PENDING),                 # a host of its bundles was lost: placed again
    (PENDING, REMOVED), (CREATED, REMOVED),
})


@dataclass(eq=False, slots=True)
class Bundle:
    resources: dict
    host_id: Optional[str] = None
    available: dict = field(default_factory=dict)     # what its tasks have not taken


@dataclass(eq=False, slots=True)
class PlacementGroup:
    pg_id: str
    owner: Any
    bundles: list                     # [Bundle]
    strategy: str
    name: str = ""
    detached: bool = False
    state: str = PENDING              # PENDING -> CREATED -> REMOVED (GROUP_TRANSITIONS)
    ready_value: bytes = b""
    warned_infeasible: bool = False

    @property
    def ready_id(self) -> str:
        return f"{self.pg_id}/ready"


class Placement:
    """Placement of SchedulerState; uses its hosts, engines, tasks and actors."""

    def _init_placement(self) -> None:
        self.placement_groups: dict[str, PlacementGroup] = {}
        self.pending_groups: list = []

    # ------------------------------------------------------------------ groups
    def _group_to(self, pg: PlacementGroup, state: str) -> None:
        """Move a group to `state`: only along GROUP_TRANSITIONS (else a bug,
        reported like a task's illegal transition)."""
        if (pg.state, state) not in GROUP_TRANSITIONS:
            self.task_table.illegal(f"placement group {pg.pg_id}: {pg.state} -> {state}")
        pg.state = state

    def _on_create_placement_group(self, conn, msg: m.CreatePlacementGroup) -> None:
        pg = PlacementGroup(msg.pg_id, conn, [Bundle(dict(b)) for b in msg.bundles],
                            msg.strategy, msg.name, msg.detached, ready_value=msg.ready_value)
        self.placement_groups[pg.pg_id] = pg
        self.directory.hold(self.directory.make(pg.ready_id), conn, +1)
        self.pending_groups.append(pg.pg_id)
        self._schedule()

    def _place_groups(self) -> None:
        hosts = list(self.hosts.values())
        for pg_id in list(self.pending_groups):
            pg = self.placement_groups.get(pg_id)
            if pg is None or pg.state != PENDING:
                self.pending_groups.remove(pg_id)
                continue
            requests = [b.resources for b in pg.bundles]
            chosen = policy.place_bundles(requests, pg.strategy, hosts)
            if chosen is None:
                if hosts and not pg.warned_infeasible and pg.owner in self.peers and \
                        not policy.bundles_feasible(requests, pg.strategy, hosts):
                    pg.warned_infeasible = True
                    self.out.send(pg.owner, m.Notice(text=(
                        f"placement group {pg.name or pg.pg_id} ({pg.strategy}, bundles "
                        f"{requests}) cannot be placed on the hosts of this cluster; it "
                        f"stays pending until hosts that can hold it join.")))
                continue
            for bundle, host in zip(pg.bundles, chosen):
                host.acquire(bundle.resources)
                bundle.host_id, bundle.available = host.host_id, dict(bundle.resources)
            self._group_to(pg, CREATED)
            self.pending_groups.remove(pg_id)
            log.info("placement group %s placed on %s", pg_id, [h.host_id for h in chosen])
            obj = self.objects.get(pg.ready_id)
            if obj is not None:
                self._object_ready(obj, ObjectEntry(pg.ready_id, inline=pg.ready_value,
                                                    size=len(pg.ready_value)), [],
                                   f"placement group {pg_id}")
            self.out.mark("cluster")

    def _on_remove_placement_group(self, conn, msg: m.RemovePlacementGroup) -> None:
        pg = self.placement_groups.get(msg.pg_id)
        if pg is not None:
            self._remove_group(pg, "it was removed with remove_placement_group()")
            self._schedule()

    def _remove_group(self, pg: PlacementGroup, why: str) -> None:
        if pg.state == REMOVED:
            return
        created = pg.state == CREATED
        self._group_to(pg, REMOVED)
        log.info("placement group %s removed: %s", pg.pg_id, why)
        for actor in list(self.actors.values()):
            if (actor.creation.placement or {}).get("pg") == pg.pg_id:
                self._actor_dead(actor, f"its placement group {pg.pg_id} was removed")
        for task in list(self.tasks.values()):
            if (task.spec.placement or {}).get("pg") != pg.pg_id or task.spec.actor_id:
                continue
            error = self._error_entry("", TaskPlacementGroupRemoved(
                f"task {task.spec.name!r} ({task.spec.task_id}) ran in placement group "
                f"{pg.pg_id}, which was removed"))
            if task.state in HOLDING:        # queued ones are skipped by their engine
                engine = self.engines.get(task.engine_id)
                self._finish_with_error(task, error, why=f"its placement group {pg.pg_id} "
                                                         f"was removed: its engine is stopped")
                if engine is not None and engine.host_id in self.hosts:
                    self._stop_engine(engine)     # Ray kills what runs in a removed group
            else:
                self._finish_with_error(task, error, why=f"its placement group {pg.pg_id} "
                                                         f"was removed")
        if created:
            for bundle in pg.bundles:
                host = self.hosts.get(bundle.host_id)
                if host is not None:
                    host.release(bundle.resources)
        obj = self.objects.get(pg.ready_id)
        if obj is not None and obj.entry is None:
            self._object_ready(obj, self._error_entry(pg.ready_id, TaskPlacementGroupRemoved(
                f"placement group {pg.pg_id} was removed before it was placed")), [], "")
        self.out.mark("cluster")

    def _groups_owner_gone(self, conn) -> None:
        for pg in list(self.placement_groups.values()):
            if pg.owner is conn and not pg.detached:
                self._remove_group(pg, "its owner left")

    def _groups_host_lost(self, host_id: str) -> None:
        """Bundles on a lost host are gone: the group is placed again."""
        for pg in self.placement_groups.values():
            if pg.state == CREATED and any(b.host_id == host_id for b in pg.bundles):
                for b in pg.bundles:
                    host = self.hosts.get(b.host_id)
                    if host is not None and b.host_id != host_id:
                        host.release(b.resources)
                    b.host_id, b.available = None, {}
                self._group_to(pg, PENDING)
                self.pending_groups.append(pg.pg_id)

    def _query_placement_groups(self, args: dict) -> list:
        return [{"placement_group_id": pg.pg_id, "name": pg.name, "strategy": pg.strategy,
                 "state": pg.state, "bundles": {i: b.resources for i, b in enumerate(pg.bundles)},
                 "bundles_to_node_id": {i: b.host_id for i, b in enumerate(pg.bundles)},
                 "bundles_available": {i: b.available for i, b in enumerate(pg.bundles)}}
                for pg in self.placement_groups.values() if pg.state != REMOVED]

    # ------------------------------------------------------------------ choosing
    def _placement_error(self, spec) -> Optional[str]:
        """Why a placement can never be met now (the task or actor fails), or None."""
        where = spec.placement
        if not where:
            return None
        if where["kind"] == "node" and not where["soft"] and where["node"] not in self.hosts:
            return (f"it must run on node {where['node']} (NodeAffinitySchedulingStrategy, "
                    f"soft=False), which is not in the cluster")
        if where["kind"] == "pg":
            pg = self.placement_groups.get(where["pg"])
            if pg is None or pg.state == REMOVED:
                return f"its placement group {where['pg']} does not exist (or was removed)"
            if where["bundle"] >= len(pg.bundles):
                return (f"bundle index {where['bundle']} is out of range: placement group "
                        f"{where['pg']} has {len(pg.bundles)} bundles")
        return None

    def _unschedulable(self, task, why: str) -> None:
        self._finish_with_error(task, self._error_entry("", TaskUnschedulableError(
            f"task {task.spec.name!r} ({task.spec.task_id}) cannot be scheduled: {why}")))

    def _candidates(self, spec, hosts: list) -> list:
        """The hosts a placement allows (all for None, SPREAD and soft affinity)."""
        where = spec.placement
        if not where:
            return hosts
        if where["kind"] == "node" and not where["soft"]:
            return [h for h in hosts if h.host_id == where["node"]]
        if where["kind"] == "pg":
            on = {b.host_id for b in self._bundles(spec)}
            return [h for h in hosts if h.host_id in on]
        return hosts

    def _bundles(self, spec) -> list:
        where = spec.placement
        pg = self.placement_groups.get(where["pg"])
        if pg is None or pg.state != CREATED:
            return []
        return pg.bundles if where["bundle"] == -1 else [pg.bundles[where["bundle"]]]

    def _bundle_for(self, spec, request: dict, host) -> Optional[Bundle]:
        for bundle in self._bundles(spec):
            if bundle.host_id == host.host_id and policy.fits(request, bundle.available):
                return bundle
        return None

    def _choose_placed_host(self, spec, request: dict, hosts: list, has_engine,
                            local_bytes: Optional[dict]):
        """policy.choose_host, within what the task's placement allows."""
        where = spec.placement
        if not where:
            return policy.choose_host(request, hosts, has_engine, local_bytes)
        kind = where["kind"]
        if kind == "pg":
            return next((h for h in self._candidates(spec, hosts) if has_engine(h)
                         and self._bundle_for(spec, request, h) is not None), None)
        if kind == "spread":
            return policy.least_loaded([h for h in hosts if policy.fits(request, h.available)
                                        and has_engine(h)], self._host_load)
        if kind == "node" and where["soft"]:
            preferred = [h for h in hosts if h.host_id == where["node"]]
            host = policy.choose_host(request, preferred, has_engine, None)
            if host is not None or any(policy.fits(request, h.total) for h in preferred):
                # on it, or wait for it while it is busy but could run the task...
                if host is not None or not self._others_idle(request, hosts, preferred,
                                                              has_engine):
                    return host
            return policy.choose_host(request, hosts, has_engine, local_bytes)
        return policy.choose_host(request, self._candidates(spec, hosts), has_engine, None)

    def _others_idle(self, request, hosts, preferred, has_engine) -> bool:
        """Soft affinity runs elsewhere rather than wait (Ray spills it over)."""
        return any(policy.fits(request, h.available) and has_engine(h)
                   for h in hosts if h not in preferred)

    def _host_load(self, host) -> tuple:
        actors = sum(1 for a in self.actors.values()
                     if a.host_id == host.host_id and a.state != "dead")
        return (len(host.engines) - len(host.idle) + actors, -host.available.get("CPU", 0))

    def _pool(self, spec, request: dict, host) -> Optional[dict]:
        """Where a task's or actor's resources come from: a bundle's pool in
        its placement group, or None for its host's."""
        if spec.placement and spec.placement.get("kind") == "pg":
            bundle = self._bundle_for(spec, request, host)
            return bundle.available if bundle is not None else {}
        return None
