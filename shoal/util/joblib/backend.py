"""The "shoal" joblib backend: each batch of calls is one shoal task."""
from __future__ import annotations

import threading

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    AutoBatchingMixin, FallbackToBackend, ParallelBackendBase, SequentialBackend,
)

from ...core import backend, runtime
from ...core.api import cancel
from ...core.context import cluster_resources
from ...core.remote_function import RemoteFunction


def _run_batch(batch):
    """In an engine: run a joblib BatchedCalls, returning its list of results."""
    return batch()


_batch_task = RemoteFunction(_run_batch, {"name": "joblib"})


class ShoalBackend(AutoBatchingMixin, ParallelBackendBase):
    """Run joblib's batches as shoal tasks on the current cluster (started
    here on first use, as `shoal.init()` would).

    Batch sizes adapt as joblib's process backends do (AutoBatchingMixin:
    a batch grows until it takes ~0.2-2 s); joblib keeps at most
    `pre_dispatch` batches (2 × n_jobs by default) on the cluster.
    `n_jobs=-1` means every CPU of the cluster; `n_jobs=1` runs
    sequentially here, as joblib's loky backend does.  A failing call raises
    shoal's TaskError, which is also an instance of the original exception.
    Extra keyword arguments (`parallel_backend("shoal", num_cpus=2)`) are task
    options for every batch.
    """

    supports_retrieve_callback = True
    supports_timeout = True
    default_n_jobs = -1

    def __init__(self, nesting_level=None, inner_max_num_threads=None, **task_options):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._task = _batch_task.options(**task_options) if task_options else _batch_task
        self._lock = threading.Lock()
        self._pending: set = set()        # refs of batches not yet finished

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            cpus = int(cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **backend_kwargs):
        if backend.foreign() is None:     # connect (or start a cluster) before counting CPUs
            runtime.current()
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        return n_jobs

    def submit(self, func, callback=None):
        ref = self._task.remote(func)
        with self._lock:
            self._pending.add(ref)
        future = ref.future()
        future.add_done_callback(lambda _: self._done(ref))
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        return future.result()

    def _done(self, ref) -> None:
        with self._lock:
            self._pending.discard(ref)

    def abort_everything(self, ensure_ready=True):
        """A call failed: the batches still queued or running are cancelled."""
        with self._lock:
            pending, self._pending = self._pending, set()
        for ref in pending:
            try:
                cancel(ref)
            except Exception:         # the cluster is gone: nothing left to cancel
                pass

    def terminate(self):
        self.reset_batch_stats()


def register_shoal() -> None:
    """Register the "shoal" backend with joblib: `joblib.parallel_backend("shoal")`."""
    register_parallel_backend("shoal", ShoalBackend)
