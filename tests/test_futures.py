"""Futures, `await ref` and as_completed: completed from the client's reader
thread, not a thread per ref."""
import asyncio
import concurrent.futures as cf
import threading

import pytest

import shoal
from shoal.core import runtime
from shoal.exceptions import ClusterLostError, GetTimeoutError
from shoal.util import as_completed

from conftest import wait_for

N = 10_000


@shoal.remote
def after(gate, i):
    return i * i


@shoal.remote
def fail(x):
    raise KeyError(x)


@shoal.remote
class Gate:
    """Refs that are not ready until the test says so."""

    def __init__(self):
        self.opened = asyncio.Event()

    async def wait(self, value=None):
        await self.opened.wait()
        return value

    async def open(self):
        self.opened.set()


def registrations():
    """Ready callbacks the client holds (none should outlive their future)."""
    return sum(len(v) for v in runtime.current().client._callbacks.values())


@pytest.mark.slow
def test_ten_thousand_awaited_refs_use_a_bounded_number_of_threads(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    opened = gate.wait.remote()
    refs = [after.remote(opened, i) for i in range(N)]
    before = threading.active_count()

    async def main():
        tasks = asyncio.gather(*refs)
        await asyncio.sleep(0)          # every await has registered by now
        assert not any(r.future().done() for r in refs[:3])
        threads = threading.active_count()
        gate.open.remote()
        return threads, await tasks

    threads, values = asyncio.run(main())
    assert values == [i * i for i in range(N)]
    assert threads <= before + 1        # at most the client's one completer thread
    assert wait_for(lambda: registrations() == 0, what="no callbacks left")


@pytest.mark.slow
def test_ten_thousand_futures_through_concurrent_as_completed(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    opened = gate.wait.remote()
    futures = [after.remote(opened, i).future() for i in range(N)]
    threads = threading.active_count()
    gate.open.remote()
    done = list(cf.as_completed(futures, timeout=100))
    assert len(done) == N and sorted(f.result() for f in done) == [i * i for i in range(N)]
    assert threading.active_count() <= threads
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith("shoal-future-") for n in names)


def test_cancelling_an_awaiting_coroutine_cancels_nothing_else_and_leaks_nothing(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    ref = gate.wait.remote("value")
    other = gate.wait.remote("other")

    async def main():
        waiting = asyncio.ensure_future(_await(ref))
        bystander = asyncio.ensure_future(_await(other))
        await asyncio.sleep(0)
        assert registrations() == 2
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert registrations() == 1     # the cancelled await dropped its callback
        gate.open.remote()
        return await bystander

    assert asyncio.run(main()) == "other"
    assert shoal.get(ref, timeout=10) == "value"     # the task itself went on
    assert registrations() == 0


async def _await(ref):
    return await ref


def test_cancelling_a_future_drops_its_callback_and_leaves_the_task(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    ref = gate.wait.remote(5)
    fut = ref.future()
    assert registrations() == 1
    assert fut.cancel()
    assert registrations() == 0
    gate.open.remote()
    assert shoal.get(ref, timeout=10) == 5
    assert ref.future().result(timeout=10) == 5


def test_future_and_await_raise_the_task_error(cluster):
    with pytest.raises(KeyError):
        fail.remote(1).future().result(timeout=10)

    async def main():
        return await fail.remote(2)

    with pytest.raises(KeyError):
        asyncio.run(main())


def test_a_ready_ref_completes_at_once_and_as_future_is_an_asyncio_future(cluster):
    ref = shoal.put(41)
    assert ref.future().result(timeout=0.5) == 41

    async def main():
        fut = ref.as_future()
        assert isinstance(fut, asyncio.Future)
        return await fut + 1

    assert asyncio.run(main()) == 42


def test_a_dropped_ref_still_completes_its_future(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    fut = gate.wait.remote("kept").future()      # the future holds the ref
    gate.open.remote()
    assert fut.result(timeout=10) == "kept"


def test_as_completed_yields_in_finishing_order(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    late = gate.wait.remote("late")
    early = shoal.put("early")
    it = as_completed([late, early, early])
    assert next(it) == early
    gate.open.remote()
    assert list(it) == [late]


def test_as_completed_times_out_and_forgets_its_callbacks(cluster):
    gate = Gate.options(max_concurrency=4).remote()
    pending = gate.wait.remote()
    with pytest.raises(GetTimeoutError, match="1 \\(of 2\\) refs unfinished"):
        list(as_completed([shoal.put(1), pending], timeout=0.2))
    assert registrations() == 0
    gate.open.remote()


def test_as_completed_rejects_what_is_not_a_ref(cluster):
    with pytest.raises(TypeError):
        as_completed([1])
    with pytest.raises(ValueError):
        as_completed([shoal.put(1)], timeout=-1)
    assert list(as_completed([])) == []


def test_losing_the_cluster_fails_waiting_futures(fresh_cluster):
    fresh_cluster()
    gate = Gate.options(max_concurrency=4).remote()
    ref = gate.wait.remote()
    fut = ref.future()
    it = as_completed([ref])

    async def main():
        task = asyncio.ensure_future(_await(ref))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, shoal.shutdown)
        return await task

    with pytest.raises(ClusterLostError):
        asyncio.run(main())
    assert isinstance(fut.exception(timeout=10), ClusterLostError)
    with pytest.raises(ClusterLostError):
        next(it)
    assert isinstance(ref.future().exception(timeout=1), ClusterLostError)
    assert not [t for t in threading.enumerate() if t.name == "shoal-futures"]


def test_a_cancelled_wait_lets_go_of_its_ref(cluster):
    import gc
    client = runtime.current().client
    gate = Gate.options(max_concurrency=4).remote()
    ref = gate.wait.remote()
    oid = ref.id
    fut = ref.future()

    async def main():
        task = asyncio.ensure_future(_await(gate.wait.remote()))
        await asyncio.sleep(0)
        awaited = next(iter(client._callbacks.keys() - {oid}))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return awaited

    awaited = asyncio.run(main())
    fut.cancel()
    del ref, fut
    gc.collect()
    assert not client.holds(oid) and not client.holds(awaited)
    assert registrations() == 0
    gate.open.remote()


def test_as_completed_yields_values_with_rays_keywords(cluster):
    refs = [after.remote(None, i) for i in range(20)]
    assert sorted(as_completed(refs, yield_obj_refs=False, chunk_size=5)) == [i * i for i in range(20)]
    with pytest.raises(KeyError):
        list(as_completed([fail.remote(3)], yield_obj_refs=False))
    with pytest.raises(ValueError, match="chunk_size"):
        as_completed(refs, chunk_size=0)
