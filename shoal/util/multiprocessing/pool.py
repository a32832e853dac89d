"""`Pool`: multiprocessing.Pool's API, its workers shoal actors.

The caller's thread sends a job's first chunks; one dispatcher thread per
pool (named "shoal-pool", joined by join()) takes each result and sends the
next chunk.  A worker gets a few chunks at a time so it never idles between
them, and the next chunk goes to whichever worker has the fewest in flight.
Results come back through the client's reader thread (`Client.when_ready`),
which only queues them for the dispatcher.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from typing import Any, Callable, Iterable, Optional

from ...core import runtime
from ...core.actor import ActorClass, kill
from ...core.context import cluster_resources
from ...core.remote_function import ship
from ...exceptions import ClusterLostError
from .results import AsyncResult, IMapIterator, MapResult
from .worker import APPLY, MAP, STAR, Failure, PoolWorker

log = logging.getLogger("shoal.pool")
RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"
IN_FLIGHT_PER_WORKER = 4
_WAKE = object()


class RemoteTraceback(Exception):
    """The `__cause__` of an error raised in a pool worker: its traceback, as
    multiprocessing.pool.RemoteTraceback."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class _Worker:
    __slots__ = ("actor", "in_flight", "assigned", "known")

    def __init__(self, actor) -> None:
        self.actor = actor
        self.in_flight = 0
        self.assigned = 0          # chunks given (multiprocessing's "tasks")
        self.known: set = set()    # function keys this worker has been sent


class _Job:
    __slots__ = ("key", "blob", "mode", "chunks", "result", "count")

    def __init__(self, fn: Callable, mode: int, chunks, result) -> None:
        self.key, self.blob = ship(fn)
        self.mode = mode
        self.chunks = chunks        # iterator of lists of items
        self.result = result
        self.count = 0              # chunks taken so far


