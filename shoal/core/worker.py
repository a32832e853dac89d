"""The engine process's program, `python -m shoal.core.worker` (a host agent
starts it): a core Client, made the process's runtime so that tasks can use
the whole public API, around shoal.engine's task loop.

This is where the two meet: core imports the engine, never the other way;
the engine gets what it needs of core as `EngineServices` (the contract is
shoal.engine.services.Services)."""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..engine.engine import main as engine_main
from ..store.shm import HostStore
from . import runtime
from .actor import exit_actor
from .api import get, put
from .client import Client
from .generator import DynamicObjectRefGenerator
from .object_ref import ObjectRef, _rebuild_ref, owned_ref


class EngineServices:
    """shoal.engine.services.Services, given by the process's runtime."""
    ref_type = ObjectRef

    def __init__(self, client: Client) -> None:
        self.client = client

    def put(self, value: Any) -> ObjectRef:
        return put(value)

    def owned_ref(self, object_id: str) -> ObjectRef:
        return owned_ref(self.client, object_id)

    def dynamic_generator(self, refs: list) -> DynamicObjectRefGenerator:
        return DynamicObjectRefGenerator(refs)

    def fetch(self, object_id: str) -> Any:
        return get(_rebuild_ref(object_id))

    def exit_actor(self, reason: str) -> None:
        exit_actor(reason=reason)

    def keep_actor_env(self, runtime_env: Optional[dict], placement: Optional[dict]) -> None:
        rt = runtime.current()
        rt.runtime_env = runtime_env
        rt.placement = placement


def connect(config: dict, on_message: Callable) -> EngineServices:
    """Connect the engine's Client (not started: the engine starts it once it
    is ready for messages) and make it this process's runtime."""
    client = Client.connect(
        config["address"], bytes.fromhex(config["key"]), kind="engine",
        host_id=config["host_id"], store=HostStore(config["store_dir"], config["spill_dir"],
                                                   config["store_limit"]),
        engine_id=config["engine_id"], actor_id=config.get("actor_id"), on_message=on_message,
        start=False)
    runtime.set_current(runtime.Runtime(client, config["address"]))
    return EngineServices(client)


if __name__ == "__main__":
    engine_main(connect)
