"""Where remote output goes: the output area of the cell that launched it.

`OutputRouter.attach(client)` sets the client's two output hooks:

- `output_context`, called at every submission (in the submitting thread),
  returns `(parent, label, cell)`: the notebook's current parent message, the
  label of the submitting magic (`None` for a plain `f.remote()`, "" for a
  `%%remote` cell, "[engine] " for a `--all` cell), and the running cell's
  token, by which an interrupted cell cancels its own tasks (`cancel_cell`);
- `output_handler(msg, context)`, called on the client's reader thread for
  every TaskOutput, hands text and displays to a sink with that parent, so
  output lands under its own cell even after other cells ran.

Plain tasks get Ray's "(name pid=N) " line prefix; a `%%remote` cell's output
gets none (it is the cell's own output); `--all` lines get the engine.  Work
that a task started (nested tasks, actor calls, tasks an actor submits) comes
with `origin`, the task submitted here that started it: it lands under that
task's cell, with Ray's prefix.

Sinks: `KernelSink` publishes on the kernel's iopub socket (thread-safe in
ipykernel: sends are handed to its IOPub thread, in order); `ConsoleSink`
writes to this process's stdout/stderr (terminal IPython).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections import OrderedDict
from typing import Optional

from ..core.client import print_output
from ..protocol.messages import CancelTask
from ..engine.display import EXTRA_KEY

_MAX_OPEN_LINES = 10_000


class KernelSink:
    """Publishes iopub messages of an ipykernel kernel, from any thread."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel

    def current_parent(self):
        try:
            return self.kernel.get_parent("shell")
        except Exception:
            return None

    def _send(self, msg_type: str, content: dict, parent) -> None:
        kernel = self.kernel
        topic = getattr(kernel, "_topic", None)
        kernel.session.send(kernel.iopub_socket, msg_type, content,
                            parent=parent if parent is not None else self.current_parent(),
                            ident=topic(msg_type) if topic else None)

    def stream(self, parent, name: str, text: str) -> None:
        self._send("stream", {"name": name, "text": text}, parent)

    def display(self, parent, data: dict, metadata: dict, transient: Optional[dict] = None,
                update: bool = False) -> None:
        self._send("update_display_data" if update else "display_data",
                   {"data": data, "metadata": metadata, "transient": transient or {}}, parent)

    def clear(self, parent, wait: bool) -> None:
        self._send("clear_output", {"wait": wait}, parent)

    def error(self, parent, ename: str, evalue: str, traceback: list) -> None:
        self._send("error", {"ename": ename, "evalue": evalue, "traceback": traceback}, parent)


class ConsoleSink:
    """Writes to this process's own streams (terminal IPython)."""

    def current_parent(self):
        return None

    def stream(self, parent, name: str, text: str) -> None:
        out = sys.stderr if name == "stderr" else sys.stdout
        out.write(text)
        out.flush()

    def display(self, parent, data: dict, metadata: dict, transient=None, update=False) -> None:
        self.stream(parent, "stdout", data.get("text/plain", "") + "\n")

    def clear(self, parent, wait: bool) -> None:
        pass

    def error(self, parent, ename: str, evalue: str, traceback: list) -> None:
        self.stream(parent, "stderr", "\n".join(traceback) + "\n")


class OutputRouter:
    def __init__(self, sink) -> None:
        self.sink = sink
        self._local = threading.local()
        self._open_lines: OrderedDict = OrderedDict()   # (task id, stream): a line is unfinished
        self._lock = threading.Lock()
        self.cell = object()            # the running cell's token (see new_cell)

    # ------------------------------------------------------------------ hooks
    def attach(self, client) -> None:
        """Route this client's task output (idempotent)."""
        client.output_context = self.context
        client.output_handler = self.handle

    def attached(self, client) -> bool:
        return client.output_handler == self.handle

    def detach(self, client) -> None:
        if self.attached(client):
            client.output_handler = print_output
            client.output_context = None

    def context(self):
        return (self.sink.current_parent(), getattr(self._local, "label", None), self.cell)

    def new_cell(self) -> None:
        """A cell starts: tasks submitted from now on are its own."""
        self.cell = object()

    def cancel_cell(self, client) -> int:
        """Cancel the tasks the current cell submitted that have not finished
        (and, recursively, the tasks they started); other cells' work goes on.
        Returns how many were cancelled.  Sends messages only: never blocks."""
        mine = [task_id for task_id, context in client.pending_contexts()
                if context is not None and context[2] is self.cell
                and context[1] is None]          # %%remote cancels its own, with a grace
        # Newest first, in one batch: queued tasks go before the running ones are
        # interrupted, so an engine freed by an interrupt never starts one of them.
        if mine:
            client.send(*[CancelTask(object_id=f"{task_id}/0", force=False, recursive=True)
                          for task_id in reversed(mine)])
        return len(mine)

    @contextlib.contextmanager
    def labelled(self, label: str):
        """Tasks submitted in this block (by this thread) print with `label`."""
        old = getattr(self._local, "label", None)
        self._local.label = label
        try:
            yield
        finally:
            self._local.label = old

    # ------------------------------------------------------------------ output
    def handle(self, msg, context) -> None:
        parent, label = context[:2] if context is not None else (None, None)
        if msg.stream == "display":
            self._display(msg, parent)
            return
        nested = msg.origin is not None         # started by a task the cell submitted
        prefix = f"({msg.name} pid={msg.pid}) " if label is None or nested else label
        text = self._prefixed(msg, prefix) if prefix else msg.text
        if text:
            self.sink.stream(parent, "stderr" if msg.stream == "stderr" else "stdout", text)

    def _display(self, msg, parent) -> None:
        payload = msg.data or {}
        metadata = dict(payload.get("metadata") or {})
        extra = metadata.pop(EXTRA_KEY, None) or {}
        if extra.get("clear") is not None:
            self.sink.clear(parent, bool(extra["clear"]))
            return
        self.sink.display(parent, dict(payload.get("data") or {}), metadata,
                          extra.get("transient"), bool(extra.get("update")))

    def _prefixed(self, msg, prefix: str) -> str:
        key = (msg.task_id, msg.stream)
        with self._lock:
            at_start = key not in self._open_lines
            lines = msg.text.splitlines(keepends=True)
            out = "".join(line if i == 0 and not at_start else prefix + line
                          for i, line in enumerate(lines))
            if msg.text and not msg.text.endswith("\n"):
                self._open_lines[key] = True
                if len(self._open_lines) > _MAX_OPEN_LINES:
                    self._open_lines.popitem(last=False)
            else:
                self._open_lines.pop(key, None)
        return out
