"""Scheduling strategies (as in `ray.util.scheduling_strategies`).

The classes only carry the user's choice into `.options(scheduling_strategy=...)`;
the scheduler decides what they mean.  Besides these classes a strategy may
be the strings "DEFAULT" or "SPREAD", or None (the default).
"""
from __future__ import annotations

from typing import Any, Optional, Union

STRING_STRATEGIES = ("DEFAULT", "SPREAD")


class PlacementGroupSchedulingStrategy:
    """Run in a placement group's reserved resources.

    placement_group: the group (see shoal.util.placement_group), or None.
    placement_group_bundle_index: the bundle to use; -1 means any bundle.
    placement_group_capture_child_tasks: whether tasks the task or actor
        submits use the same group by default (None: the group's default).
    """

    def __init__(self, placement_group: Any, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: Optional[bool] = None) -> None:
        if (not isinstance(placement_group_bundle_index, int)
                or isinstance(placement_group_bundle_index, bool)):
            raise TypeError("placement_group_bundle_index must be an int, got "
                            f"{type(placement_group_bundle_index).__name__}")
        if placement_group_bundle_index < -1:
            raise ValueError("placement_group_bundle_index must be -1 (any bundle) or a "
                             f"bundle's index, got {placement_group_bundle_index}")
        if placement_group_capture_child_tasks not in (None, True, False):
            raise TypeError("placement_group_capture_child_tasks must be a bool or None")
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self) -> str:
        return (f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
                f"placement_group_bundle_index={self.placement_group_bundle_index})")


class NodeAffinitySchedulingStrategy:
    """Run on the node (host) with this id (`shoal.get_runtime_context().get_node_id()`
    or `shoal.nodes()[i]["NodeID"]`).

    soft=False: fail the task if that node is gone or cannot ever fit it.
    soft=True: prefer that node, run elsewhere when it is gone or busy.
    """

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False) -> None:
        if hasattr(node_id, "hex") and not isinstance(node_id, str):
            node_id = node_id.hex()          # Ray also accepts a NodeID object
        if not isinstance(node_id, str) or not node_id:
            raise TypeError(f"node_id must be a non-empty string, got {node_id!r}")
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be a bool, got {type(soft).__name__}")
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


SchedulingStrategyT = Union[None, str, PlacementGroupSchedulingStrategy,
                            NodeAffinitySchedulingStrategy]


def check_scheduling_strategy(strategy: Any) -> None:
    """TypeError/ValueError unless `strategy` is one Ray accepts."""
    if strategy is None or isinstance(strategy, (PlacementGroupSchedulingStrategy,
                                                 NodeAffinitySchedulingStrategy)):
        return
    if isinstance(strategy, str):
        if strategy not in STRING_STRATEGIES:
            raise ValueError(f"Invalid scheduling_strategy {strategy!r}: use 'DEFAULT', 'SPREAD', "
                             "a NodeAffinitySchedulingStrategy or a "
                             "PlacementGroupSchedulingStrategy")
        return
    raise TypeError(f"scheduling_strategy must be None, 'DEFAULT', 'SPREAD', a "
                    f"NodeAffinitySchedulingStrategy or a PlacementGroupSchedulingStrategy, "
                    f"got {type(strategy).__name__}")


__all__ = ["PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy",
           "SchedulingStrategyT", "check_scheduling_strategy"]
