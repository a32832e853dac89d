"""The Ray backend's worker-side pieces that need no Ray: the interruptible
call thread of `%%remote --on` namespaces, routed actor methods' signatures,
and the sender's coalescing of output (shoal.backends.ray.worker)."""
import asyncio
import inspect
import threading

import pytest

from shoal.backends.ray import worker

pytestmark = pytest.mark.timeout(30)


class Counter:
    __shoal_interruptible__ = True

    def __init__(self) -> None:
        self.n = 0
        self.started = threading.Event()

    def spin(self):
        self.started.set()
        while True:                         # only an interrupt ends it
            pass

    def bump(self, k=1):
        self.n += k
        return self.n


def test_an_interruptible_call_is_interrupted_and_the_next_finds_its_state():
    made = worker.interruptible(Counter)
    assert made.__name__ == "Counter" and issubclass(made, Counter)
    assert inspect.iscoroutinefunction(made.spin) and inspect.iscoroutinefunction(made.bump)

    async def scenario():
        c = made()
        assert await c.bump(2) == 2
        spinning = asyncio.ensure_future(c.spin())
        queued = asyncio.ensure_future(c.bump())          # waits behind the spin, in order
        await asyncio.get_running_loop().run_in_executor(None, c.started.wait, 10)
        spinning.cancel()                                  # what ray.cancel does to an async call
        with pytest.raises(asyncio.CancelledError):
            await spinning
        return await queued, await c.bump(10)

    assert asyncio.run(scenario()) == (3, 13)


def test_cancelling_a_queued_call_never_runs_it():
    made = worker.interruptible(Counter)

    async def scenario():
        c = made()
        spinning = asyncio.ensure_future(c.spin())
        await asyncio.get_running_loop().run_in_executor(None, c.started.wait, 10)
        queued = asyncio.ensure_future(c.bump(5))
        await asyncio.sleep(0)
        queued.cancel()
        spinning.cancel()
        for call in (queued, spinning):
            with pytest.raises(asyncio.CancelledError):
                await call
        return await c.bump()

    assert asyncio.run(scenario()) == 1


class Plain:
    def add(self, a, b=1, *rest, scale=1, **more):
        return (a + b + sum(rest)) * scale

    def count(self, n):
        yield from range(n)

    async def later(self, v):
        return v

    def _private(self):
        return "left alone"


def test_routed_actor_methods_take_the_hidden_route_and_keep_the_users_signature():
    made = worker.routed_actor(Plain)
    params = inspect.signature(made.add).parameters
    assert list(params) == ["self", "a", "b", "rest", "scale", worker.ROUTE_KEYWORD, "more"]
    assert params[worker.ROUTE_KEYWORD].kind is inspect.Parameter.KEYWORD_ONLY
    assert not hasattr(made.add, "__wrapped__")          # Ray must read the wrapper's attributes
    assert callable(made.add.__ray_invocation_decorator__)
    p = made()
    assert p.add(1, 2, 3, scale=2) == 12                 # no route: runs as it is
    assert list(p.count(3)) == [0, 1, 2] and inspect.isgeneratorfunction(made.count)
    assert asyncio.run(p.later(4)) == 4
    assert made._private is Plain._private
    with pytest.raises(TypeError):                       # the caller side still checks
        inspect.signature(made.add).bind(object())


def test_the_invocation_decorator_adds_no_route_where_nothing_is_routed():
    seen = []
    invoke = worker._with_route("Plain", lambda args, kwargs: seen.append(kwargs))
    invoke((1,), {"b": 2})             # shoal's own scheduler is no routing backend
    assert seen == [{"b": 2}]


def test_consecutive_text_of_one_stream_goes_as_one_item_in_order():
    key = ("k", "stdout", 7, "t", False)
    err = ("k", "stderr", 7, "t", False)
    items = [(*key, "a\n"), (*key, "b\n"), (*err, "x\n"), ("k", "display", 7, "t", False, {}),
             (*key, "c\n"), (*key, "d\n")]
    assert worker._coalesced(items) == [(*key, "a\nb\n"), (*err, "x\n"),
                                        ("k", "display", 7, "t", False, {}), (*key, "c\nd\n")]
