"""What runs in Ray's worker processes for shoal.

`setup()` is the job's worker_process_setup_hook (set by shoal.init on Ray):
it makes the Ray backend active in each worker, so shoal's API called inside
a task or actor (nested tasks, `shoal.get`, `shoal.put`, ...) goes to Ray too.

`CellOutput` is what a `%%remote` cell's code enters on the worker: while
the cell runs, its stdout, stderr and rich displays go to the output relay,
tagged with the cell they belong to, instead of to the worker's log file
(from where Ray's log forwarding would print them under whatever cell runs
when they arrive).  Leaving it sends what is buffered and waits until the
relay has it, so the notebook can show all of it before the cell's result.
"""
from __future__ import annotations

import io
import os
import sys
import threading

FLUSH_BYTES = 8192          # send a stream's text at a newline, or once this much is buffered


def setup() -> None:
    """Ray's worker_process_setup_hook: shoal's API in this worker talks to Ray."""
    from ...core import backend
    from .backend import RayBackend
    if backend.active is None:
        backend.set_active(RayBackend("ray", in_worker=True))


class _RelayStream(io.TextIOBase):
    """sys.stdout / sys.stderr while a cell's output is routed."""

    def __init__(self, output: "CellOutput", name: str) -> None:
        self._output = output
        self._name = name
        self._parts: list = []
        self._size = 0
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            ready = "\n" in text or self._size >= FLUSH_BYTES
        if ready:
            self.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            text, self._parts, self._size = "".join(self._parts), [], 0
        if text:
            self._output.send(self._name, text)


class CellOutput:
    """A route for one cell's output: the relay actor's handle and the cell's key
    (which the notebook side maps back to the cell).  Picklable; entered on
    the worker around the cell's code (`with spec["output"]:`)."""

    def __init__(self, relay, key: str, label: str = "") -> None:
        self.relay = relay
        self.key = key
        self.label = label
        self._last = None
        self._saved = None

    def __getstate__(self) -> dict:
        return {"relay": self.relay, "key": self.key, "label": self.label}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["relay"], state["key"], state["label"])

    def send(self, stream: str, payload) -> None:
        self._last = self.relay.push.remote([(self.key, stream, os.getpid(), payload)])

    def _display(self, data: dict, metadata: dict) -> None:
        for s in (sys.stdout, sys.stderr):
            s.flush()
        self.send("display", {"data": data, "metadata": metadata})

    def __enter__(self) -> "CellOutput":
        from ...core import display
        self._saved = (sys.stdout, sys.stderr, display.route_display)
        sys.stdout = _RelayStream(self, "stdout")
        sys.stderr = _RelayStream(self, "stderr")
        display.route_display = self._display
        return self

    def __exit__(self, *exc) -> None:
        from ...core import display
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            sys.stdout, sys.stderr, display.route_display = self._saved
        if self._last is not None:
            import ray
            ray.get(self._last)        # the relay has all of it before the cell's result


__all__ = ["setup", "CellOutput"]
