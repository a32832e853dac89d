"""Cluster state listings (as in `ray.util.state`)."""
from ..core import runtime
from ..core.actor import list_actors


def list_engines() -> list[dict]:
    """Every engine: engine_id, host_id, pid, state (idle, busy, actor), task_id, actor_id."""
    return runtime.current().client.status()["engines"]


def list_hosts() -> list[dict]:
    """Every host: host_id, hostname, resources, available, engines."""
    return runtime.current().client.status()["hosts"]


def list_objects() -> list[dict]:
    """Every object: object_id, state, size, type, where (inline, shared memory,
    spilled), hosts, reference_count, held_by, created_by (like `ray memory`)."""
    return runtime.current().client.query("objects")


def memory_summary() -> list[dict]:
    """Per host: bytes used in shared memory, its limit, bytes spilled to disk."""
    return runtime.current().client.query("memory")


__all__ = ["list_actors", "list_engines", "list_hosts", "list_objects", "memory_summary"]
