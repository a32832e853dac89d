"""Placement groups, at Ray's import path (`ray.util.placement_group`)."""
from ..core.placement_group import (
    PlacementGroup, get_current_placement_group, placement_group, placement_group_table,
    remove_placement_group,
)

__all__ = ["PlacementGroup", "placement_group", "remove_placement_group",
           "placement_group_table", "get_current_placement_group"]
