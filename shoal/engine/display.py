"""Rich output from engines: an IPython shell whose displays go to the cell.

Every engine makes (at start, about 0.02 s) with `engine_shell()` a plain IPython
InteractiveShell whose display publisher sends every `display(...)`,
`update_display` and `clear_output` to the running task's owner through
the engine's `publish_display`; the notebook side (shoal.magics.output)
turns them back into display_data, update_display_data and clear_output
messages under the cell that launched the task.  So `display(df)`, IPython's
rich display objects and anything built on `IPython.display` work in any
task or actor call as in a notebook, at any depth of nesting.

Matplotlib uses the inline backend (made default here unless MPLBACKEND says
otherwise); `after_cell` fires the shell's post_execute event, on which the
inline backend shows and closes the cell's open figures, as a kernel does;
the engine does the same after every task that left figures open.

Displays made outside a task (none should be) fall back to printing.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Callable, Optional

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Type
from traitlets.config import Config

# Display fields that travel in the metadata under this key, and are taken
# out again by the notebook side: {"transient": {...}, "update": bool, "clear": bool|None}
EXTRA_KEY = "shoal.display"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class TaskDisplayPublisher(DisplayPublisher):
    """Publishes displays to the owner of the running task."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                **kwargs) -> None:
        _flush_streams()
        md = dict(metadata or {})
        if transient or update:
            md[EXTRA_KEY] = {"transient": dict(transient or {}), "update": bool(update)}
        if not self.shell.publish_to_task(dict(data), md):
            super().publish(data, metadata, source, transient=transient, update=update, **kwargs)

    def clear_output(self, wait=False) -> None:
        _flush_streams()
        if not self.shell.publish_to_task({}, {EXTRA_KEY: {"clear": bool(wait)}}):
            super().clear_output(wait)


class TaskDisplayHook(DisplayHook):
    """A value the shell shows (`%%capture` running a cell) is a display,
    as a kernel's execute_result is, not an "Out[n]:" line on stdout."""

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict, md_dict=None) -> None:
        self.shell.display_pub.publish(format_dict, md_dict)


class EngineShell(InteractiveShell):
    """The shell of an engine: no history, displays go to the cell."""
    display_pub_class = Type(TaskDisplayPublisher)
    displayhook_class = Type(TaskDisplayHook)
    publisher = None        # the engine's publish_display(data, metadata) -> bool

    def publish_to_task(self, data: dict, metadata: dict) -> bool:
        """Send a display to the running task's owner; False outside a task."""
        return self.publisher is not None and self.publisher(data, metadata)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def engine_shell(publisher: Optional[Callable[[dict, dict], bool]] = None) -> InteractiveShell:
    """This process's shell: made on first use (about 0.1 s).  The engine
    passes its `publisher`, which sends displays to the running task's owner."""
    if InteractiveShell.initialized():
        shell = InteractiveShell.instance()
        if publisher is not None:
            shell.publisher = publisher
        return shell
    if "matplotlib" not in sys.modules:
        os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    config = Config()
    config.HistoryManager.enabled = False
    # A module of its own: the shell must not replace sys.modules["__main__"].
    shell = EngineShell.instance(config=config, user_module=types.ModuleType("__shoal_cell__"))
    shell.publisher = publisher
    return shell


def after_task() -> None:
    """A task ended: show the matplotlib figures it left open, as a cell's end would."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums() and InteractiveShell.initialized():
        after_cell(InteractiveShell.instance())


def after_cell(shell: InteractiveShell) -> None:
    """What a kernel does after a cell: post_execute hooks (figures), flush."""
    try:
        shell.events.trigger("post_execute")
    finally:
        _flush_streams()
