"""Placement policy and placement groups in the scheduler's state machine:
pure functions and messages, no sockets."""
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.exceptions import TaskPlacementGroupRemoved, TaskUnschedulableError
from shoal.protocol import messages as m
from shoal.protocol.serialization import deserialize, dumps
from shoal.scheduler import policy

from test_scheduler_state import Harness


def hosts(*cpus):
    return [SimpleNamespace(host_id=f"h{i}", available={"CPU": float(c)}, total={"CPU": float(c)})
            for i, c in enumerate(cpus)]


def ids(placed):
    return None if placed is None else [h.host_id for h in placed]


@pytest.mark.parametrize("strategy, cpus, bundles, expected", [
    ("PACK", (4, 4), [1, 1, 1], ["h0", "h0", "h0"]),
    ("PACK", (2, 2), [1, 1, 1], ["h0", "h0", "h1"]),
    ("STRICT_PACK", (2, 2), [1, 1, 1], None),
    ("STRICT_PACK", (1, 3), [1, 1, 1], ["h1", "h1", "h1"]),
    ("SPREAD", (4, 4), [1, 1, 1], ["h0", "h1", "h0"]),
    ("STRICT_SPREAD", (4, 4), [1, 1], ["h0", "h1"]),
    ("STRICT_SPREAD", (4, 4), [1, 1, 1], None),
    ("STRICT_SPREAD", (0.5, 4, 4), [1, 1], ["h1", "h2"]),
    ("PACK", (1, 1), [2], None),
])
def test_bundles_are_placed_as_ray_places_them(strategy, cpus, bundles, expected):
    placed = policy.place_bundles([{"CPU": float(b)} for b in bundles], strategy, hosts(*cpus))
    assert ids(placed) == expected


def test_spread_picks_the_least_loaded_and_feasibility_ignores_current_use():
    hs = hosts(2, 2, 2)
    load = {"h0": 3, "h1": 1, "h2": 2}
    assert policy.least_loaded(hs, lambda h: load[h.host_id]).host_id == "h1"
    busy = hosts(0, 0)
    for h in busy:
        h.total = {"CPU": 2.0}
    assert policy.place_bundles([{"CPU": 1.0}] * 2, "STRICT_SPREAD", busy) is None
    assert policy.bundles_feasible([{"CPU": 1.0}] * 2, "STRICT_SPREAD", busy)
    assert not policy.bundles_feasible([{"CPU": 1.0}] * 3, "STRICT_SPREAD", busy)


def _submit(h, placement, resources=None, max_calls=0):
    h.n += 1
    tid = f"t{h.n}"
    h.s.handle("drv", m.SubmitTask(
        task_id=tid, func_id="f", name="f", args=b"", deps=[], nested=[],
        return_ids=[f"{tid}/0"], resources=resources or {"CPU": 1.0}, placement=placement,
        max_calls=max_calls))
    return tid


def _group(h, pg_id, bundles, strategy="PACK"):
    h.s.handle("drv", m.CreatePlacementGroup(pg_id=pg_id, bundles=bundles, strategy=strategy,
                                             ready_value=dumps("ready")))


def test_a_group_reserves_its_bundles_and_its_tasks_use_them():
    h = Harness(cpus=2)
    h.add_host("h2", 2)
    _group(h, "g1", [{"CPU": 1.0}, {"CPU": 1.0}], "STRICT_SPREAD")
    assert deserialize(h.pushed(h.out())["g1/ready"].inline) == "ready"
    assert {host.available["CPU"] for host in h.s.hosts.values()} == {1.0}
    on_bundle_1 = _submit(h, {"kind": "pg", "pg": "g1", "bundle": 1})
    ex = h.executes(h.out())
    bundle_host = h.s.placement_groups["g1"].bundles[1].host_id
    assert ex[on_bundle_1].startswith(bundle_host)
    assert h.s.placement_groups["g1"].bundles[1].available == {"CPU": 0.0}
    assert h.s.hosts[bundle_host].available["CPU"] == 1.0          # the host's own CPU untouched
    second = _submit(h, {"kind": "pg", "pg": "g1", "bundle": 1})   # its bundle is full: waits
    assert second not in h.executes(h.out())
    h.finish(ex[on_bundle_1], on_bundle_1)
    assert second in h.executes(h.out())
    h.s.handle("drv", m.RemovePlacementGroup(pg_id="g1"))
    out = h.out()
    assert {host.available["CPU"] for host in h.s.hosts.values()} == {2.0}     # all given back
    assert any(isinstance(msg, m.StopEngine) and msg.restart for _, msg in out)
    assert isinstance(deserialize(h.pushed(out)[f"{second}/0"].inline),
                      TaskPlacementGroupRemoved)


def test_a_group_that_does_not_fit_waits_for_resources():
    h = Harness(cpus=2)
    busy = h.submit()
    ex = h.executes(h.out())
    _group(h, "g1", [{"CPU": 2.0}], "STRICT_PACK")
    assert "g1/ready" not in h.pushed(h.out())
    h.finish(ex[busy], busy)
    assert "g1/ready" in h.pushed(h.out())


def test_hard_affinity_to_a_missing_node_fails_and_soft_runs_anywhere():
    h = Harness(cpus=2)
    hard = _submit(h, {"kind": "node", "node": "nowhere", "soft": False})
    soft = _submit(h, {"kind": "node", "node": "nowhere", "soft": True})
    out = h.out()
    assert isinstance(deserialize(h.pushed(out)[f"{hard}/0"].inline), TaskUnschedulableError)
    assert soft in h.executes(out)
    missing = _submit(h, {"kind": "pg", "pg": "no-such-group", "bundle": -1})
    assert isinstance(deserialize(h.pushed(h.out())[f"{missing}/0"].inline),
                      TaskUnschedulableError)


