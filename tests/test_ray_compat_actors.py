"""The actor class shows the user's class (as in Ray), and ActorPool is Ray's."""
from __future__ import annotations

import abc
import sys
import time

import cloudpickle
import pytest

import shoal
from shoal.actor import ActorClass
from shoal.exceptions import ActorDiedError
from shoal.util import ActorPool

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # engines cannot import tests


class Grandparent:
    GRANDPARENT = 2

    @staticmethod
    def grandparent_static():
        return 1

    @classmethod
    def factory(cls, x):
        return (cls.GRANDPARENT, x)


class Parent(Grandparent):
    PARENT = 6


@shoal.remote
class Child(Parent):
    X = 3

    @staticmethod
    def f():
        return 4

    def g(self):
        # Inside the actor the global name is the actor class, as in Ray.
        return (Child.GRANDPARENT, Child.PARENT, Child.X, Child.f(),
                Child.grandparent_static(), Child.factory(5))

    def __len__(self):
        return 0


def test_class_and_static_attributes_read_through(cluster):
    assert (Child.GRANDPARENT, Child.PARENT, Child.X) == (2, 6, 3)
    assert Child.f() == 4 and Child.grandparent_static() == 1 and Child.factory(1) == (2, 1)
    assert isinstance(Child, ActorClass) and isinstance(Child, Parent)
    assert bool(Child)                        # not the user's __len__
    names = dir(Child)
    assert {"g", "f", "factory", "X", "GRANDPARENT", "remote", "options", "bind"} <= set(names)
    assert shoal.get(Child.remote().g.remote()) == (2, 6, 3, 4, 1, (2, 5))
    assert Child.options(num_cpus=0.5).X == 3


def test_handle_dir_lists_methods(cluster):
    handle = Child.remote()
    assert {"g", "f", "factory", "__ray_ready__", "__ray_terminate__"} <= set(dir(handle))
    with pytest.raises(NotImplementedError, match="bind"):
        handle.g.bind()


def test_user_instance_hooks_do_not_touch_the_actor_class(cluster):
    finalized = []

    class Fussy:
        def __init__(self, v=1):
            self.v = v

        def __setattr__(self, name, value):
            if name != "v":
                raise AttributeError("frozen")
            object.__setattr__(self, name, value)

        def __eq__(self, other):
            raise AssertionError("never compared")

        __hash__ = None

        def __del__(self):
            finalized.append(1)

        def get(self):
            return self.v

    Remote = shoal.remote(Fussy)
    clone = Remote.options(num_cpus=1)
    assert {Remote: 1}[Remote] == 1 and Remote != clone
    assert shoal.get(clone.remote(5).get.remote()) == 5
    del Remote, clone
    assert finalized == []


def test_classes_python_will_not_derive_still_work(cluster):
    class Picky:
        def __init_subclass__(cls, **kwargs):
            raise TypeError("no subclasses")

        def ping(self):
            return "pong"

    class Abstract(abc.ABC):
        @abc.abstractmethod
        def ping(self): ...

    class Concrete(Abstract):
        def ping(self):
            return "pong"

    for cls in (Picky, Concrete):
        assert shoal.get(shoal.remote(cls).remote().ping.remote()) == "pong"


# --------------------------------------------------------------------- ActorPool
@shoal.remote
class Worker:
    def __init__(self):
        self.calls = 0

    def double(self, v):
        self.calls += 1
        return 2 * v

    @shoal.method(num_returns=2)
    def split(self, v):
        return v, -v

    def slow(self, v):
        time.sleep(v)
        return v

    def count(self):
        return self.calls

    def die(self, _):
        shoal.actor.exit_actor()


def test_map_is_eager_and_ordered(cluster):
    workers = [Worker.remote(), Worker.remote()]
    pool = ActorPool(workers)
    results = pool.map(lambda a, v: a.double.remote(v), [1, 2])    # submitted now
    assert sum(shoal.get([w.count.remote() for w in workers])) == 2
    assert list(results) == [2, 4]
    assert list(pool.map(lambda a, v: a.double.remote(v), range(7))) == [2 * i for i in range(7)]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(5))) == \
        [0, 2, 4, 6, 8]


