"""`get_runtime_context()` and the cluster-state calls of Ray's top-level API:
nodes(), cluster_resources(), available_resources(), get_gpu_ids().

Inside a task or actor the context describes the call being run (the engine
sets the current ExecuteTask in a context variable, so threads and coroutines
of a concurrent actor each see their own call); in a driver it describes the
driver.  Ids are hex strings (see ids.py).
"""
from __future__ import annotations

from typing import Optional

from . import backend, runtime
from .client import current_task
from .ids import to_hex


class RuntimeContext:
    """What this process is and what it is running (as Ray's RuntimeContext)."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self._runtime = rt

    @property
    def _task(self):
        return current_task.get()

    def get_job_id(self) -> str:
        """The id of the driver (job) this work belongs to."""
        return to_hex(runtime.job()[0])

    def get_node_id(self) -> Optional[str]:
        """The id of the host this process runs on (None for a driver outside the cluster's hosts)."""
        return to_hex(self._runtime.client.host_id)

    def get_placement_group_id(self) -> Optional[str]:
        """The hex id of the placement group this task or actor runs in, if any."""
        from .placement_group import get_current_placement_group
        group = get_current_placement_group()
        return group.id if group is not None else None

    def get_worker_id(self) -> str:
        """The id of this process's connection (one per driver or engine)."""
        return to_hex(self._runtime.client.client_id)

    def get_task_id(self) -> Optional[str]:
        """The id of the running task or actor call; None in the driver (as Ray)."""
        task = self._task
        return to_hex(task.task_id) if task is not None else None

    def get_actor_id(self) -> Optional[str]:
        """The id of the actor this runs in; None in the driver and in tasks."""
        return to_hex(self._runtime.client.actor_id)

    def get_actor_name(self) -> Optional[str]:
        options = self._runtime.client.actor_options
        return options.get("name") if options else None

    @property
    def current_actor(self):
        """A handle to the actor this runs in (RuntimeError elsewhere, as Ray)."""
        client = self._runtime.client
        if client.actor_id is None or client.actor_options is None:
            raise RuntimeError("This method is only available in an actor.")
        from .actor import ActorHandle
        client.adopt(client.actor_id)
        return ActorHandle(client.actor_id, client.actor_options, client)

    @property
    def namespace(self) -> str:
        return runtime.job()[1]

    def get_assigned_resources(self) -> dict:
        """The resources held by the running task or actor ({} in the driver)."""
        task = self._task
        return dict(task.resources) if task is not None else {}

    def get_accelerator_ids(self) -> dict:
        """{"GPU": [ids as strings]} of the running task or actor (as Ray)."""
        return {"GPU": [str(g) for g in get_gpu_ids()]}

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor has been restarted (after its process died)."""
        client = self._runtime.client
        if client.actor_id is None:
            return False
        for actor in client.query("list_actors"):
            if actor.get("actor_id") == client.actor_id:
                return bool(actor.get("restarts"))
        return False

    @property
    def gcs_address(self) -> str:
        """The cluster's address (Ray: the GCS's)."""
        return self._runtime.address

    def get(self) -> dict:
        """Ray's older dict form of the context."""
        out = {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
               "namespace": self.namespace}
        if self._task is not None:
            out["task_id"] = self.get_task_id()
        if self._runtime.client.actor_id is not None:
            out["actor_id"] = self.get_actor_id()
        return out

    def __repr__(self) -> str:
        return f"RuntimeContext({self.get()})"


def get_runtime_context() -> RuntimeContext:
    """The context of this driver, task or actor (starts a local cluster if
    none is running, as Ray does)."""
    foreign = backend.foreign()
    if foreign is not None:
        return foreign.runtime_context()
    return RuntimeContext(runtime.current())


def get_gpu_ids() -> list:
    """The GPUs assigned to the running task or actor (CUDA_VISIBLE_DEVICES is
    set to match while it runs); [] in the driver or without GPUs."""
    if backend.active is not None:
        return backend.active.gpu_ids()
    task = current_task.get()
    return list(task.gpu_ids) if task is not None else []


def nodes() -> list[dict]:
    """Every host as Ray describes a node: NodeID, Alive, NodeManagerAddress,
    NodeManagerHostname, Resources (and a few more).  Hosts that left the
    cluster are listed too, with Alive False, as in Ray."""
    foreign = backend.foreign()
    if foreign is not None:
        return foreign.nodes()
    status = runtime.current().client.status()
    return ([_node(h, True) for h in status["hosts"]]
            + [_node(h, False) for h in status.get("departed_hosts", [])])


def _node(host: dict, alive: bool) -> dict:
    address = host.get("address", "")
    return {"NodeID": to_hex(host["host_id"]), "Alive": alive, "alive": alive,
            "NodeManagerAddress": address, "NodeManagerHostname": host["hostname"],
            "NodeName": address, "ObjectStoreSocketName": host.get("store_dir", ""),
            "Resources": _nonzero(host["resources"]) if alive else {}, "Labels": {}}


def cluster_resources() -> dict:
    """Total resources of all hosts, with Ray's keys: CPU, GPU, memory,
    object_store_memory, node:<address>, and custom ones (zero amounts left out)."""
    foreign = backend.foreign()
    if foreign is not None:
        return foreign.cluster_resources()
    return _sum_resources("resources")


def available_resources() -> dict:
    """Resources not held by running tasks and actors right now (zero amounts left out)."""
    foreign = backend.foreign()
    if foreign is not None:
        return foreign.available_resources()
    return _sum_resources("available")


def _sum_resources(key: str) -> dict:
    total: dict = {}
    for host in runtime.current().client.status()["hosts"]:
        for k, v in host[key].items():
            total[k] = total.get(k, 0) + v
    return _nonzero(total)


def implicit_resource(name: str) -> bool:
    """Ray's resources every host has (memory, object_store_memory, node:<address>):
    summaries for people leave them out and show what tasks ask for."""
    return name in ("memory", "object_store_memory") or name.startswith("node:")


def _nonzero(resources: dict) -> dict:
    return {k: float(v) for k, v in resources.items() if v}


def get_node_ip_address() -> str:
    """The IP address of this process's host, as the cluster sees it."""
    client = runtime.current().client
    for info in client.query("hosts"):
        if info.host_id == client.host_id:
            return info.object_address.rsplit(":", 1)[0].strip("[]")
    import socket
    return socket.gethostbyname(socket.gethostname())