def test_hard_affinity_and_spread_choose_hosts():
    h = Harness(cpus=2)
    h.add_host("h2", 2)
    pinned = [_submit(h, {"kind": "node", "node": "h2", "soft": False}) for _ in range(2)]
    ex = h.executes(h.out())
    assert all(ex[t].startswith("h2.") for t in pinned)
    spread = _submit(h, {"kind": "spread"})
    assert h.executes(h.out())[spread].startswith("h1.")            # the less loaded host


def test_max_calls_replaces_the_engine():
    h = Harness(cpus=1)
    first = _submit(h, None, max_calls=2)
    h.finish(h.executes(h.out())[first], first)
    second = _submit(h, None, max_calls=2)
    assert h.executes(h.out())[second] == "h1.e0"
    h.finish("h1.e0", second)
    out = h.out()
    assert ("agent-h1", m.StopEngine(engine_id="h1.e0")) in out
    assert any(isinstance(msg, m.StartEngines) and msg.count == 1 for _, msg in out)
    assert "h1.e0" not in h.s.engines


def test_a_groups_states_follow_its_hosts_and_only_allowed_moves():
    from shoal.scheduler.lifecycle import IllegalTransition
    h = Harness(cpus=1)
    h.add_host("h2", 1)
    _group(h, "g1", [{"CPU": 1.0}], "PACK")
    pg = h.s.placement_groups["g1"]
    assert pg.state == "CREATED"
    host = pg.bundles[0].host_id
    h.s.connection_closed(f"agent-{host}")      # its bundle's host is lost: placed again
    assert pg.state == "CREATED" and pg.bundles[0].host_id != host
    h.s.handle("drv", m.RemovePlacementGroup(pg_id="g1"))
    assert pg.state == "REMOVED" and h.s._query_placement_groups({}) == []
    with pytest.raises(IllegalTransition, match="placement group g1: REMOVED -> CREATED"):
        h.s._group_to(pg, "CREATED")


def test_pipelining_and_engine_starts_are_pure_decisions():
    spec = SimpleNamespace(resources={"CPU": 1.0}, max_calls=0)
    assert policy.may_queue_behind(spec, running_blocks=False, engine_ran_gpu=False)
    assert not policy.may_queue_behind(spec, running_blocks=True, engine_ran_gpu=False)
    assert not policy.may_queue_behind(spec, running_blocks=False, engine_ran_gpu=True)
    assert not policy.may_queue_behind(SimpleNamespace(resources={"GPU": 1.0}, max_calls=0),
                                       False, False)
    assert not policy.may_queue_behind(SimpleNamespace(resources={}, max_calls=3), False, False)
    assert policy.runs_elsewhere_now({"CPU": 1.0}, hosts(0, 1))
    assert not policy.runs_elsewhere_now({"CPU": 2.0}, hosts(0, 1))
    host = SimpleNamespace(base_engines=4, blocked={"e0", "e1"}, engines={"e0", "e1", "e2", "e3"},
                           starting=1)
    assert policy.engines_to_start(host, backlog=5) == 1     # 4 + 2 blocked - 4 - 1 asked for
    assert policy.engines_to_start(host, backlog=0) == 0


def has_room(running, queued, most=policy.QUEUE_MAX):
    """A fresh look at an engine's queue (policy.QueueRoom)."""
    return policy.QueueRoom(running, queued, most).has_room()


def test_a_queue_takes_one_task_and_more_only_of_known_short_ones():
    short = 0.00001          # QUEUE_MAX of them make under QUEUE_WORK
    assert has_room(None, [])                   # one, whatever runs
    assert not has_room(short, [None])          # not known yet: no more
    assert not has_room(None, [short])          # nor behind one not known
    assert not has_room(short, [short, None])
    assert not has_room(short, [policy.QUEUE_WORK])   # a long one: no more
    assert not has_room(policy.QUEUE_WORK, [short])   # nor behind one
    assert has_room(short, [short] * (policy.QUEUE_MAX - 1))
    assert not has_room(0.0, [0.0] * policy.QUEUE_MAX)
    assert not has_room(short, [policy.QUEUE_WORK / 2] * 2)
    assert not has_room(short, [short], most=1)   # a cluster's own limit
    assert policy.run_time(None, 0.5) == 0.5
    assert policy.run_time(1.0, 0.0) == 0.75               # moves a quarter of the way


run_times = st.one_of(st.none(), st.floats(0, 2 * policy.QUEUE_WORK, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(running=run_times, queued=st.lists(run_times, max_size=6),
       added=st.lists(run_times, max_size=80), most=st.integers(1, 70))
def test_a_queue_room_kept_as_tasks_are_added_answers_as_a_fresh_look(running, queued, added,
                                                                       most):
    def fresh_look(queued):          # the rule, as QueueRoom's docstring states it
        if not queued:
            return True
        if len(queued) >= most or running is None or None in queued:
            return False
        work = running
        for seconds in queued:
            work += seconds
        return work < policy.QUEUE_WORK

    room = policy.QueueRoom(running, queued, most)
    for seconds in added:
        assert room.has_room() == fresh_look(queued) == has_room(running, queued, most)
        room.add(seconds)
        queued = queued + [seconds]
    assert room.has_room() == fresh_look(queued)