def test_multiple_returns(cluster):
    pool = ActorPool([Worker.remote()])
    assert list(pool.map(lambda a, v: a.split.remote(v), [1, 2])) == [[1, -1], [2, -2]]
    pool.submit(lambda a, v: a.split.remote(v), 3)
    assert pool.get_next_unordered() == [3, -3]


def test_push_rejects_an_actor_already_in_the_pool(cluster):
    a, b = Worker.remote(), Worker.remote()
    pool = ActorPool([a])
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)
    pool.submit(lambda actor, v: actor.slow.remote(v), 0.2)      # a is busy now
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)
    pool.push(b)
    assert pool.has_free() and pool.get_next() == 0.2


def test_timeouts_and_dead_actors(cluster):
    pool = ActorPool([Worker.remote()])
    pool.submit(lambda a, v: a.slow.remote(v), 1.0)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert pool.get_next() == 1.0
    pool.submit(lambda a, v: a.slow.remote(v), 1.0)
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next()
    dying = ActorPool([Worker.remote()])
    dying.submit(lambda a, v: a.die.remote(v), None)
    with pytest.raises(ActorDiedError):
        dying.get_next()
    assert not dying.has_free() and dying.pop_idle() is None      # the dead actor left


def test_concurrency_groups_let_calls_of_different_groups_run_together(cluster):
    @shoal.remote(concurrency_groups={"io": 1, "compute": 1})
    class Grouped:
        def __init__(self):
            import threading
            self.event = threading.Event()

        @shoal.method(concurrency_group="io")
        def wait_for_signal(self):
            return self.event.wait(30)

        @shoal.method(concurrency_group="compute")
        def signal(self):
            self.event.set()
            return "set"

    g = Grouped.remote()
    waiting = g.wait_for_signal.remote()
    assert shoal.get(g.signal.remote(), timeout=30) == "set"
    assert shoal.get(waiting, timeout=30) is True
    with pytest.raises(ValueError, match="concurrency_groups"):
        shoal.remote(concurrency_groups={"io": 0})(type("W", (), {}))


@shoal.remote(concurrency_groups={"io": 2, "compute": 1})
class Limited:
    """Counts how many calls of each group run at once (threaded and async forms)."""

    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.now = {}
        self.peak = {}

    def _enter(self, group):
        with self.lock:
            self.now[group] = self.now.get(group, 0) + 1
            self.peak[group] = max(self.peak.get(group, 0), self.now[group])

    def _leave(self, group):
        with self.lock:
            self.now[group] -= 1

    @shoal.method(concurrency_group="io")
    def io(self):
        self._enter("io")
        time.sleep(0.2)
        self._leave("io")

    @shoal.method(concurrency_group="compute")
    def compute(self):
        self._enter("compute")
        time.sleep(0.2)
        self._leave("compute")

    def plain(self):
        self._enter("default")
        time.sleep(0.2)
        self._leave("default")

    def peaks(self):
        return self.peak


def test_each_concurrency_group_is_held_to_its_own_limit(cluster):
    a = Limited.remote()
    calls = ([a.io.remote() for _ in range(6)] + [a.compute.remote() for _ in range(3)]
             + [a.plain.remote() for _ in range(3)]
             + [a.plain.options(concurrency_group="io").remote() for _ in range(2)])
    shoal.get(calls, timeout=60)
    peaks = shoal.get(a.peaks.remote())
    # the per-call group sends `plain` into io: counted as "default" but limited by io's 2
    assert peaks["io"] == 2 and peaks["compute"] == 1 and 1 <= peaks["default"] <= 3
    with pytest.raises(ValueError, match="not defined"):
        a.plain.options(concurrency_group="nope")


def test_async_actors_hold_each_group_to_its_limit(cluster):
    @shoal.remote(concurrency_groups={"io": 2})
    class AsyncLimited:
        def __init__(self):
            self.now = self.peak = 0

        @shoal.method(concurrency_group="io")
        async def io(self):
            import asyncio
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.1)
            self.now -= 1

        async def peak_seen(self):
            return self.peak

    a = AsyncLimited.remote()
    shoal.get([a.io.remote() for _ in range(8)], timeout=60)
    assert shoal.get(a.peak_seen.remote()) == 2


def test_a_method_naming_an_undefined_group_is_refused_at_creation(cluster):
    @shoal.remote
    class Orphan:
        @shoal.method(concurrency_group="io")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="'io' is used by a method but not defined"):
        Orphan.remote()
