"""ActorPool: spread work over a fixed set of actors (Ray's `ray.util.ActorPool`)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from ..core.api import get, wait


class ActorPool:
    """Run `fn(actor, value)` calls on whichever actor is free.

        pool = ActorPool([Worker.remote() for _ in range(4)])
        list(pool.map(lambda a, v: a.double.remote(v), range(10)))

    Results of `get_next` come in submission order; `get_next_unordered`
    gives whichever finishes first.  Only use a pool from one thread.
    """

    def __init__(self, actors: list) -> None:
        self._idle = list(actors)
        self._future_to_actor: dict = {}    # ref -> (index, actor)
        self._index_to_future: dict = {}    # submission index -> ref
        self._next_task = 0                 # next submission index
        self._next_return = 0               # next index get_next gives back
        self._pending: list = []            # (fn, value) waiting for a free actor

    def map(self, fn: Callable, values: Iterable) -> Iterable[Any]:
        """Results in the order of `values`."""
        self._drain()
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn: Callable, values: Iterable) -> Iterable[Any]:
        """Results in the order they finish."""
        self._drain()
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next_unordered()

    def submit(self, fn: Callable, value: Any) -> None:
        """Schedule `fn(actor, value)`; queued until an actor is free."""
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            self._future_to_actor[ref] = (self._next_task, actor)
            self._index_to_future[self._next_task] = ref
            self._next_task += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        return bool(self._future_to_actor)

    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return >= self._next_task:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._index_to_future[self._next_return]
        if timeout is not None:
            ready, _ = wait([ref], timeout=timeout)
            if not ready:
                if ignore_if_timedout:          # give up on this result: skip past it
                    del self._index_to_future[self._next_return]
                    self._next_return += 1
                    self._return_actor(self._future_to_actor.pop(ref)[1])
                raise TimeoutError("Timed out waiting for result")
        del self._index_to_future[self._next_return]
        self._next_return += 1
        _, actor = self._future_to_actor.pop(ref)
        self._return_actor(actor)
        return get(ref)

    def get_next_unordered(self, timeout: float | None = None) -> Any:
        """Whichever result is ready first."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError("Timed out waiting for result")
        ref = ready[0]
        index, actor = self._future_to_actor.pop(ref)
        self._index_to_future.pop(index, None)
        self._next_return = max(self._next_return, index + 1)
        self._return_actor(actor)
        return get(ref)

    def push(self, actor) -> None:
        """Add an actor to the pool."""
        self._return_actor(actor)

    def pop_idle(self):
        """Take an idle actor out of the pool (None if none is idle)."""
        return self._idle.pop() if self.has_free() else None

    def _return_actor(self, actor) -> None:
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.pop(0))

    def _drain(self) -> None:
        while self.has_next():
            self.get_next_unordered()
