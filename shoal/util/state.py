"""Cluster state listings (as in `ray.util.state`)."""
from ..core.actor import list_actors

__all__ = ["list_actors"]
