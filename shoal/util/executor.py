"""`Executor`: a `concurrent.futures.Executor` whose calls run on the cluster."""
from __future__ import annotations

import concurrent.futures
import itertools
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional

from ..core.context import cluster_resources
from ..core.remote_function import RemoteFunction, validate_task_options


class Executor(concurrent.futures.Executor):
    """Run calls as shoal tasks, so code written for ProcessPoolExecutor runs
    unchanged on the cluster:

        with shoal.util.Executor() as ex:
            print(list(ex.map(pow, [2, 3], [5, 5])))
            fut = ex.submit(sum, [1, 2, 3])

    Up to `max_workers` calls are on the cluster at a time (default: the
    cluster's CPUs when the executor is made); further calls wait in this
    process, as in a ProcessPoolExecutor's queue.  A call that has gone to
    the cluster counts as running: `cancel()` then returns False.  Task
    options (`num_cpus`, `max_retries`, ...) apply to every call.  A failed
    call's future raises shoal's TaskError, which is also an instance of the
    original exception class.  Functions may be lambdas or defined in a
    notebook: they travel by value.
    """

    def __init__(self, max_workers: Optional[int] = None, **task_options) -> None:
        validate_task_options(dict(task_options))
        if max_workers is None:
            max_workers = max(1, int(cluster_resources().get("CPU", 1)))
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._options = task_options
        self._lock = threading.Lock()
        self._queued: deque = deque()          # (future, fn, args, kwargs) not yet sent
        self._running = 0                      # calls on the cluster
        self._futures: set = set()             # every future not yet done
        self._idle = threading.Condition(self._lock)
        self._shutdown = False
        self._remotes: dict = {}               # fn -> RemoteFunction (shipped once)

    def submit(self, fn: Callable, /, *args, **kwargs) -> concurrent.futures.Future:
        """Schedule `fn(*args, **kwargs)`; returns its Future."""
        if not callable(fn):
            raise TypeError(f"submit() expects a callable, got {type(fn).__name__}")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(fut)
            self._queued.append((fut, fn, args, kwargs))
        self._start_queued()
        return fut

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """`map(fn, *iterables)` with results in order, as ProcessPoolExecutor:
        items go to the cluster `chunksize` at a time; `timeout` (seconds from
        this call) raises TimeoutError from the iterator; an error is raised
        when its result is reached."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = _chunks(zip(*iterables), chunksize)
        results = super().map(_run_chunk, itertools.repeat(fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with cancel_futures, cancel the calls that have not
        gone to the cluster; with wait, return when every call has finished."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                queued, self._queued = self._queued, deque()
            else:
                queued = ()
        for fut, *_ in queued:
            fut.cancel()
            self._discard(fut)
        if wait:
            with self._idle:
                self._idle.wait_for(lambda: not self._futures)

    # ------------------------------------------------------------------ internals
    def _start_queued(self) -> None:
        while True:
            with self._lock:
                if self._running >= self._max_workers or not self._queued:
                    return
                fut, fn, args, kwargs = self._queued.popleft()
                if not fut.set_running_or_notify_cancel():      # cancelled while queued
                    self._futures.discard(fut)
                    self._idle.notify_all()
                    continue
                self._running += 1
            try:
                ref = self._remote(fn).remote(*args, **kwargs)
                ref.future().add_done_callback(lambda rf, fut=fut: self._finished(fut, rf))
            except BaseException as exc:        # could not even submit (cluster lost, pickling)
                fut.set_exception(exc)
                self._finished(fut, None)

    def _finished(self, fut: concurrent.futures.Future, ref_future) -> None:
        if ref_future is not None:
            exc = ref_future.exception()
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(ref_future.result())
        with self._lock:
            self._running -= 1
        self._discard(fut)
        self._start_queued()

    def _discard(self, fut) -> None:
        with self._idle:
            self._futures.discard(fut)
            if not self._futures:
                self._idle.notify_all()

    def _remote(self, fn: Callable) -> RemoteFunction:
        try:
            remote = self._remotes.get(fn)
        except TypeError:                       # unhashable callable: ship each time
            return RemoteFunction(fn, self._options)
        if remote is None:
            remote = self._remotes[fn] = RemoteFunction(fn, self._options)
        return remote


def _chunks(items: Iterator[tuple], size: int) -> Iterator[tuple]:
    while chunk := tuple(itertools.islice(items, size)):
        yield chunk


def _run_chunk(fn: Callable, chunk: tuple) -> list:
    return [fn(*args) for args in chunk]
