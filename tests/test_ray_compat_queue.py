"""shoal.util.queue.Queue: Ray's actor-backed queue, on a real cluster."""
from __future__ import annotations

import asyncio
import time

import pytest

import shoal
from shoal.util.queue import Empty, Full, Queue


def test_fifo_sizes_and_nowait(cluster):
    q = Queue(maxsize=3)
    assert q.empty() and not q.full() and len(q) == q.qsize() == 0
    for i in range(3):
        q.put(i)
    assert q.full() and q.size() == 3
    with pytest.raises(Full):
        q.put_nowait(9)
    with pytest.raises(Full):
        q.put(9, block=False)
    assert [q.get(), q.get_nowait(), q.get(block=False)] == [0, 1, 2]
    with pytest.raises(Empty):
        q.get_nowait()
    q.put_nowait_batch([4, 5])
    with pytest.raises(Full):
        q.put_nowait_batch([6, 7])                 # all or nothing
    assert q.qsize() == 2
    with pytest.raises(Empty):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(2) == [4, 5]
    q.shutdown()


def test_timeouts_raise_empty_and_full(cluster):
    q = Queue(maxsize=1)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 10
    q.put("x")
    with pytest.raises(Full):
        q.put("y", timeout=0.2)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    assert q.get(timeout=5) == "x"


def test_the_queue_travels_to_tasks_and_actors(cluster):
    q = Queue()

    @shoal.remote
    def produce(queue, n):
        for i in range(n):
            queue.put(i)
        return n

    @shoal.remote
    class Consumer:
        def __init__(self, queue):
            self.queue = queue

        def take(self, n):
            return [self.queue.get(timeout=30) for _ in range(n)]

    consumer = Consumer.remote(q)
    taken = consumer.take.remote(5)            # blocks in the actor until items come
    assert shoal.get(produce.remote(q, 5)) == 5
    assert shoal.get(taken) == list(range(5))
    assert q.empty()


def test_blocked_get_wakes_when_an_item_arrives(cluster):
    q = Queue()

    @shoal.remote
    def later(queue):
        time.sleep(0.3)
        queue.put("late")

    ref = later.remote(q)
    assert q.get(timeout=30) == "late"
    shoal.get(ref)


def test_async_variants(cluster):
    q = Queue(maxsize=1)

    async def main():
        await q.put_async(1)
        with pytest.raises(Full):
            await q.put_async(2, timeout=0.1)
        with pytest.raises(Full):
            await q.put_async(2, block=False)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        return first

    assert asyncio.run(main()) == 1


def test_bad_arguments():
    with pytest.raises(TypeError):
        Queue(maxsize="3")
