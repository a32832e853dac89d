"""Actors at Ray's import path (`ray.actor`): the classes Ray code names in
type annotations, and exit_actor()."""
from .core.actor import ActorClass, ActorHandle, ActorMethod, exit_actor, method

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]
