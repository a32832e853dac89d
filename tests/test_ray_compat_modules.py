"""Ray's public modules exist under shoal with Ray's names and checks."""
from __future__ import annotations

import pytest

from shoal.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy, check_scheduling_strategy,
)


def test_scheduling_strategy_classes_keep_their_arguments():
    s = NodeAffinitySchedulingStrategy(node_id="ab12", soft=True)
    assert (s.node_id, s.soft) == ("ab12", True)
    pg = object()
    p = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1,
                                         placement_group_capture_child_tasks=True)
    assert (p.placement_group, p.placement_group_bundle_index,
            p.placement_group_capture_child_tasks) == (pg, 1, True)
    assert PlacementGroupSchedulingStrategy(pg).placement_group_bundle_index == -1


@pytest.mark.parametrize("strategy", [None, "DEFAULT", "SPREAD",
                                      NodeAffinitySchedulingStrategy("x", soft=False)])
def test_accepted_strategies(strategy):
    check_scheduling_strategy(strategy)


def test_bad_strategies():
    with pytest.raises(ValueError, match="SPREAD"):
        check_scheduling_strategy("PACK")
    with pytest.raises(TypeError):
        check_scheduling_strategy(3)
    with pytest.raises(TypeError):
        NodeAffinitySchedulingStrategy(3, soft=False)
    with pytest.raises(TypeError):
        NodeAffinitySchedulingStrategy("x", soft="yes")
    with pytest.raises(ValueError):
        PlacementGroupSchedulingStrategy(None, placement_group_bundle_index=-2)
