"""Generator tasks: the refs a remote generator yields, as Ray hands them out.

Streaming (Ray's default for a function or method that `yield`s):
`.remote()` returns an ObjectRefGenerator at once; each `next()` gives the ref
of the next item as soon as the engine has produced it.  The engine sends
every item to the scheduler, which makes object "<task id>/g<i>", counts it
as held by the caller and pushes it here; the task's one ordinary return
object ("<task id>/0", the end marker) holds the number of items, or the
task's error.  If the generator raises, the ref after the last good item
holds that error (get raises it), then iteration stops: errors surface at
the failing item, as in Ray.

`num_returns="dynamic"`: `.remote()` returns one ref whose value, once the
task has finished, is a DynamicObjectRefGenerator of the items' refs (an
error part-way is stored as one more, final ref).
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Optional

from ..exceptions import ClusterLostError
from .object_ref import ObjectRef

GENERATOR_MODES = ("streaming", "dynamic")


class _Stream:
    """What the client's reader thread fills for one streaming task: the
    refs of the items so far, and the end marker's entry once it comes."""
    __slots__ = ("end_id", "items", "end", "cond", "watchers")

    def __init__(self, end_id: str) -> None:
        self.end_id = end_id
        self.items: deque = deque()
        self.end = None
        self.cond = threading.Condition(threading.Lock())
        self.watchers: set = set()      # threading.Events of wait() calls over this stream

    def deliver(self, client, object_id: str, entry) -> None:
        """Called by the client, under its lock, for each entry of this task."""
        with self.cond:
            if object_id == self.end_id:
                self.end = entry
            else:
                self.items.append(ObjectRef(object_id, client))   # the client counted it
            self.cond.notify_all()
            for event in self.watchers:
                event.set()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()
            for event in self.watchers:
                event.set()


class ObjectRefGenerator:
    """The refs a streaming generator task yields, in order, as they come.

    Iterate it (`for ref in gen`, or `async for`), pass it to `shoal.cancel`
    to stop the task; `completed()` is a ref that is ready when the task has
    finished (its get raises the task's error, if any).
    """

    def __init__(self, client, task_id: str, end_ref: ObjectRef) -> None:
        self._client = client
        self._task_id = task_id
        self._end_ref = end_ref
        self._stream = _Stream(end_ref.id)
        self._error_given = False
        client.register_stream(task_id, self._stream)

    def __iter__(self) -> "ObjectRefGenerator":
        return self

    def __next__(self) -> ObjectRef:
        ref = self._next(None)
        if ref is None:
            raise StopIteration
        return ref

    def _next(self, timeout: Optional[float]) -> Optional[ObjectRef]:
        stream = self._stream
        with stream.cond:
            if not stream.items and stream.end is None:
                with self._client._blocked():       # inside a task: lend the CPU back
                    stream.cond.wait_for(
                        lambda: stream.items or stream.end is not None or self._client.lost,
                        timeout)
            if stream.items:
                return stream.items.popleft()
            if stream.end is None:
                if self._client.lost:
                    raise ClusterLostError(self._client.lost)
                raise TimeoutError(f"no item of generator task {self._task_id} within {timeout} s")
            if stream.end.error and not self._error_given:
                self._error_given = True
                return self._end_ref                # its get raises the task's error
            return None

    def __aiter__(self) -> "ObjectRefGenerator":
        return self

    async def __anext__(self) -> ObjectRef:
        ref = await asyncio.get_running_loop().run_in_executor(None, self._next, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _has_next(self) -> bool:
        """Whether next() would return (or stop) without waiting."""
        stream = self._stream
        with stream.cond:
            return bool(stream.items) or stream.end is not None

    def _watch(self, event: threading.Event, on: bool) -> None:
        """Have `event` set whenever an item or the end arrives (or stop)."""
        with self._stream.cond:
            (self._stream.watchers.add if on else self._stream.watchers.discard)(event)

    def completed(self) -> ObjectRef:
        """A ref ready once the task has finished (its value: the item count)."""
        return self._end_ref

    def is_finished(self) -> bool:
        """True once the task has ended and every item has been taken."""
        stream = self._stream
        with stream.cond:
            return stream.end is not None and not stream.items and (
                not stream.end.error or self._error_given)

    def task_id(self) -> str:
        return self._task_id

    def __reduce__(self):
        raise TypeError("an ObjectRefGenerator cannot be passed to another task or actor "
                        "(as in Ray); pass the refs it yields instead")

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.unregister_stream(self._task_id)
            except Exception:       # interpreter teardown
                pass

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id})"


class DynamicObjectRefGenerator:
    """The value of a `num_returns="dynamic"` task: the refs of what it yielded."""

    def __init__(self, refs: list) -> None:
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
