"""The widgets' half of RayBackend: events, state queries, scaling, auto progress.

`ClusterView` is mixed into RayBackend (backend.py keeps the API's half).
It implements the "widgets' view" group of shoal.core.backend.Backend on
Ray: `subscribe` (events.TaskStream, polling the GCS's task events),
`status` / `list_objects` / `memory` (state.py read, views.py mapped),
`ready` (ray.wait with no timeout), `scale` (the autoscaler's
request_resources, where one runs).  Everything it starts (the stream's
thread, a probe actor under Ray Client) stops in `_close_view()`, which
RayBackend.close() calls.

Auto progress: a blocking get or wait of at least AUTO_PROGRESS_MIN_REFS Ray
refs, in a notebook's main thread, that has not finished after
AUTO_PROGRESS_AFTER seconds shows a progress bar (as on shoal's scheduler:
core's WAIT_PROGRESS hook, the widgets' auto_progress).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Optional

from . import views

AUTO_PROGRESS_AFTER = 2.0
AUTO_PROGRESS_MIN_REFS = 2


class ClusterView:
    """Mixed into RayBackend (which sets `ray`, `address`, `in_worker`, `_closed`)."""

    _reader = None
    _stream = None

    # ------------------------------------------------------------------ plumbing
    def _state(self):
        if self._reader is None:
            from .state import reader
            self._reader = reader(self.ray)
        return self._reader

    def _ask(self, name: str, *args):
        return self._state().ask(name, *args)

    def _job_id(self) -> str:
        return self.ray.get_runtime_context().get_job_id()

    def _task_stream(self):
        if self._stream is None:
            from .events import TaskStream
            job = self._job_id()
            self._stream = TaskStream(lambda: self._ask("task_rows", job),
                                      lambda: self._ask("nodes"))
        return self._stream

    def _close_view(self) -> None:
        """Stop the event thread and the probe (RayBackend.close)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # ------------------------------------------------------------------ Backend: widgets' view
    def bind(self):
        return self

    @property
    def lost(self) -> Optional[str]:
        if self._closed:
            return "shoal.shutdown() closed the connection to Ray"
        if not self.ray.is_initialized():
            return "Ray was shut down"
        return self._stream.lost if self._stream is not None else None

    def subscribe(self, handler):
        return self._task_stream().subscribe(handler)

    def status(self, timeout: float = 5.0) -> dict:
        events, waiting = self._task_stream().current()
        nodes = self._ask("nodes")
        return views.cluster_status(nodes, self._ask("available"), self._ask("node_stats", False),
                                    events, waiting, self._ask("live_actors"), self._job_id())

    def list_objects(self) -> list:
        return views.objects(self._ask("node_stats", True), self._job_id())

    def memory(self) -> list:
        return views.memory(self._ask("nodes"), self._ask("node_stats", False))

    def list_actors(self) -> list:
        return views.actors(self._ask("actor_rows"))

    def object_id(self, ref) -> str:
        return ref if isinstance(ref, str) else ref.hex()

    def task_of(self, object_id: str) -> str:
        return views.task_of(object_id)

    def ready(self, refs: list) -> list:
        refs = [r for r in refs if isinstance(r, self.ray.ObjectRef)]
        if not refs:
            return []
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return [r.hex() for r in done]

    def describe(self) -> dict:
        try:
            scalable = bool(self._ask("autoscaler"))
        except Exception:            # an older Ray, or no KV access: no buttons
            scalable = False
        return {"address": self.address, "kind": f"Ray {self.ray.__version__} cluster",
                "owned": self._started_ray(), "scalable": scalable}

    def _started_ray(self) -> bool:
        """Whether ray.init() started this Ray (a local one, stopped by shutdown())."""
        try:
            node = self.ray._private.worker._global_node
        except AttributeError:
            return False
        return bool(getattr(node, "head", False))

    def scale(self, count: int, host_id: Optional[str]) -> None:
        """Ask the autoscaler for a cluster with `count` CPUs on `host_id`'s share: the
        other nodes' CPUs plus `count` in all (request_resources; it adds nodes to
        reach that, and removes idle ones once a lower request allows)."""
        if not self._ask("autoscaler"):
            raise NotImplementedError("scaling a Ray cluster needs its autoscaler, and none "
                                      "runs on this one (start nodes with `ray start`)")
        hosts = self.status()["hosts"]
        if host_id is None and len(hosts) != 1:
            raise ValueError(f"this Ray cluster has {len(hosts)} nodes: name one (host_id=, "
                             "%cluster scale N --host NODE_ID)")
        if host_id is None:
            host_id = hosts[0]["host_id"]
        elif not any(h["host_id"] == host_id for h in hosts):
            raise ValueError(f"no node {host_id!r} in this Ray cluster")
        others = sum(h["resources"].get("CPU", 0) for h in hosts if h["host_id"] != host_id)
        self._ask("request_cpus", int(others + max(0, count)))

    # ------------------------------------------------------------------ auto progress
    def _watched(self, refs, timeout: Optional[float]) -> bool:
        """Whether a blocking call on `refs` may show a progress bar: 2+ distinct
        refs, in a notebook's main thread, with time to wait past the watch."""
        return (isinstance(refs, list) and len(refs) >= AUTO_PROGRESS_MIN_REFS
                and "ipykernel" in sys.modules and not self.in_worker
                and (timeout is None or timeout > AUTO_PROGRESS_AFTER)
                and threading.current_thread() is threading.main_thread()
                and all(isinstance(r, self.ray.ObjectRef) for r in refs)
                and len(set(refs)) == len(refs))

    def _show_progress(self, refs, what: str):
        from ...core import hooks
        show = hooks.get(hooks.WAIT_PROGRESS)
        return show(self, refs, what) if show is not None else None

    def _get_watched(self, refs, timeout: Optional[float]):
        """ray.get, showing a bar once it has lasted AUTO_PROGRESS_AFTER seconds (Ray's
        semantics: a failed ref raises at once, within the watch as after it)."""
        if not self._watched(refs, timeout):
            return self._ray_get(refs, timeout)
        began = time.monotonic()
        try:
            return self._ray_get(refs, AUTO_PROGRESS_AFTER)
        except self.ray.exceptions.GetTimeoutError:
            pass
        bar = self._show_progress(refs, "get")
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - began))
        try:
            return self._ray_get(refs, left)
        finally:
            if bar is not None:
                bar.settle_ready()

    def _wait_watched(self, refs, num_returns: int, timeout: Optional[float],
                      fetch_local: bool):
        """ray.wait, showing a bar once it has lasted AUTO_PROGRESS_AFTER seconds."""
        if not self._watched(refs, timeout):
            return self._ray_wait(refs, num_returns, timeout, fetch_local)
        began = time.monotonic()
        ready, pending = self._ray_wait(refs, num_returns, AUTO_PROGRESS_AFTER, fetch_local)
        if len(ready) >= num_returns:
            return ready, pending
        bar = self._show_progress(refs, "wait")
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - began))
        try:
            return self._ray_wait(refs, num_returns, left, fetch_local)
        finally:
            if bar is not None:
                bar.settle_ready()


__all__ = ["ClusterView", "AUTO_PROGRESS_AFTER", "AUTO_PROGRESS_MIN_REFS"]
