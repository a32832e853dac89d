"""A first-in first-out queue shared by the driver, tasks and actors, backed
by an actor (as Ray's `ray.util.queue.Queue`).

    q = Queue(maxsize=10)
    consumer.remote(q)          # the queue travels to tasks and actors
    q.put(1); q.get(timeout=5)

`get` on an empty queue and `put` on a full one block (optionally up to
`timeout` seconds, then Empty / Full); the *_nowait forms never block; the
*_async forms are coroutines for asyncio code.
"""
from __future__ import annotations

import asyncio
import numbers
from typing import Any, Optional

from ..core.actor import ActorClass, kill
from ..core.api import get


class Empty(Exception):
    """get_nowait() on an empty queue, or get() that timed out."""


class Full(Exception):
    """put_nowait() on a full queue, or put() that timed out."""


class _QueueActor:
    """The queue itself: an async actor, so blocked gets and puts wait on its loop."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item, timeout: Optional[float] = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def get(self, timeout: Optional[float] = None):
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    async def put_nowait(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full("the queue is full") from None

    async def put_nowait_batch(self, items: list) -> None:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full(f"cannot add {len(items)} items to a queue of maxsize {self.maxsize} "
                       f"holding {self.queue.qsize()}")
        for item in items:
            self.queue.put_nowait(item)

    async def get_nowait(self):
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    async def get_nowait_batch(self, num_items: int) -> list:
        if num_items > self.queue.qsize():
            raise Empty(f"cannot get {num_items} items from a queue holding "
                        f"{self.queue.qsize()}")
        return [self.queue.get_nowait() for _ in range(num_items)]


def _check_timeout(timeout) -> None:
    if timeout is not None and (not isinstance(timeout, numbers.Real) or timeout < 0):
        raise ValueError("'timeout' must be a non-negative number")


class Queue:
    """A FIFO queue in the cluster (see the module docstring).

    maxsize: at most this many items (0 or less: unbounded).
    actor_options: options of the actor that holds the items (e.g. a name
        so that other drivers can find it).
    """

    def __init__(self, maxsize: int = 0, actor_options: Optional[dict] = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        self.maxsize = maxsize
        self.actor = ActorClass(_QueueActor, {}).options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return get(self.actor.qsize.remote())

    qsize = size

    def empty(self) -> bool:
        return get(self.actor.empty.remote())

    def full(self) -> bool:
        return get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Add an item; with block (the default) wait for room, at most `timeout`
        seconds (then Full); without block raise Full at once if there is none."""
        if not block:
            return get(self.actor.put_nowait.remote(item))
        _check_timeout(timeout)
        get(self.actor.put.remote(item, timeout))

    async def put_async(self, item: Any, block: bool = True,
                        timeout: Optional[float] = None) -> None:
        if not block:
            return await self.actor.put_nowait.remote(item)
        _check_timeout(timeout)
        await self.actor.put.remote(item, timeout)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the oldest item; with block (the default) wait for
        one, at most `timeout` seconds (then Empty); without block raise Empty at once."""
        if not block:
            return get(self.actor.get_nowait.remote())
        _check_timeout(timeout)
        return get(self.actor.get.remote(timeout))

    async def get_async(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        if not block:
            return await self.actor.get_nowait.remote()
        _check_timeout(timeout)
        return await self.actor.get.remote(timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_nowait_batch(self, items) -> None:
        """Add all items, or none (Full) if they do not all fit."""
        if not isinstance(items, list):
            raise TypeError("put_nowait_batch expects a list of items")
        get(self.actor.put_nowait_batch.remote(items))

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """Remove and return `num_items` items, or none (Empty) if there are fewer."""
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError("num_items must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be non-negative")
        return get(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the queue's actor (its items are lost)."""
        if self.actor is not None:
            kill(self.actor)
        self.actor = None


__all__ = ["Queue", "Empty", "Full"]
