"""Futures and `await` for refs, completed from the client's reader thread.

`ref.future()` and `await ref` register a `Client.when_ready` callback; no
thread is started per ref.  The reader only hands the ready entry on:

- to asyncio, with `loop.call_soon_threadsafe`; the value is rebuilt in the
  loop (an object on another host is fetched in the loop's default executor);
- to a `concurrent.futures.Future`, through the client's one `Completer`
  thread, which rebuilds the value and sets the result.  Done-callbacks run
  there, as they would in a ProcessPoolExecutor's result thread, and a
  callback that blocks delays the other futures but never the reader.

Cancelling a future or an awaiting coroutine drops its registration and the
ref it held; the task itself is left alone (use `shoal.cancel` for that).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Optional

from ..exceptions import ClusterLostError
from .object_ref import ObjectRef

log = logging.getLogger("shoal.futures")


class Completer:
    """The one thread of a client that sets `concurrent.futures` results.
    Owned by the client, which closes it; started on first use."""

    def __init__(self, client) -> None:
        self._client = client
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="shoal-futures", daemon=True)
        self._thread.start()

    def complete(self, fut: concurrent.futures.Future, entry) -> None:
        """Set `fut` from `entry` (None: the cluster is lost), in the completer thread."""
        self._queue.put((fut, entry))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, entry = item
            try:
                _settle(fut, self._client, entry)
            except Exception:
                log.exception("completing a future failed")

    def close(self) -> None:
        """Finish what was queued, then stop.  Idempotent; the client calls it."""
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _settle(fut, client, entry) -> None:
    """Give `fut` the value, error or cluster loss that `entry` stands for."""
    if fut.cancelled():
        return
    if entry is None:
        fut.set_exception(ClusterLostError(client.lost or "lost the connection to the cluster"))
        return
    try:
        value = client.load(entry)
    except BaseException as exc:         # the value would not rebuild here
        fut.set_exception(exc)
        return
    if entry.error:
        fut.set_exception(value)
    else:
        fut.set_result(value)


def _completer(client) -> Optional[Completer]:
    """The client's completer, started on first use; None once the client is
    lost or closed (close() would not join a thread started after it)."""
    with client._lock:
        if client.completer is None and not client.lost:
            client.completer = Completer(client)
        return client.completer


def ref_future(ref: ObjectRef) -> concurrent.futures.Future:
    """A `concurrent.futures.Future` for the ref's value (or its task's error).
    The future holds the ref until it is done or cancelled."""
    client = _client_of(ref)
    fut: concurrent.futures.Future = concurrent.futures.Future()
    if client.lost:                      # closed or lost: no completer thread to start
        fut.set_exception(ClusterLostError(client.lost))
        return fut
    completer = _completer(client)
    holder = [ref]                       # keeps the object wanted until delivered

    def ready(entry) -> None:
        holder.clear()
        if completer is None:            # lost meanwhile: nothing to rebuild
            _settle(fut, client, None)
        else:
            completer.complete(fut, entry)

    cb = client.when_ready(ref.id, ready)
    if cb is not None:
        def on_done(f: concurrent.futures.Future) -> None:
            if f.cancelled():
                client.forget(cb)
                holder.clear()
        fut.add_done_callback(on_done)
    return fut


async def await_ref(ref: ObjectRef):
    """The value of the ref, awaited on the running loop (`await ref`)."""
    client = _client_of(ref)
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready(entry) -> None:          # reader thread, or here if already ready
        try:
            loop.call_soon_threadsafe(_deliver, fut, entry)
        except RuntimeError:           # the loop is closed: nobody awaits any more
            pass

    cb = client.when_ready(ref.id, ready)
    try:
        entry = await fut
    finally:
        client.forget(cb)              # cancelled: drop the registration
    if entry is None:
        raise ClusterLostError(client.lost or "lost the connection to the cluster")
    if entry.inline is None and entry.host_id != client.host_id:
        value = await loop.run_in_executor(None, client.load, entry)   # a network fetch
    else:
        value = client.load(entry)
    if entry.error:
        raise value
    return value


def _deliver(fut: asyncio.Future, entry) -> None:
    if not fut.done():
        fut.set_result(entry)


def _client_of(ref: ObjectRef):
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"expected an ObjectRef, got {type(ref).__name__}")
    client = ref._client
    if client is None:
        from . import runtime
        client = runtime.current().client
    return client
