"""Utilities on top of the core API (as in `ray.util`)."""
from .actor_pool import ActorPool
from .completion import as_completed
from .executor import Executor

__all__ = ["ActorPool", "Executor", "as_completed"]
