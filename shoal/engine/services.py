"""What the engine needs from the client side of its process.

Tasks run user code that calls shoal's public API, so an engine process holds
a core Client made the process's runtime.  The engine package sits below core
and does not import it: the process's program (shoal.core.worker) connects
the Client and hands the engine these services.  Keeping them here, written
down, is what keeps that boundary honest: the engine uses nothing else."""
from __future__ import annotations

from typing import Any, Optional, Protocol

from ..protocol.messages import ObjectEntry
from ..protocol.serialization import Serialized


class EngineClient(Protocol):
    """The parts of the process's Client (shoal.core.client) the engine uses."""
    actor_options: Optional[dict]      # set once an actor's constructor has run

    def start(self) -> None: ...       # begin receiving: on_message may be called from now on
    def send(self, *msgs) -> None: ...
    def store_value(self, object_id: str, value: Serialized) -> ObjectEntry: ...
    def load(self, entry: ObjectEntry) -> Any: ...
    def seed(self, entries) -> None: ...       # a task's dependencies, ready at once
    def unseed(self, ids) -> None: ...
    def new_id(self, prefix: str = "") -> str: ...
    def close(self) -> None: ...


class Services(Protocol):
    client: EngineClient
    ref_type: type                     # ObjectRef: top-level ref arguments arrive as values

    def put(self, value: Any) -> Any:
        """shoal.put: an item of a dynamic generator task."""

    def owned_ref(self, object_id: str) -> Any:
        """A ref to an object this process made and owns."""

    def dynamic_generator(self, refs: list) -> Any:
        """The value of a num_returns="dynamic" task: its items' refs."""

    def fetch(self, object_id: str) -> Any:
        """The value of an object by id (a runtime_env package)."""

    def exit_actor(self, reason: str) -> None:
        """shoal.actor.exit_actor: raises SystemExit (AsyncioActorExit in a coroutine)."""

    def keep_actor_env(self, runtime_env: Optional[dict], placement: Optional[dict]) -> None:
        """An actor's engine keeps its runtime_env and placement group for life:
        what its methods submit inherits them."""
