"""The call an engine is running in this thread or coroutine, if any.

The engine sets it around every call; the client side of the process reads it
(which task submits a nested task, which job it belongs to, whose output a
print is).  It lives here, below core, because the engine is what sets it."""
from __future__ import annotations

import contextvars

# The ExecuteTask being run, or None outside a task.
current_task: contextvars.ContextVar = contextvars.ContextVar("shoal_current_task", default=None)
