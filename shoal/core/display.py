"""Rich output from inside a task: a mimebundle sent to the task's owner,
which shows it where the task was launched (the Jupyter layer: in that cell)."""
from __future__ import annotations

import os

from ..protocol import messages as m
from . import runtime
from .client import current_task

# Where displays go in another engine's worker (Ray) while a cell's output is
# routed there: set by that backend (shoal.backends.ray.worker.CellOutput).
route_display = None



def publish_display(data: dict, metadata: dict | None = None) -> bool:
    """Send a display (e.g. {"text/plain": ..., "image/png": ...}) from the
    running task to its owner.  Returns False outside a task (nothing sent)."""
    task = current_task.get()
    rt = runtime.current_or_none()
    if task is None or rt is None:
        if route_display is not None:
            route_display(data, metadata or {})
            return True
        return False
    rt.client.send(m.TaskOutput(task_id=task.task_id, name=task.name, pid=os.getpid(),
                                stream="display", data={"data": data, "metadata": metadata or {}}))
    return True
