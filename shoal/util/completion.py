"""`as_completed`: refs in the order their values become ready."""
from __future__ import annotations

import queue
import time
from typing import Iterable, Iterator, Optional

from ..core import runtime
from ..core.object_ref import ObjectRef
from ..exceptions import ClusterLostError, GetTimeoutError


def as_completed(refs: Iterable[ObjectRef], timeout: Optional[float] = None, *,
                 yield_obj_refs: bool = True, chunk_size: Optional[int] = None) -> Iterator:
    """Yield each of `refs` once its value (or its task's error) is ready,
    first finished first, like `concurrent.futures.as_completed`.

    With `yield_obj_refs=False` it yields the values instead (Ray's
    `ray.util.as_completed` default), raising a failed task's error when
    that one comes.  `chunk_size` is accepted for Ray's signature: shoal
    reports every ref as it finishes, never waiting for a batch.
    Duplicates are yielded once.  Raises GetTimeoutError (a TimeoutError) if
    `timeout` seconds pass, counted from this call, before all are ready, and
    ClusterLostError if the cluster goes away.  No thread is started: the
    client's reader thread reports each ref as it arrives.
    """
    refs = list(dict.fromkeys(refs))
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"as_completed() expected ObjectRefs, got {type(r).__name__}")
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number or None, got {timeout!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError("`chunk_size` must be >= 1")
    if not refs:
        return iter(())
    deadline = None if timeout is None else time.monotonic() + timeout
    return _as_completed(runtime.current().client, refs, timeout, deadline, yield_obj_refs)


def _as_completed(client, refs: list, timeout, deadline, yield_refs: bool) -> Iterator:
    done: queue.SimpleQueue = queue.SimpleQueue()
    registrations = []
    try:
        for i, ref in enumerate(refs):
            registrations.append(client.when_ready(ref.id, lambda entry, i=i: done.put((i, entry))))
        for left in range(len(refs), 0, -1):
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                i, entry = done.get(timeout=wait)
            except queue.Empty:
                raise GetTimeoutError(f"{left} (of {len(refs)}) refs unfinished after "
                                      f"{timeout} s") from None
            if entry is None:
                raise ClusterLostError(client.lost or "lost the connection to the cluster")
            if yield_refs:
                yield refs[i]
            else:
                value = client.load(entry)
                if entry.error:
                    raise value
                yield value
    finally:
        for cb in registrations:     # stopped early: nothing stays registered
            client.forget(cb)
