"""Placement groups and scheduling strategies, client side (Ray's
`ray.util.placement_group` API; the scheduler's side is scheduler/placement.py).

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    shoal.get(pg.ready())
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    remove_placement_group(pg)
"""
from __future__ import annotations

import numbers
from typing import Optional

from ..protocol import messages as m
from ..protocol.serialization import serialize
from . import runtime
from .ids import from_hex, to_hex
from .object_ref import ObjectRef, _rebuild_ref, owned_ref
from .scheduling_strategies import (
    NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy,
)

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A group of resource bundles reserved on hosts.  `ready()` is a ref that
    is ready once every bundle is reserved; `wait(timeout_seconds)` says
    whether that happened in time."""

    def __init__(self, pg_id: str, bundle_specs: list, strategy: str = "PACK",
                 _ready: Optional[ObjectRef] = None) -> None:
        self._pg_id = pg_id
        self.bundle_specs = bundle_specs
        self.strategy = strategy
        self._ready = _ready

    @property
    def id(self) -> str:
        return to_hex(self._pg_id)

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> ObjectRef:
        if self._ready is None:
            self._ready = _rebuild_ref(f"{self._pg_id}/ready")
        return self._ready

    def wait(self, timeout_seconds: float = 30) -> bool:
        from .api import wait
        ready, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __reduce__(self):
        return (PlacementGroup, (self._pg_id, self.bundle_specs, self.strategy))

    def __eq__(self, other) -> bool:
        return isinstance(other, PlacementGroup) and other._pg_id == self._pg_id

    def __hash__(self) -> int:
        return hash(self._pg_id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id}, {self.strategy}, {self.bundle_specs})"


def _check_bundles(bundles) -> list:
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("The placement group `bundles` argument must be a non-empty list "
                         f"of dicts, got {bundles!r}")
    out = []
    for bundle in bundles:
        if not isinstance(bundle, dict):
            raise ValueError(f"Each bundle must be a dict of resource -> amount, got {bundle!r}")
        clean = {}
        for name, amount in bundle.items():
            if not isinstance(name, str) or not isinstance(amount, numbers.Real) \
                    or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"Bundle {bundle!r}: amounts must be non-negative numbers "
                                 f"keyed by resource name")
            if amount:
                clean[name] = float(amount)
        if not clean:
            raise ValueError(f"Bundles cannot be empty or only zeros, got {bundle!r}")
        out.append(clean)
    return out


def _foreign(feature: str):
    """The foreign backend's `feature` (its own placement groups), or None on
    shoal's own scheduler; NotImplementedError where that backend has none."""
    from . import backend
    made = backend.foreign()
    if made is None:
        return None
    call = getattr(made, feature, None)
    if call is None:
        raise NotImplementedError(f"{feature} is not available on the {made.name} backend")
    return call


def placement_group(bundles: list, strategy: str = "PACK", name: str = "",
                    lifetime: Optional[str] = None, _soft_target_node_id=None,
                    bundle_label_selector=None) -> PlacementGroup:
    """Reserve `bundles` of resources on hosts, placed by `strategy` (PACK,
    SPREAD, STRICT_PACK or STRICT_SPREAD); returns at once (see `ready()`).
    On another engine (Ray), that engine's own placement group."""
    foreign = _foreign("placement_group")
    if foreign is not None:
        more = {k: v for k, v in dict(_soft_target_node_id=_soft_target_node_id,
                                      bundle_label_selector=bundle_label_selector).items()
                if v is not None}
        return foreign(bundles, strategy=strategy, name=name, lifetime=lifetime, **more)
    specs = _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}: use one of "
                         f"{', '.join(STRATEGIES)}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"placement group lifetime must be None or 'detached', got {lifetime!r}")
    if not isinstance(name, str):
        raise TypeError(f"placement group name must be a string, got {type(name).__name__}")
    client = runtime.current().client
    pg_id = client.new_id("G")
    ready = owned_ref(client, f"{pg_id}/ready")
    pg = PlacementGroup(pg_id, [dict(b) for b in bundles], strategy, ready)
    client.send(m.CreatePlacementGroup(
        pg_id=pg_id, bundles=specs, strategy=strategy, name=name,
        detached=lifetime == "detached",
        ready_value=serialize(PlacementGroup(pg_id, pg.bundle_specs, strategy)).to_bytes()))
    return pg


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Give the group's reservation back; what runs in it is stopped (Ray)."""
    foreign = _foreign("remove_placement_group")
    if foreign is not None:
        return foreign(placement_group)
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group expects a PlacementGroup, got "
                        f"{type(placement_group).__name__}")
    runtime.current().client.send(m.RemovePlacementGroup(pg_id=placement_group._pg_id))


def placement_group_table(placement_group: Optional[PlacementGroup] = None) -> dict:
    """Live groups by hex id: name, strategy, state, bundles, bundles_to_node_id."""
    foreign = _foreign("placement_group_table")
    if foreign is not None:
        return foreign(placement_group)
    rows = runtime.current().client.query("placement_groups")
    table = {}
    for row in rows:
        row = {**row, "placement_group_id": to_hex(row["placement_group_id"]),
               "bundles_to_node_id": {i: to_hex(h) for i, h in
                                      row["bundles_to_node_id"].items()}}
        table[row["placement_group_id"]] = row
    if placement_group is not None:
        return table.get(placement_group.id, {})
    return table


def get_current_placement_group() -> Optional[PlacementGroup]:
    """The group the calling task runs in, if any (None in the driver)."""
    foreign = _foreign("get_current_placement_group")
    if foreign is not None:
        return foreign()
    from .client import current_task
    msg = current_task.get()
    if msg is None:
        return None
    where = msg.placement
    if msg.method not in (None, "__init__"):      # an actor's call: where the actor was placed
        where = runtime.current().placement
    if not where or where.get("kind") != "pg":
        return None
    return PlacementGroup(where["pg"], [], "")


def placement_of(options: dict, in_task: bool = False) -> Optional[dict]:
    """The wire form (SubmitTask.placement) of a task's or actor's
    scheduling_strategy / placement_group options; None for DEFAULT."""
    strategy = options.get("scheduling_strategy")
    if strategy is None and options.get("placement_group") not in (None, "default"):
        strategy = PlacementGroupSchedulingStrategy(       # Ray's older spelling
            options["placement_group"], options.get("placement_group_bundle_index", -1))
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return {"kind": "spread"}
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return {"kind": "node", "node": from_hex(strategy.node_id), "soft": strategy.soft}
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        pg = strategy.placement_group
        if pg is None:
            return None
        if not isinstance(pg, PlacementGroup):
            raise TypeError(f"placement_group must be a PlacementGroup, got {type(pg).__name__}")
        index = strategy.placement_group_bundle_index
        if index >= pg.bundle_count > 0:
            raise ValueError(f"placement_group_bundle_index {index} is out of range: the "
                             f"placement group has {pg.bundle_count} bundles")
        return {"kind": "pg", "pg": pg._pg_id, "bundle": index}
    raise TypeError(f"unsupported scheduling_strategy {strategy!r}")
