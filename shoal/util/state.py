"""Cluster state listings (as in `ray.util.state`).

Engines, hosts, objects and memory come from the active backend (shoal's own
scheduler, or Ray's state in shoal's shapes, as the widgets show them); actors
and task stories are shoal's scheduler's.
"""
from ..core import backend, runtime
from ..core.actor import list_actors
from ..core.generator import ObjectRefGenerator
from ..core.object_ref import ObjectRef


def list_engines() -> list[dict]:
    """Every engine: engine_id, host_id, pid, state (idle, busy, actor, or stopping: its
    task was cancelled with force and a new engine replaces it), task_id, actor_id."""
    return backend.current().status()["engines"]


def list_hosts() -> list[dict]:
    """Every host: host_id, hostname, resources, available, engines."""
    return backend.current().status()["hosts"]


def list_objects() -> list[dict]:
    """Every object: object_id, state, size, type, where (inline, shared memory,
    spilled), hosts, reference_count, held_by, created_by (like `ray memory`)."""
    return backend.current().list_objects()


def memory_summary() -> list[dict]:
    """Per host: bytes used in shared memory, its limit, bytes spilled to disk."""
    return backend.current().memory()


def task_story(task) -> list[dict]:
    """What happened to a task and why: its state transitions, oldest first, each
    {time, stimulus, from, to, why, engine_id} (the stimulus is the event the
    scheduler was handling: a message, a closed connection, a timer).  `task` is
    a task id, an ObjectRef of its results or an ObjectRefGenerator.  Kept for
    live tasks and the last 10,000 that ended; raises ValueError otherwise."""
    if isinstance(task, ObjectRef):
        args = {"object_id": task.id}
    elif isinstance(task, ObjectRefGenerator):
        args = {"task_id": task._task_id}
    elif isinstance(task, str):
        args = {"task_id": task}
    else:
        raise TypeError(f"task_story() takes a task id, an ObjectRef or an ObjectRefGenerator, "
                        f"not {type(task).__name__}")
    return runtime.current().client.query("story", **args)["story"]


__all__ = ["list_actors", "list_engines", "list_hosts", "list_objects", "memory_summary",
           "task_story"]
