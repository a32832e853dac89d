"""Scheduling strategies, at Ray's import path (`ray.util.scheduling_strategies`).
Defined in shoal.core, which checks them in task and actor options."""
from ..core.scheduling_strategies import (
    NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy, SchedulingStrategyT,
    check_scheduling_strategy,
)

__all__ = ["PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy",
           "SchedulingStrategyT", "check_scheduling_strategy"]
