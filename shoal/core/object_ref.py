"""ObjectRef: the name of a value that lives in the cluster."""
from __future__ import annotations

from ..exceptions import ObjectFromOtherClusterError
from ..protocol.object_ids import task_of
from ..protocol.serialization import note_ref, register_plain
from . import runtime


class ObjectRef:
    """A reference to a (possibly future) value in the cluster.

    Holding a ref keeps its value alive; when the last ref anywhere in the
    cluster goes away, the value is freed.  Pass refs to tasks to avoid moving
    values through the driver; `shoal.get(ref)` fetches the value.
    """
    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: str, client=None) -> None:
        self._id = object_id
        self._client = client

    @property
    def id(self) -> str:
        return self._id

    def hex(self) -> str:
        return self._id

    def task_id(self) -> str:
        return task_of(self._id)

    def __reduce__(self):
        note_ref(self._id)
        return (_rebuild_ref, (self._id,))

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.release(self._id)
            except Exception:   # interpreter teardown: nothing left to tell
                pass

    def __eq__(self, other) -> bool:
        return type(other) is ObjectRef and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id})"

    def future(self):
        """A concurrent.futures.Future that completes with the value (no thread
        per ref: see shoal.core.futures).  Cancelling it leaves the task alone."""
        from .futures import ref_future
        return ref_future(self)

    def as_future(self):
        """An asyncio.Future for the value, on the running loop (Ray's as_future)."""
        import asyncio
        from .futures import await_ref
        return asyncio.get_running_loop().create_task(await_ref(self))

    def __await__(self):
        from .futures import await_ref
        return await_ref(self).__await__()


register_plain(ObjectRef)      # args holding refs skip cloudpickle (serialization.py)


def _rebuild_ref(object_id: str) -> ObjectRef:
    rt = runtime.current_or_none()
    if rt is None:
        return ObjectRef(object_id)
    rt.client.adopt(object_id)
    return ObjectRef(object_id, rt.client)


def check_same_cluster(client, refs) -> None:
    """Refs made through another connection (a cluster stopped or left since)
    name nothing here: fail at once, saying so, rather than wait forever."""
    for r in refs:
        other = r._client
        if other is not None and other is not client:
            why = other.lost or "this process disconnected from it"
            raise ObjectFromOtherClusterError(
                f"{r!r} belongs to the shoal cluster {other.cluster_id}, which this process "
                f"has left ({why}); it is now connected to cluster {client.cluster_id}. "
                f"Values do not carry over between clusters: compute the value again.")


def owned_ref(client, object_id: str) -> ObjectRef:
    """A ref to an object this process just submitted or put."""
    client.own(object_id)
    return ObjectRef(object_id, client)
