"""Utilities on top of the core API (as in `ray.util`)."""
from ..core.context import get_node_ip_address
from .actor_pool import ActorPool
from .completion import as_completed
from .executor import Executor
# As in `ray.util`: the functions, under the names of their module.
from .placement_group import (  # noqa: E402
    get_current_placement_group, placement_group, placement_group_table, remove_placement_group,
)


def list_named_actors(all_namespaces: bool = False) -> list:
    """Names of the live named actors: in this job's namespace, or with
    all_namespaces=True every one as {"name": ..., "namespace": ...} (as Ray)."""
    from ..core import runtime
    from ..core.actor import list_actors
    namespace = runtime.job()[1]
    named = [a for a in list_actors() if a.get("name") and a.get("state") != "DEAD"]
    if all_namespaces:
        return [{"name": a["name"], "namespace": a["namespace"]} for a in named]
    return [a["name"] for a in named if a["namespace"] == namespace]


__all__ = ["ActorPool", "Executor", "as_completed", "get_node_ip_address", "list_named_actors",
           "placement_group", "remove_placement_group", "placement_group_table",
           "get_current_placement_group"]
