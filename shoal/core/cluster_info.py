"""The shapes of what a backend tells the widgets about its cluster.

The live widgets (shoal.widgets) draw these, whichever engine runs the work:
shoal's own scheduler answers with them as they are (its `status`,
`objects` and `memory` queries), another engine (shoal.backends.ray) maps
its own state onto them.  Keys not listed here may be present (a backend's
extras); widgets read only these.  Ids are short strings that identify a
host or engine within one cluster; times are wall-clock seconds.
"""
from __future__ import annotations

from typing import Optional, TypedDict


class HostStatus(TypedDict):
    host_id: str
    hostname: str
    resources: dict              # total {"CPU": 4.0, "GPU": 0.0, ...}
    available: dict              # free now, same keys
    engines: list                # engine ids on this host


class EngineStatus(TypedDict):
    engine_id: str               # one lane of the timeline
    host_id: str
    state: str                   # "idle", "busy", "actor", ...
    leased: bool                 # lent to a driver, which sends it tasks itself


class StoreMemory(TypedDict):
    """One host's object store."""
    host_id: str
    hostname: str
    used: int                    # bytes
    limit: int
    spilled: int
    objects: int


class ObjectInfo(TypedDict):
    """One object the cluster holds (a row of the object store widget)."""
    object_id: str
    type: str                    # the value's type name, "" when unknown
    size: int                    # bytes
    reference_count: int
    hosts: list                  # host ids holding a copy (or its owner's, where that is all that is known)
    spilled: bool
    where: str
    created_by: str              # the call site or task that made it, "" when unknown


class ActorInfo(TypedDict):
    """One actor (shoal.util.state.list_actors), as in `ray list actors`."""
    actor_id: str
    class_name: Optional[str]
    name: Optional[str]             # "" or None when unnamed
    state: str                      # PENDING_CREATION, ALIVE, RESTARTING, DEAD, as Ray writes them
    engine_id: Optional[str]        # the engine (worker process) running it
    host_id: Optional[str]
    pid: Optional[int]
    restarts: int
    detached: bool
    death_cause: str


class ClusterStatus(TypedDict):
    hosts: list                  # [HostStatus]
    engines: list                # [EngineStatus]
    memory: list                 # [StoreMemory]
    tasks: dict                  # counts by state: "running", "finished", "failed", ...
    actors: list                 # one entry per live actor


class ClusterKind(TypedDict):
    """How the cluster widget names the cluster, and what its buttons do."""
    address: str
    kind: str                    # "embedded local cluster", "Ray 2.9 cluster", ...
    owned: bool                  # stopping it is ours to do (else: disconnect)
    scalable: bool               # the add / remove buttons can change its size


__all__ = ["HostStatus", "EngineStatus", "StoreMemory", "ObjectInfo", "ClusterStatus",
           "ClusterKind"]
