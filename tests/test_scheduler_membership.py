"""Level 1: the scheduler's membership (scheduler/membership.py), alone, and
what its indexes buy at scale."""
import pytest

from shoal.protocol import messages as m
from shoal.scheduler import policy
from shoal.scheduler.lifecycle import IllegalTransition
from shoal.scheduler.membership import Engine, Host, Membership
from shoal.scheduler.outbox import Outbox
from test_scheduler_state import Harness


def members():
    def illegal(what):
        raise IllegalTransition(what)
    return Membership(Outbox(), illegal)


def host(ms, host_id, cpus=2, engines=2):
    h = Host(host_id, f"agent-{host_id}", host_id, {"CPU": float(cpus)}, {"CPU": float(cpus)},
             {}, "/dev/shm/x", "/tmp/x", 1 << 30, "127.0.0.1:1", 1)
    h.starting = h.base_engines
    ms.add_host(h.conn, h)
    for i in range(engines):
        ms.add_engine(Engine(f"{host_id}.e{i}", host_id, f"{host_id}.e{i}", 10 + i))
    return h


def test_hosts_with_an_idle_engine_are_indexed_in_the_order_they_joined():
    ms = members()
    h1, h2, h3 = host(ms, "h1"), host(ms, "h2"), host(ms, "h3")
    assert ms.idle_hosts() == [h1, h2, h3] and not ms.short
    for eid in ("h1.e0", "h1.e1"):
        ms.assign(ms.engines[eid], "t")
    assert ms.idle_hosts() == [h2, h3]
    ms.assign(ms.engines["h1.e0"], None)             # h1 is back: still first
    assert ms.idle_hosts() == [h1, h2, h3]
    assert ms.engines["h1.e0"].state == "idle" and ms.engines["h1.e1"].state == "busy"
    ms.check()


def test_a_blocked_engine_makes_its_host_short_of_engines_until_it_gets_one():
    ms = members()
    h1 = host(ms, "h1", cpus=1, engines=1)
    e = ms.engines["h1.e0"]
    ms.assign(e, "t")
    assert ms.hosts_that_may_start() == []
    ms.engine_to(e, "blocked")
    assert h1.blocked == {"h1.e0"} and ms.hosts_that_may_start() == [h1]
    ms.start_engines(h1, 1)
    assert h1.starting == 1 and ms.hosts_that_may_start() == []
    assert ms.out.take({}.get) == [("agent-h1", m.StartEngines(count=1))]
    ms.add_engine(Engine("h1.e1", "h1", "h1.e1", 11))
    assert h1.starting == 0 and ms.idle_hosts() == [h1]
    ms.engine_to(e, "busy")                        # done waiting: one engine too many now
    assert h1.blocked == set() and not ms.short
    ms.check()


def test_an_actors_engines_are_not_in_the_pool_and_do_not_count_as_starting():
    ms = members()
    h1 = host(ms, "h1", cpus=1, engines=1)
    ms.start_engines(h1, 1, actor_id="a1")
    assert h1.starting == 0
    ms.add_engine(Engine("h1.a", "h1", "h1.a", 30, actor_id="a1"))
    assert h1.engines == {"h1.e0"} and "h1.a" in ms.engines and ms.engine_by_conn["h1.a"] == "h1.a"
    ms.check()


def test_engines_leave_by_loss_retirement_or_stopping():
    ms = members()
    h1 = host(ms, "h1", cpus=3, engines=3)
    ms.engine_gone("h1.e0")
    assert "h1.e0" not in ms.engines and h1.engines == {"h1.e1", "h1.e2"}
    assert ms.short == {"h1": h1}                  # three CPUs, two engines
    ms.retire(h1, ms.engines["h1.e1"])
    assert ms.out.take({}.get) == [("agent-h1", m.StopEngine(engine_id="h1.e1"))]
    e2 = ms.engines["h1.e2"]
    ms.assign(e2, "t")
    ms.stop(e2)
    assert e2.state == "stopping" and e2.task_id is None and not h1.idle
    assert ms.out.take({}.get) == [("agent-h1", m.StopEngine(engine_id="h1.e2", restart=True))]
    ms.assign(e2, None)                            # a stopping engine stays stopping
    assert e2.state == "stopping" and ms.idle_hosts() == []
    with pytest.raises(IllegalTransition, match="stopping -> busy"):
        ms.engine_to(e2, "busy")
    ms.check()


