"""`%%remote --bg`: cells that run while the notebook goes on.

`BackgroundCells.start` shows a status line under the launching cell (HTML
and text, with a display id) and starts one named watcher thread per cell.
The watcher waits for the cell's tasks (cancelling them at `--timeout`),
then, always under the launching cell (by its parent header, whatever cell
runs now): updates the status line (done / failed / cancelled, with the
time), shows the remote error as a traceback, or shows the cell's result.
The names the cell assigns were bound to ObjectRefs at launch, so nothing
touches the notebook namespace from the thread.

Widgets replace the status line in a later version.  Watchers end when
their cell ends or the cluster goes (`join` waits for them).
"""
from __future__ import annotations

import html
import logging
import threading
import time
import uuid


from ..core import api
from ..exceptions import ClusterLostError, TaskCancelledError

log = logging.getLogger("shoal.magics")


class BackgroundCells:
    def __init__(self, shell, router) -> None:
        self.shell = shell
        self.router = router
        self.cells = None               # the RemoteCells, set by the magics
        self._threads: set = set()
        self._lock = threading.Lock()

    def start(self, job, parent) -> None:
        display_id = uuid.uuid4().hex
        names = ", ".join(job.pull) if job.pull else ""
        where = f"{len(job.tasks)} engines" if job.opts.all else \
            f"namespace {job.opts.on!r}" if job.opts.on is not None else "the cluster"
        bound = (f"; {names} {'is' if len(job.pull) == 1 else 'are'} bound to ObjectRef"
                 f"{'' if len(job.pull) == 1 else 's'} (shoal.get to wait, shoal.cancel to stop)"
                 if names else "")
        self._status(parent, display_id, "running", f"running on {where}{bound}", job.title,
                     update=False)
        self._progress(job, parent)
        thread = threading.Thread(target=self._watch, args=(job, parent, display_id),
                                  name=f"shoal-bg-{job.title}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _progress(self, job, parent) -> None:
        """A live progress bar under the status line (kernels only; a terminal has the line)."""
        from .output import KernelSink
        if not isinstance(self.router.sink, KernelSink):
            return
        try:
            from ..widgets import ProgressWidget
            bar = ProgressWidget([t[0] for t in job.tasks], title=job.title)
            data, metadata = bar._repr_mimebundle_()
        except Exception:
            log.debug("no progress bar for %s", job.title, exc_info=True)
            return
        self.router.sink.display(parent, data, metadata)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the watchers (after the cluster stopped, they end at once)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._threads)

    # ------------------------------------------------------------------ watcher
    def _watch(self, job, parent, display_id: str) -> None:
        started = time.monotonic()
        try:
            self._finish(job, parent, display_id, started)
        except ClusterLostError:
            self._status(parent, display_id, "lost", "the cluster went away", job.title)
        except Exception:
            log.exception("watching background cell %s failed", job.title)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _finish(self, job, parent, display_id: str, started: float) -> None:
        from .cells import collect, result_of
        firsts = [t[0] for t in job.tasks]
        _, pending = api.wait(firsts, num_returns=len(firsts), timeout=job.opts.timeout)
        if pending:
            for ref in pending:
                api.cancel(ref, force=job.namespace is None)
            api.wait(firsts, num_returns=len(firsts), timeout=5.0)
            self._status(parent, display_id, "failed",
                         f"cancelled after its --timeout of {job.opts.timeout:g} s", job.title)
            return
        elapsed = time.monotonic() - started
        outcomes = collect(job, figures_guard=False)   # pyplot is not ours to touch here
        failures = [(label, o) for label, o in zip(job.labels, outcomes)
                    if isinstance(o, BaseException)]
        if failures:
            cancelled = all(isinstance(e, TaskCancelledError) for _, e in failures)
            self._status(parent, display_id, "failed",
                         "cancelled" if cancelled else f"failed after {elapsed:.2f} s", job.title)
            exc = self.cells._error(job, failures, len(outcomes))
            self.router.sink.error(parent, type(exc).__name__, str(exc), exc._render_traceback_())
            return
        self._status(parent, display_id, "done", f"done in {elapsed:.2f} s", job.title)
        value = result_of(job, outcomes)
        if value is not None:
            data, metadata = self.shell.display_formatter.format(value)
            self.router.sink.display(parent, data, metadata)

    # ------------------------------------------------------------------ status line
    def _status(self, parent, display_id: str, state: str, text: str, title: str,
                update: bool = True) -> None:
        icon = {"running": "⏳", "done": "✔", "failed": "✘", "lost": "✘"}[state]
        color = {"running": "#555", "done": "#2a7a2a", "failed": "#b22", "lost": "#b22"}[state]
        data = {
            "text/plain": f"{icon} {title}: {text}",
            "text/html": (f'<div class="shoal-bg-status" data-state="{state}" '
                          f'style="font-family: monospace; color: {color}">{icon} '
                          f"<b>{html.escape(title)}</b>: {html.escape(text)}</div>"),
        }
        self.router.sink.display(parent, data, {}, {"display_id": display_id}, update)
