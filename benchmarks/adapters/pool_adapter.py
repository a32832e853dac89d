"""multiprocessing.Pool: the floor every task framework is measured against.

No scheduler, no object store, no actors: `put` and the actor workloads are n/a.
A ref passed as an argument (tree_reduce) is waited for by the driver and its
value sent again with the task, as a Pool user would have to do.
"""
import multiprocessing
import signal
import sys

from .base import BaseAdapter


class Adapter(BaseAdapter):
    name = "pool"
    pool = None
    put = None          # no object store: the put workloads report n/a

    def version(self):
        return f"Python {sys.version.split()[0]}"

    def start(self, num_cpus):
        # fork: what Pool uses by default on Linux, and the fastest start.  Workers get
        # SIGTERM's default action: pool.terminate() must end them.  A Python handler
        # (child.py's, inherited) only runs when the main thread wakes, and a worker
        # waiting for a task in a semaphore is not woken when the signal goes to one of
        # its other threads (numpy's BLAS threads): terminate() then waited on it forever.
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            self.pool = multiprocessing.get_context("fork").Pool(
                num_cpus, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL))
        finally:
            signal.signal(signal.SIGTERM, previous)
        from multiprocessing.pool import AsyncResult
        self.AsyncResult = AsyncResult

    def remote(self, fn):
        def submit(*args):
            return self.pool.apply_async(fn, tuple(map(self._value, args)))
        return submit

    def _value(self, arg):
        return arg.get() if isinstance(arg, self.AsyncResult) else arg

    def get(self, refs):
        if isinstance(refs, list):
            return [r.get() for r in refs]
        return refs.get()

    def shutdown(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
