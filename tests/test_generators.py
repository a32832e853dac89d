"""Generator tasks and actor methods, against a real cluster: streaming (Ray's
default for a function that yields), num_returns="dynamic", errors part-way,
cancellation, async iteration, and the lifetime of the items."""
import asyncio
import os
import pickle
import time

import numpy as np
import pytest

import shoal
from shoal.exceptions import TaskCancelledError, TaskError

from conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    shoal.shutdown()
    ctx = shoal.init(num_cpus=2)
    yield ctx
    shoal.shutdown()


@shoal.remote
def count(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise KeyError(f"no item {i}")
        yield i * 10


def test_a_generator_streams_refs_in_order():
    gen = count.remote(5)
    assert isinstance(gen, shoal.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, shoal.ObjectRef) for r in refs)
    assert shoal.get(refs) == [0, 10, 20, 30, 40]
    assert gen.is_finished()
    assert shoal.get(gen.completed()) == 5
    assert list(count.remote(0)) == []


def test_each_item_arrives_while_the_generator_still_runs(tmp_path):
    go_on = str(tmp_path / "go-on")

    @shoal.remote
    def two_phases(path):
        yield "first"
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "second"

    gen = two_phases.remote(go_on)
    assert shoal.get(next(gen)) == "first"          # the task is still blocked on the file
    assert not gen.is_finished()
    open(go_on, "w").close()
    assert shoal.get(next(gen)) == "second"
    with pytest.raises(StopIteration):
        next(gen)


def test_wait_takes_generators_as_ray_does(tmp_path):
    """A generator is ready when its next ref can be taken without blocking, or it has ended."""
    go_on = str(tmp_path / "go-on")

    @shoal.remote
    def gated(path):
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "item"

    @shoal.remote
    def sleepy():
        time.sleep(30)

    gen, other = gated.remote(go_on), sleepy.remote()
    ready, not_ready = shoal.wait([gen, other], timeout=0.3)
    assert ready == [] and not_ready == [gen, other]
    open(go_on, "w").close()
    ready, not_ready = shoal.wait([other, gen], num_returns=1, timeout=30)
    assert ready == [gen] and not_ready == [other]
    assert shoal.get(next(gen)) == "item"
    wait_for(lambda: shoal.wait([gen], timeout=0)[0] == [gen], what="the end of the generator")
    with pytest.raises(StopIteration):
        next(gen)
    done = count.remote(1)
    assert shoal.wait([done, shoal.put(1)], num_returns=2, timeout=30)[1] == []
    shoal.cancel(other, force=True)
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        shoal.wait([gen, 3])


def test_an_error_surfaces_at_the_failing_item():
    refs = list(count.remote(5, fail_at=2))
    assert len(refs) == 3                       # two good items, then the error
    assert shoal.get(refs[:2]) == [0, 10]
    with pytest.raises(KeyError) as info:
        shoal.get(refs[2])
    assert isinstance(info.value, TaskError) and "no item 2" in str(info.value)


def test_dynamic_returns_one_ref_to_a_generator_of_refs():
    ref = count.options(num_returns="dynamic").remote(3)
    assert isinstance(ref, shoal.ObjectRef)
    refs = shoal.get(ref)
    assert isinstance(refs, shoal.DynamicObjectRefGenerator) and len(refs) == 3
    assert shoal.get(list(refs)) == [0, 10, 20]
    # An error part-way is one more, final ref (Ray's rule for dynamic generators).
    refs = list(shoal.get(count.options(num_returns="dynamic").remote(4, fail_at=1)))
    assert len(refs) == 2 and shoal.get(refs[0]) == 0
    with pytest.raises(KeyError):
        shoal.get(refs[1])


def test_a_fixed_num_returns_takes_the_yielded_values():
    a, b = count.options(num_returns=2).remote(2)
    assert shoal.get([a, b]) == [0, 10]
    with pytest.raises(ValueError, match="num_returns=3"):
        shoal.get(count.options(num_returns=3).remote(2)[0])


def test_cancel_stops_a_running_generator():
    @shoal.remote
    def forever():
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)

    gen = forever.remote()
    assert shoal.get(next(gen)) == 0
    shoal.cancel(gen)
    rest = list(gen)                            # ends: the last ref holds the cancellation
    with pytest.raises(TaskCancelledError):
        shoal.get(rest[-1])
    assert shoal.get(rest[:-1]) == list(range(1, len(rest)))
    assert shoal.get(count.remote(2).completed()) == 2     # the engines are free again


def test_async_iteration():
    async def collect():
        return [await ref async for ref in count.remote(3)]

    assert asyncio.run(collect()) == [0, 10, 20]


def test_large_items_go_through_the_store():
    @shoal.remote
    def arrays(n):
        for i in range(n):
            yield np.full(100_000, i)

    values = shoal.get(list(arrays.remote(3)))
    assert [int(v[0]) for v in values] == [0, 1, 2] and values[0].size == 100_000


def test_items_not_taken_are_freed_with_their_generator():
    gen = count.remote(50)
    shoal.get(gen.completed())
    task = gen.task_id()
    client = shoal.core.runtime.current().client

    def left():
        return [o for o in client.query("objects") if o["object_id"].startswith(task + "/")]
    assert len(left()) == 51
    first = next(gen)
    del gen
    wait_for(lambda: [o["object_id"] for o in left()] == [first.id], what="items freed")
    assert shoal.get(first) == 0


def test_generator_methods_of_sync_threaded_and_async_actors():
    @shoal.remote
    class Source:
        def __init__(self):
            self.base = 100

        def items(self, n):
            for i in range(n):
                yield self.base + i

        @shoal.method(num_returns="dynamic")
        def batch(self, n):
            yield from range(n)

    @shoal.remote
    class AsyncSource:
        async def items(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

    for actor in (Source.remote(), Source.options(max_concurrency=4).remote()):
        assert shoal.get(list(actor.items.remote(3))) == [100, 101, 102]
        assert shoal.get(list(shoal.get(actor.batch.remote(2)))) == [0, 1]
    assert shoal.get(list(AsyncSource.remote().items.remote(4))) == [0, 1, 2, 3]


def test_a_task_can_iterate_a_generator_task():
    @shoal.remote
    def total(n):
        return sum(shoal.get(ref) for ref in count.remote(n))

    assert shoal.get(total.remote(4)) == 60


def test_bad_uses_are_refused_clearly():
    with pytest.raises(TypeError, match="cannot be passed"):
        pickle.dumps(count.remote(1))
    with pytest.raises(ValueError, match="num_returns"):
        count.options(num_returns="many")

    @shoal.remote
    def plain():
        return 1
    with pytest.raises(TypeError, match="needs a generator function"):
        shoal.get(list(plain.options(num_returns="streaming").remote())[0])
