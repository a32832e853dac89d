"""Remote errors shown like local ones.

A failed remote cell raises, in the notebook, the user's own exception (a
ZeroDivisionError stays a ZeroDivisionError), carrying IPython's
`_render_traceback_` hook: IPython then shows the traceback made here instead
of the magic's own frames.  The traceback is IPython's usual one, rendered
from real traceback objects rebuilt from the remote frames (the trick Jinja2
uses for template errors): each frame is a tiny code object that raises at
the remote file name, line number and function name, so IPython reads the
source lines from this process's linecache — where the notebook registered
the cell — and shows "Cell In[N], line M" with the cell's lines.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Optional

from ..exceptions import TaskCancelledError, TaskError


def fake_traceback(frames: list, exc: BaseException):
    """Real traceback objects for remote frames [(filename, lineno, name, line)]."""
    tb = None
    for filename, lineno, name, _line in reversed(frames):
        code = compile("\n" * (max(int(lineno or 1), 1) - 1) + "raise __shoal_exc__",
                       filename or "<unknown>", "exec", dont_inherit=True)
        try:
            code = code.replace(co_name=name or "<module>", co_qualname=name or "<module>")
        except TypeError:              # Python < 3.11: no co_qualname
            code = code.replace(co_name=name or "<module>")
        try:
            exec(code, {"__shoal_exc__": exc})
        except BaseException:
            frame_tb = sys.exc_info()[2].tb_next
        frame_tb.tb_next = tb
        tb = frame_tb
    exc.__traceback__ = None
    return tb


def shown(exc: BaseException, stb: list) -> BaseException:
    """`exc`, set to show as the structured traceback `stb` in IPython."""
    exc._render_traceback_ = lambda: list(stb)
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    return exc


def remote_exception(shell, err: BaseException, header: Optional[str] = None) -> BaseException:
    """The exception to raise in the notebook for a task's error `err`."""
    if isinstance(err, TaskError) and "frames" in vars(err):      # shoal's own
        cause = err.cause if isinstance(err.cause, BaseException) else None
        if cause is None:
            cause = err
        tb = fake_traceback(err.frames, cause)
        stb = shell.InteractiveTB.structured_traceback(type(cause), cause, tb, tb_offset=0)
        if cause is err:                   # no original class: show the remote text
            stb = stb[:-1] + [err.exception_text.rstrip()] if stb else [err.exception_text]
        exc = cause
    elif isinstance(getattr(err, "cause", None), BaseException) and err.cause is not err:
        # Another engine's task error (Ray's RayTaskError): the remote traceback
        # comes as text (its str), the original exception as `cause`.
        exc = err.cause
        tb = fake_traceback(text_frames(getattr(err, "traceback_str", None) or str(err)), exc)
        stb = shell.InteractiveTB.structured_traceback(type(exc), exc, tb, tb_offset=0)
    else:
        stb = short_traceback(shell, err)
        exc = err
    if header:
        stb = [header] + list(stb)
    return shown(exc, stb)


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$', re.M)
_SHOAL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def text_frames(text: str) -> list:
    """[(filename, lineno, name, None)] of a traceback printed as text, without
    shoal's own frames (the engine drops them from its tracebacks too)."""
    return [(m["file"], int(m["line"]), m["name"].strip(), None)
            for m in _FRAME.finditer(text) if not m["file"].startswith(_SHOAL_DIR)]


def short_traceback(shell, exc: BaseException) -> list:
    """Just `Type: message`, coloured as IPython does."""
    return shell.InteractiveTB.get_exception_only(type(exc), exc)


def interrupted(shell, message: str) -> BaseException:
    """The short KeyboardInterrupt shown when a remote cell was cancelled."""
    exc = KeyboardInterrupt(message)
    return shown(exc, short_traceback(shell, exc))


def is_cancelled(err: BaseException) -> bool:
    return isinstance(err, TaskCancelledError)


def syntax_error(shell, err: SyntaxError) -> BaseException:
    """A SyntaxError in a remote cell, shown as IPython shows a local one.

    IPython renders SyntaxError subclasses its own way (ignoring
    `_render_traceback_`), so the error travels in a plain exception named
    SyntaxError that carries the usual rendering."""
    stb = shell.SyntaxTB.structured_traceback(type(err), err, [])
    carrier = _SyntaxErrorShown(str(err))
    return shown(carrier, stb)


class _SyntaxErrorShown(Exception):
    pass


_SyntaxErrorShown.__name__ = _SyntaxErrorShown.__qualname__ = "SyntaxError"
