"""Scheduling strategies and placement groups on a real cluster with a second
host joined on this machine (as tests/test_hosts.py joins them)."""
import os
import time

import pytest

import shoal
from shoal.core import runtime
from shoal.launch.launcher import HostProcess
from shoal.exceptions import TaskUnschedulableError
from shoal.util.placement_group import (
    get_current_placement_group, placement_group, placement_group_table, remove_placement_group,
)
from shoal.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy,
)
from shoal.util.state import list_hosts

from conftest import wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def two_hosts(fresh_cluster, tmp_path):
    """The driver's host and a second one, 2 CPUs each; yields their node ids."""
    fresh_cluster(num_cpus=2)
    rt = runtime.current()
    other = HostProcess(rt.address, rt.cluster.key, rt.client.cluster_id, str(tmp_path / "b"),
                        num_cpus=2)
    try:
        wait_for(lambda: len(list_hosts()) == 2, what="the second host")
        wait_for(lambda: len(rt.client.status()["engines"]) >= 4, what="four engines")
        here = shoal.get_runtime_context().get_node_id()
        there = next(n["NodeID"] for n in shoal.nodes() if n["NodeID"] != here)
        yield here, there
    finally:
        other.stop()


@shoal.remote
def where(seconds=0.0):
    time.sleep(seconds)
    return shoal.get_runtime_context().get_node_id()


def test_spread_and_node_affinity(two_hosts):
    here, there = two_hosts
    spread = shoal.get([where.options(scheduling_strategy="SPREAD").remote(0.5)
                        for _ in range(2)], timeout=60)
    assert sorted(spread) == sorted([here, there])
    for node in (here, there):
        pinned = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        assert set(shoal.get([pinned.remote() for _ in range(4)], timeout=60)) == {node}
    with pytest.raises(ValueError, match="not a shoal id"):
        where.options(scheduling_strategy=NodeAffinitySchedulingStrategy("beef", soft=False)
                      ).remote()
    missing = b"h-gone".hex()
    gone = NodeAffinitySchedulingStrategy(missing, soft=False)
    with pytest.raises(TaskUnschedulableError, match="not in the cluster"):
        shoal.get(where.options(scheduling_strategy=gone).remote(), timeout=60)
    anywhere = NodeAffinitySchedulingStrategy(missing, soft=True)
    assert shoal.get(where.options(scheduling_strategy=anywhere).remote(), timeout=60) in (
        here, there)

    @shoal.remote(scheduling_strategy="SPREAD")
    class Spot:
        def node(self):
            return shoal.get_runtime_context().get_node_id()

    actors = [Spot.remote() for _ in range(2)]
    assert sorted(shoal.get([a.node.remote() for a in actors], timeout=60)) == sorted([here,
                                                                                       there])


def test_a_strict_spread_group_reserves_a_cpu_on_each_host(two_hosts):
    here, there = two_hosts
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD", name="pair")
    assert pg.wait(30)
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and sorted(row["bundles_to_node_id"].values()) == sorted(
        [here, there])
    wait_for(lambda: shoal.available_resources().get("CPU") == 2.0, what="the reservation")

    @shoal.remote
    def in_group():
        group = get_current_placement_group()
        assert shoal.get_runtime_context().get_placement_group_id() == group.id
        return shoal.get_runtime_context().get_node_id(), group.id if group else None

    nodes = []
    for index in (0, 1):
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
        node, group = shoal.get(in_group.options(scheduling_strategy=strategy).remote(),
                                timeout=60)
        assert node == row["bundles_to_node_id"][index] and group == pg.id
        nodes.append(node)
    assert sorted(nodes) == sorted([here, there])

    @shoal.remote(num_cpus=1)
    class InBundle:
        def node(self):
            assert shoal.get_runtime_context().get_placement_group_id() == pg.id
            return shoal.get_runtime_context().get_node_id()

    actor = InBundle.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()
    assert shoal.get(actor.node.remote(), timeout=60) == row["bundles_to_node_id"][1]

    too_many = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert not too_many.wait(1)                  # three bundles, two hosts: it stays pending
    remove_placement_group(too_many)
    remove_placement_group(pg)
    wait_for(lambda: shoal.available_resources().get("CPU") == 4.0, what="the CPUs back")
    assert placement_group_table() == {}
    with pytest.raises(shoal.exceptions.ActorDiedError):
        shoal.get(actor.node.remote(), timeout=60)
    with pytest.raises(ValueError, match="out of range"):
        where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 5)).remote()
    with pytest.raises(ValueError, match="strategy"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="empty"):
        placement_group([{}])


def test_max_calls_gives_a_fresh_engine(fresh_cluster):
    fresh_cluster(num_cpus=1)

    @shoal.remote(max_calls=1)
    def pid():
        return os.getpid()

    pids = [shoal.get(pid.remote(), timeout=60) for _ in range(3)]
    assert len(set(pids)) == 3