def test_a_departed_host_leaves_every_index_and_is_remembered_bounded(monkeypatch):
    from shoal.scheduler import membership
    monkeypatch.setattr(membership, "MAX_DEPARTED_HOSTS", 2)
    ms = members()
    hosts = [host(ms, f"h{i}") for i in range(4)]
    for h in hosts[:3]:
        ms.remove_host(h.host_id, {"host_id": h.host_id})
    assert ms.idle_hosts() == [hosts[3]] and list(ms.departed_hosts) == ["h1", "h2"]
    ms.check()


def test_feasibility_is_remembered_per_shape_until_the_hosts_change():
    ms = members()
    h1 = host(ms, "h1", cpus=2)
    shape = policy.shape_of({"CPU": 4})
    assert not ms.feasible({"CPU": 4}, shape)
    ms.set_cpus(h1, 4)
    assert ms.feasible({"CPU": 4}, shape)
    ms.remove_host("h1", {})
    assert not ms.feasible({"CPU": 4}, shape)


def test_a_saturated_cluster_places_without_looking_at_every_host(monkeypatch):
    """200 engines on 20 hosts, every one busy, a backlog queued: a new task
    (and a finished one) costs no fits check per host.  Before the indexes,
    each message walked all 20 hosts (twice: feasibility, then engines)."""
    h = Harness(cpus=10)
    h.s.strict = False                  # (its check after every event walks every host)
    for i in range(2, 21):
        h.add_host(f"h{i}", cpus=10)
    for _ in range(420):                # one running and one queued per engine, 20 waiting
        h.submit()
    assert len(h.executes(h.out())) == 400
    assert not h.s.members.idle and not h.s.members.short
    calls = []
    real = policy.fits
    monkeypatch.setattr(policy, "fits", lambda *a: calls.append(a) or real(*a))
    h.submit()
    h.out()
    assert calls == []
    engine = next(iter(h.s.engines.values()))
    h.finish(engine.engine_id, engine.task_id)     # its queued task starts; another queues
    assert len(h.executes(h.out())) == 1 and len(calls) <= 2
    h.s.members.check()


def test_stopping_the_cluster_forgets_a_host_awaiting_its_agent_everywhere():
    """Found by the strict index check in a spawned scheduler: shutdown deleted
    such a host from the host table only, leaving it in the 'short' index."""
    h = Harness(cpus=1)
    h.s.handle("agent-h2", m.RegisterHost(
        host_id="h2", hostname="h2", resources={"CPU": 1}, gpu_ids=[], store_dir="/dev/shm/y",
        spill_dir="/tmp/y", store_limit=1000, object_address="127.0.0.1:3", pid=3,
        restartable=True))
    h.s.connection_closed("agent-h2")              # its agent died: it waits for a new one
    assert "h2" in h.s.members.short
    h.s.handle("drv", m.Shutdown(reason="done"))   # (strict: the indexes are checked after)
    assert "h2" not in h.s.hosts and "h2" not in h.s.members.short


def test_the_idle_host_with_the_most_free_cpu_comes_from_a_heap_not_a_walk():
    ms = members()
    h1, h2, h3 = host(ms, "h1", cpus=4), host(ms, "h2", cpus=4), host(ms, "h3", cpus=2)
    assert ms.most_free_idle_host() is h1               # equals: the first to join
    h1.acquire({"CPU": 1.0})
    assert ms.most_free_idle_host() is h2
    for eid in ("h2.e0", "h2.e1"):                      # h2 has no idle engine left
        ms.assign(ms.engines[eid], "t")
    assert ms.most_free_idle_host() is h1
    h1.acquire({"CPU": 2.0})                            # 1 free: h3's 2 win
    assert ms.most_free_idle_host() is h3
    ms.set_cpus(h1, 8)                                  # scaled up: 6 free
    assert ms.most_free_idle_host() is h1
    h1.acquire({"CPU": 1.0}, pool={"CPU": 1.0})         # a bundle's pool: the host's CPU stays
    assert ms.most_free_idle_host() is h1
    for _ in range(200):                                # churn: stale entries do not pile up
        h3.acquire({"CPU": 1.0})
        h3.release({"CPU": 1.0})
    assert len(ms._by_cpu) <= 4 * len(ms.idle) + 64 + 1
    ms.remove_host("h1", {})
    assert ms.most_free_idle_host() is h3