class Pool:
    """A pool of worker processes with multiprocessing.Pool's API, running on
    the cluster:

        from shoal.util.multiprocessing import Pool
        with Pool() as pool:
            print(pool.map(lambda x: x * x, range(10)))

    Workers are actors (default: one per CPU of the cluster), so what
    `initializer(*initargs)` sets up in a worker stays there for its later
    calls; with `maxtasksperchild` a worker is replaced by a fresh one after
    that many chunks.  Functions may be lambdas or defined in a notebook.  A
    call's exception is raised as itself, its remote traceback as
    `__cause__`.  As in multiprocessing, leaving a `with` block terminates
    the pool; `close()` then `join()` lets queued work finish first.
    `context` is accepted for compatibility and ignored; `actor_options`
    (e.g. `{"num_cpus": 1}`; Ray's name `ray_remote_args` works too) go to
    every worker actor.
    """

    def __new__(cls, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                initargs: Optional[Iterable] = (), maxtasksperchild: Optional[int] = None,
                context: Any = None, actor_options: Optional[dict] = None,
                ray_remote_args: Optional[dict] = None):
        """On another engine (Ray), that engine's own Pool (its `multiprocessing_pool`)."""
        from ...core import backend
        foreign = backend.foreign()
        if foreign is None:
            return super().__new__(cls)
        make = getattr(foreign, "multiprocessing_pool", None)
        if make is None:
            raise NotImplementedError(f"multiprocessing.Pool is not available on the "
                                      f"{foreign.name} backend")
        return make(processes=processes, initializer=initializer, initargs=initargs,
                    maxtasksperchild=maxtasksperchild, context=context,
                    ray_remote_args=actor_options or ray_remote_args)

    def __init__(self, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Optional[Iterable] = (), maxtasksperchild: Optional[int] = None,
                 context: Any = None, actor_options: Optional[dict] = None,
                 ray_remote_args: Optional[dict] = None) -> None:
        if processes is None:
            processes = max(1, int(cluster_resources().get("CPU", 1)))
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int)
                                             or isinstance(maxtasksperchild, bool)
                                             or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._processes = processes
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasks = maxtasksperchild
        self._client = runtime.current().client
        if actor_options is not None and ray_remote_args is not None:
            raise ValueError("give actor_options or ray_remote_args (its Ray name), not both")
        self._actor_class = ActorClass(PoolWorker, dict(actor_options or ray_remote_args or {}))
        self._state = RUN
        self._jobs: deque = deque()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight: dict = {}          # ref id -> (job, chunk index)
        self._lock = threading.RLock()      # jobs, workers, in-flight: caller and dispatcher
        self._workers = [self._new_worker() for _ in range(processes)]
        self._thread = threading.Thread(target=self._dispatch, name="shoal-pool", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the API
    def apply(self, func: Callable, args: Iterable = (), kwds: Optional[dict] = None):
        """`func(*args, **kwds)` in a worker; waits for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: Iterable = (), kwds: Optional[dict] = None,
                    callback: Optional[Callable] = None,
                    error_callback: Optional[Callable] = None) -> AsyncResult:
        result = AsyncResult(callback, error_callback)
        self._submit(func, APPLY, iter([[(tuple(args), dict(kwds or {}))]]), result)
        return result

    def map(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        """`[func(x) for x in iterable]`, in chunks over the workers."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                  callback: Optional[Callable] = None,
                  error_callback: Optional[Callable] = None) -> MapResult:
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        """`[func(*args) for args in iterable]`."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                      callback: Optional[Callable] = None,
                      error_callback: Optional[Callable] = None) -> MapResult:
        return self._map_async(func, iterable, STAR, chunksize, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """Results one by one, in order; the input is read as workers free up."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """Results one by one, as they finish."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def close(self) -> None:
        """Accept no more work; the workers stop once the queued work is done."""
        if self._state == RUN:
            self._state = CLOSE
            self._inbox.put(_WAKE)

    def terminate(self) -> None:
        """Stop the workers now; unfinished results fail."""
        self._state = TERMINATE
        self._inbox.put(_WAKE)
        self._thread.join()

    def join(self) -> None:
        """Wait for the workers to stop (after close() or terminate())."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._thread.join()

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()

    def __repr__(self) -> str:
        return f"<shoal.util.multiprocessing.Pool state={self._state} pool_size={self._processes}>"

    # ------------------------------------------------------------------ submitting
    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _map_async(self, func, iterable, mode, chunksize, callback, error_callback) -> MapResult:
        self._check_running()
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        if chunksize is None:       # half as many chunks as multiprocessing: each is an actor call
            chunksize, extra = divmod(len(items), self._processes * 2)
            chunksize += bool(extra)
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        result = MapResult(len(items), max(chunksize, 1), callback, error_callback)
        if len(items):
            self._submit(func, mode, _chunks(iter(items), chunksize), result)
        return result

    def _imap(self, func, iterable, chunksize, ordered) -> IMapIterator:
        self._check_running()
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        result = IMapIterator(ordered)
        self._submit(func, MAP, _chunks(iter(iterable), chunksize), result)
        return result

    def _submit(self, func, mode, chunks, result) -> None:
        self._check_running()
        if not callable(func):
            raise TypeError(f"{type(func).__name__!r} object is not callable")
        job = _Job(func, mode, chunks, result)
        with self._lock:            # send the first chunks from here: no wait for the dispatcher
            self._check_running()
            self._jobs.append(job)
            self._assign()

    # ------------------------------------------------------------------ the dispatcher
    def _new_worker(self) -> _Worker:
        return _Worker(self._actor_class.remote(self._initializer, self._initargs))

    def _dispatch(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._state == TERMINATE:
                        break
                    self._assign()
                    if self._state == CLOSE and not self._jobs and not self._in_flight:
                        break
                item = self._inbox.get()
                if item is not _WAKE:
                    with self._lock:
                        self._finished(*item)
        except Exception:                   # a bug here must not hang every caller
            log.exception("the pool dispatcher failed")
        finally:
            with self._lock:
                self._abort_all(ValueError("the pool was terminated before this result was ready"))
            for w in self._workers:
                self._kill(w)

    def _assign(self) -> None:
        while self._jobs:
            worker = min(self._workers, key=lambda w: w.in_flight)
            if worker.in_flight >= IN_FLIGHT_PER_WORKER:
                return
            if self._maxtasks is not None and worker.assigned >= self._maxtasks:
                if worker.in_flight:            # retire it once its chunks are back
                    fresh = [w for w in self._workers if w.assigned < self._maxtasks
                             and w.in_flight < IN_FLIGHT_PER_WORKER]
                    if not fresh:
                        return
                    worker = min(fresh, key=lambda w: w.in_flight)
                else:
                    worker = self._replace(worker)
            job = self._jobs[0]
            try:
                items = next(job.chunks)
            except StopIteration:
                self._jobs.popleft()
                job.result._input_done(job.count)
                continue
            except Exception as exc:            # the caller's iterable raised
                self._jobs.popleft()
                job.result._chunk_done(job.count, False, exc)
                job.result._input_done(job.count + 1)
                continue
            index = job.count
            job.count += 1
            if isinstance(job.result, AsyncResult) and job.result.ready():
                continue                        # it failed already: skip the rest
            self._send(worker, job, index, items)

    def _send(self, worker: _Worker, job: _Job, index: int, items: list) -> None:
        blob = None if job.key in worker.known else job.blob
        worker.known.add(job.key)
        ref = worker.actor.run.remote(job.key, blob, items, job.mode)
        worker.in_flight += 1
        worker.assigned += 1
        self._in_flight[ref.id] = (job, index)
        inbox = self._inbox
        self._client.when_ready(ref.id, lambda entry: inbox.put((worker, ref, entry)))

    def _finished(self, worker: _Worker, ref, entry) -> None:
        job, index = self._in_flight.pop(ref.id)
        worker.in_flight -= 1
        ok, value = self._outcome(entry)
        job.result._chunk_done(index, ok, value)
        if self._maxtasks is not None and worker.assigned >= self._maxtasks and not worker.in_flight:
            self._replace(worker)

    def _outcome(self, entry) -> tuple[bool, Any]:
        if entry is None:
            return False, ClusterLostError(self._client.lost or "lost the cluster")
        try:
            value = self._client.load(entry)
        except Exception as exc:
            return False, exc
        if entry.error:
            return False, value
        if isinstance(value, Failure):
            exc = value.exc
            exc.__cause__ = RemoteTraceback(f'\n"""\n{value.tb}"""')
            return False, exc
        return True, value

    def _replace(self, worker: _Worker) -> _Worker:
        fresh = self._new_worker()
        self._workers[self._workers.index(worker)] = fresh
        self._kill(worker)
        return fresh

    def _kill(self, worker: _Worker) -> None:
        try:
            kill(worker.actor)
        except Exception:                   # the cluster is gone: so is the actor
            pass

    def _abort_all(self, exc: BaseException) -> None:
        for job, index in list(self._in_flight.values()):
            job.result._chunk_done(index, False, exc)
        for job in self._jobs:
            job.result._chunk_done(job.count, False, exc)
            job.result._input_done(job.count + 1)
        self._in_flight.clear()
        self._jobs.clear()


def _chunks(items, size: int):
    while chunk := list(itertools.islice(items, size)):
        yield chunk
