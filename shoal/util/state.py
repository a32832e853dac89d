"""Cluster state listings (as in `ray.util.state`)."""
from ..core import runtime
from ..core.actor import list_actors


def list_engines() -> list[dict]:
    """Every engine: engine_id, host_id, pid, state (idle, busy, actor), task_id, actor_id."""
    return runtime.current().client.status()["engines"]


def list_hosts() -> list[dict]:
    """Every host: host_id, hostname, resources, available, engines."""
    return runtime.current().client.status()["hosts"]


__all__ = ["list_actors", "list_engines", "list_hosts"]
