"""ActorPool: spread work over a fixed set of actors (Ray's `ray.util.ActorPool`)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

from ..core.api import get, wait
from ..exceptions import ActorDiedError

TIMED_OUT = "Timed out waiting for result"


class ActorPool:
    """Run `fn(actor, value)` calls on whichever actor is free.

        pool = ActorPool([Worker.remote() for _ in range(4)])
        list(pool.map(lambda a, v: a.double.remote(v), range(10)))

    `fn` returns a ref, or a list of refs for a method with several returns
    (its result is then the list of values).  `map` submits at once, as Ray's
    does; results of `get_next` come in submission order, `get_next_unordered`
    gives whichever finishes first.  An actor that dies leaves the pool.  Only
    use a pool from one thread.
    """

    def __init__(self, actors: list) -> None:
        self._idle = list(actors)
        self._future_to_actor: dict = {}    # ref (tuple of refs) -> (index, actor)
        self._index_to_future: dict = {}    # submission index -> ref or list of refs
        self._next_task = 0                 # next submission index
        self._next_return = 0               # next index get_next gives back
        self._pending: list = []            # (fn, value) waiting for a free actor

    def map(self, fn: Callable, values: Iterable) -> Iterator[Any]:
        """Submit fn(actor, v) for every value now; iterate for the results
        in the order of `values`.  Results of earlier submissions not yet
        fetched are dropped."""
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        return self._results(self.get_next)

    def map_unordered(self, fn: Callable, values: Iterable) -> Iterator[Any]:
        """As map, with results in the order they finish."""
        while self.has_next():
            try:
                self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        return self._results(self.get_next_unordered)

    def _results(self, next_result: Callable) -> Iterator[Any]:
        while self.has_next():
            yield next_result()

    def submit(self, fn: Callable, value: Any) -> None:
        """Schedule `fn(actor, value)`; queued until an actor is free."""
        if self._idle:
            actor = self._idle.pop()
            future = fn(actor, value)
            self._future_to_actor[_key(future)] = (self._next_task, actor)
            self._index_to_future[self._next_task] = future
            self._next_task += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        """Whether any submitted result is still to be fetched."""
        return bool(self._future_to_actor)

    def has_free(self) -> bool:
        """Whether an actor is idle and nothing waits for one."""
        return bool(self._idle) and not self._pending

    def get_next(self, timeout: Optional[float] = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, waiting up to `timeout` seconds
        (then TimeoutError; with ignore_if_timedout the result is dropped)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return >= self._next_task:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return]
        if timeout is not None:
            ready, _ = wait(_refs(future), num_returns=len(_refs(future)), timeout=timeout)
            if len(ready) < len(_refs(future)):
                if not ignore_if_timedout:
                    raise TimeoutError(TIMED_OUT)
                del self._index_to_future[self._next_return]
                self._next_return += 1
                self._return_actor(self._future_to_actor.pop(_key(future))[1])
                raise TimeoutError(f"{TIMED_OUT}. The task {future} has been ignored.")
        del self._index_to_future[self._next_return]
        self._next_return += 1
        _, actor = self._future_to_actor.pop(_key(future))
        return self._result(future, actor)

    def get_next_unordered(self, timeout: Optional[float] = None,
                           ignore_if_timedout: bool = False) -> Any:
        """Whichever result is ready first, waiting up to `timeout` seconds."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        firsts = {_refs(f)[0]: f for f in self._index_to_future.values()}
        ready, _ = wait(list(firsts), num_returns=1, timeout=timeout)
        if ready:
            future = firsts[ready[0]]
        elif ignore_if_timedout:
            future = self._index_to_future[min(self._index_to_future)]
        else:
            raise TimeoutError(TIMED_OUT)
        index, actor = self._future_to_actor.pop(_key(future))
        del self._index_to_future[index]
        self._next_return = max(self._next_return, index + 1)
        if not ready:
            self._return_actor(actor)
            raise TimeoutError(f"{TIMED_OUT}. The task {future} has been ignored.")
        return self._result(future, actor)

    def push(self, actor) -> None:
        """Add an actor to the pool (ValueError if it is in the pool already)."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def pop_idle(self):
        """Take an idle actor out of the pool (None if none is idle)."""
        return self._idle.pop() if self.has_free() else None

    def _result(self, future, actor) -> Any:
        alive = True
        try:
            return get(future)
        except ActorDiedError:
            alive = False               # a dead actor would take every later submission
            raise
        finally:
            self._return_actor(actor, alive)

    def _return_actor(self, actor, alive: bool = True) -> None:
        if alive:
            self._idle.append(actor)
        if self._pending and self._idle:
            self.submit(*self._pending.pop(0))


def _refs(future) -> list:
    return list(future) if isinstance(future, list) else [future]


def _key(future):
    return tuple(future) if isinstance(future, list) else future
