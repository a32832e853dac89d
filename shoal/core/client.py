"""One process's connection to the scheduler: submissions, references, results.

Drivers and engines both hold one Client.  The user's thread sends directly
(sends are serialized by a lock; a burst of submissions is batched, see
`submit`); a reader thread receives results, which the scheduler pushes to
every holder of an object as soon as it is ready, so a `get` of an owned ref
costs no extra round trip.  A housekeeping thread flushes reference-count
changes that no other message carried, every few ms, and a batch of
submissions that nothing else sent within 1 ms.

Reference counting: the scheduler counts holdings per connection.  A ref made
here by submit or put is counted by the scheduler when it sees that message;
a ref deserialized here sends +1; the last local ref to go sends -1.  All of
these travel in send order, ahead of any message that follows them.
"""
from __future__ import annotations

import itertools
import logging
import os
import pickle
import socket
import sys
import _thread
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Callable, Optional

from ..exceptions import ClusterLostError, GetTimeoutError, ObjectLostError, ShoalError
from ..protocol import messages as m
from ..protocol.connection import Connection, encode_all
from ..protocol.framing import FrameTooLargeError
from ..protocol.messages import ObjectEntry
from ..protocol.serialization import INLINE_LIMIT, Serialized, SerializationError, deserialize
from ..store.shm import HostStore
from ..store.transfer import fetch_object
from ..engine.current import current_task  # noqa: F401 (core's modules take it from here)
from ..protocol.object_ids import is_item_id
from . import direct_calls, leases, reply_channel

log = logging.getLogger("shoal.client")
FLUSH_INTERVAL = 0.02
# Submissions are coalesced (see Client.submit): one that comes within
# BURST_GAP of the previous one joins a batch, which goes out when it holds
# SUBMIT_BATCH messages, when its oldest has waited SUBMIT_DELAY, or before
# anything else is sent or waited for.  A lone submission goes at once.
BURST_GAP = 0.0002
SUBMIT_DELAY = 0.001
SUBMIT_BATCH = 64
LOAD_ATTEMPTS = 6
FINISHED_CONTEXTS = 10_000   # output contexts kept after their task's results came


class _Signal:
    """A one-shot event on a bare lock, for the one thread that waits: a
    threading.Event builds a Condition and a lock per wait (3.1 us against
    0.4 for a get whose value is there; more when it blocks).  set() is
    called under the client's lock; wait() may be interrupted (Ctrl-C) as
    Event.wait may."""
    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        got = self._lock.acquire() if timeout is None else \
            self._lock.acquire(timeout=max(timeout, 0.0))     # (a lock's -1 is "forever")
        if got:
            self._lock.release()          # once set, it stays set
        return got


class _Waiter:
    __slots__ = ("missing", "needed", "stop_on_error", "event", "error")

    def __init__(self, missing: set, needed: int, stop_on_error: bool) -> None:
        self.missing = missing
        self.needed = needed          # how many more must become ready
        self.stop_on_error = stop_on_error
        self.event = _Signal()
        self.error = False


class ReadyCallback:
    """One registration of `Client.when_ready`: `fn(entry)` once the object is
    ready, or `fn(None)` if the cluster is lost first."""
    __slots__ = ("object_id", "fn")

    def __init__(self, object_id: str, fn: Callable) -> None:
        self.object_id = object_id
        self.fn = fn


class Client:
    def __init__(self, conn: Connection, welcome: m.Welcome, client_id: str, kind: str,
                 host_id: Optional[str] = None, store: Optional[HostStore] = None,
                 on_message: Optional[Callable] = None) -> None:
        self.conn = conn
        self.client_id = client_id
        self.kind = kind
        self.cluster_id = welcome.cluster_id
        self.session_dir = welcome.session_dir
        self.hosts = {h.host_id: h for h in welcome.hosts}
        self.host_id = host_id or _local_host(welcome.hosts)
        if store is None and self.host_id in self.hosts:
            h = self.hosts[self.host_id]
            store = HostStore(h.store_dir, h.spill_dir, h.store_limit)
        self.store = store                 # this host's object store, if we are on one
        self._on_message = on_message
        self._ids = itertools.count()
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._queued: list = []            # submissions not yet sent (see submit): messages,
                                           # or the chunks of those encoded at once
        self._queued_count = 0
        self._queued_relayed = False       # a queued submission that only the scheduler can run
        self._queued_since = 0.0
        self._last_submit = 0.0
        self._submit_wake = threading.Event()     # the housekeeper sends a batch when due
        self._refcounts: dict[str, int] = {}
        self._ref_ops: deque = deque()
        self._entries: dict[str, ObjectEntry] = {}
        self._waiters: dict[str, list] = {}
        self._callbacks: dict[str, list] = {}     # object id -> [ReadyCallback]
        self._arrivals: dict[str, ReadyCallback] = {}   # see on_arrival
        self.completer = None                     # shoal.core.futures.Completer, made on first use
        self._owned: set = set()
        self._subscribed: set = set()
        self.runtime_env_packages: dict = {}   # content hash -> ref (core/runtime_env.py)
        self._streams: dict = {}            # task id -> generator.{_Stream} being filled
        self._registered_functions: set = set()
        self._replies: dict[int, m.QueryReply] = {}
        self._reply_cond = threading.Condition(self._lock)
        self.actor_id: Optional[str] = None            # set for an engine hosting an actor
        self.actor_options: Optional[dict] = None      # ... and its options, once created
        # Where task output goes: output_context() is called at each submission
        # (the Jupyter layer returns the cell's parent header) and handed back
        # with each TaskOutput of that task to output_handler(msg, context).
        self.output_context: Optional[Callable[[], object]] = None
        self.output_handler: Callable[[m.TaskOutput, object], None] = print_output
        self._contexts: dict = {}
        self._finished_contexts: OrderedDict = OrderedDict()   # for nested work still printing
        self.event_handlers: list = []       # see shoal.core.events
        self.lost: Optional[str] = None
        self._closing = False
        self._channel: Optional[reply_channel.ReplyChannel] = None   # results straight from engines
        self._direct_ids: set = set()     # ids whose value came that way: a relayed copy is ignored
        self._straight: list = []         # (connection, ExecuteTask) queued with the submissions
        # An engine's: what must go out before anything it sends or submits now (the
        # reports of calls that ended before, engine/finishes.py)
        self.before_send: Optional[Callable[[], None]] = None
        self.direct_calls: Optional[direct_calls.DirectCalls] = None   # actor calls sent straight
        self.leases: Optional[leases.Leases] = None     # engines lent to us: tasks sent straight
        self._reader = threading.Thread(target=self._read_loop, name="shoal-client-reader", daemon=True)
        self._housekeeper_stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeep, name="shoal-client-flush", daemon=True)

    def start(self) -> None:
        """Start receiving (separate from __init__ so the owner of on_message
        can finish setting up first)."""
        self._reader.start()
        self._housekeeper.start()

    @classmethod
    def connect(cls, address: str, key: bytes, kind: str = "driver", host_id: Optional[str] = None,
                store: Optional[HostStore] = None, engine_id: Optional[str] = None,
                actor_id: Optional[str] = None, on_message: Optional[Callable] = None,
                timeout: float = 10.0, start: bool = True) -> "Client":
        conn = Connection.connect(address, key, timeout=timeout)
        client_id = uuid.uuid4().hex[:12]
        conn.send(m.ClientHello(client_id=client_id, kind=kind, pid=os.getpid(),
                                hostname=socket.gethostname(), host_id=host_id, engine_id=engine_id,
                                actor_id=actor_id))
        welcome = conn.recv()
        if not isinstance(welcome, m.Welcome):
            conn.close()
            raise ConnectionError(f"unexpected reply from the scheduler: {type(welcome).__name__}")
        client = cls(conn, welcome, client_id, kind, host_id, store, on_message)
        client._key = key
        if kind == "driver" and reply_channel.enabled():
            client._open_reply_channel()
        if start:
            client.start()
        client.actor_id = actor_id
        return client

    def _open_reply_channel(self) -> None:
        """Listen for results from engines on this machine (see reply_channel.py);
        without a writable session dir here, everything is relayed."""
        if not os.path.isdir(self.session_dir):
            return              # the scheduler runs on another machine
        try:
            channel = reply_channel.ReplyChannel(self.session_dir, self.client_id, self._key)
        except OSError as exc:
            log.info("results will be relayed by the scheduler: no reply channel (%s)", exc)
            return
        take_leases = leases.enabled()
        try:
            self.conn.send(m.ReplyChannel(address=channel.address, leases=take_leases))
        except BaseException:
            channel.close()
            raise
        self._channel = channel
        if direct_calls.enabled():
            self.direct_calls = direct_calls.DirectCalls(self, channel)
        if take_leases:
            self.leases = leases.Leases(self, channel)

    # ------------------------------------------------------------------ sending
    def send(self, *msgs) -> None:
        """Send now, after any queued submissions."""
        if self.lost:
            raise ClusterLostError(self.lost)
        if self.before_send is not None:
            self.before_send()
        with self._send_lock:
            chunks = self._encode(msgs)
            if self._straight:
                self._write_straight()
            self._write(self._take_queued() + chunks)

    def submit(self, *msgs, straight: Optional[tuple] = None,
               lease: Optional[leases.Lease] = None) -> None:
        """Send a submission (a task or actor call, and what must precede it).

        Sending wakes the scheduler, which costs about a third of a `.remote()`
        on a small machine, so a burst of submissions goes out in batches: a
        submission within BURST_GAP of the previous one is queued, and the batch
        is sent when it is full, when its oldest has waited SUBMIT_DELAY (the
        housekeeper's timer, if no submission comes to do it), or before any
        other message and any wait for results (`flush`).  Order is kept: every
        message goes through the one queue.  A lone call is sent at once.

        `straight` is (connection, ExecuteTask): an actor call that goes to its
        engine too (direct_calls.py), batched alike, and written first.  Its
        submission is the scheduler's record, not what runs it, so it always
        waits for its batch, even when a wait flushes: a sync call then wakes
        only the engine, and its record goes with the next ones.  A task sent
        to a leased engine (`lease`, leases.py) goes the same way, unless the
        lease was asked back meanwhile: then only to the scheduler."""
        if self.lost:
            raise ClusterLostError(self.lost)
        if self.before_send is not None:
            self.before_send()
        now = time.perf_counter()
        with self._send_lock:
            if lease is not None and not lease.active:
                straight = None
                msgs = (*msgs[:-1], m.replace(msgs[-1], direct_to=None))
                self.leases.unsent(lease, msgs[-1].task_id)
            burst = now - self._last_submit < BURST_GAP
            if (self._queued or burst or straight is not None) and _sendable_later(msgs):
                # Queued as messages, encoded with the batch: one frame for many.
                ops = self._drain_ref_ops()
                items = [m.RefUpdates(ops=ops), *msgs] if ops else list(msgs)
            else:
                items = [self._encode(msgs)]        # encoded now: a failure is the caller's
            self._last_submit = now
            if straight is not None:
                self._straight.append(straight)
            if not self._queued:
                if not burst:
                    if self._straight:
                        self._write_straight()
                    if straight is None:
                        self._write(_chunks(items))
                        return
                self._queued_since = now
                self._submit_wake.set()
            self._queued.extend(items)
            self._queued_count += len(msgs)
            self._queued_relayed = self._queued_relayed or straight is None
            if self._queued_count >= SUBMIT_BATCH or now - self._queued_since >= SUBMIT_DELAY:
                self._write_queued()

    def deactivate(self, lease: leases.Lease) -> None:
        """A lease asked back: a submission not yet made goes to the scheduler only."""
        with self._send_lock:
            lease.active = False

    def flush(self) -> None:
        """Send the queued submissions that a wait may depend on now (before
        waiting on anything): straight calls to their engines, and the batch
        for the scheduler if it holds any other submission."""
        if (self._queued_relayed or self._straight) and not self.lost:
            with self._send_lock:
                try:
                    if self._queued_relayed:
                        self._write_queued()          # straight calls first, then the batch
                    else:
                        self._write_straight()
                except ClusterLostError:
                    pass            # the waiter hears of it from the reader thread

    def _encode(self, msgs) -> list:
        """Chunks of any pending ref-count changes, then of msgs.  Caller holds _send_lock."""
        ops = self._drain_ref_ops()
        try:
            return encode_all([m.RefUpdates(ops=ops), *msgs] if ops else msgs)
        except FrameTooLargeError:       # nothing was sent: undo what assumed it would be
            self._ref_ops.extendleft(reversed(ops))
            self._registered_functions.difference_update(
                msg.func_id for msg in msgs if type(msg) is m.RegisterFunction)
            raise

    def _write_queued(self) -> None:
        if self._straight:
            self._write_straight()
        if self._queued:
            self._write(self._take_queued())

    def _take_queued(self) -> list:
        """The queued submissions' chunks; the queue is then empty.  Caller holds
        _send_lock.  (Encoded first: a failure keeps the queue.)"""
        if not self._queued:
            return []
        chunks = _chunks(self._queued)
        self._queued, self._queued_count, self._queued_relayed = [], 0, False
        return chunks

    def _write_straight(self) -> None:
        """Send the queued straight actor calls and leased tasks, each
        connection's in one write.  A write that fails is only logged: the
        connection broke because its engine is gone, and the scheduler (which
        has their submissions) retries or fails them as it does what a dead
        engine ran; leased tasks whose records still wait here go to the
        scheduler to place instead.  Caller holds _send_lock."""
        calls, self._straight = self._straight, []
        by_conn: dict = {}
        for conn, msg in calls:
            by_conn.setdefault(conn, []).append(msg)
        for conn, msgs in by_conn.items():
            try:
                conn.send_many(msgs)
            except OSError as exc:
                log.debug("an engine is gone (%s): the scheduler has what went to it", exc)
                unsent = {msg.task_id for msg in msgs if msg.method is None}
                if unsent:
                    self._queued = [m.replace(x, direct_to=None) if type(x) is m.SubmitTask
                                    and x.task_id in unsent else x for x in self._queued]

    def _write(self, chunks: list) -> None:
        try:
            self.conn.send_chunks(chunks)
        except OSError as exc:
            raise ClusterLostError(f"lost the connection to the cluster: {exc}") from None

    def _drain_ref_ops(self) -> list:
        ops = []
        pop = self._ref_ops.popleft
        while self._ref_ops:
            ops.append(pop())
        return ops

    def flush_refs(self) -> None:
        if (self._ref_ops or self._queued) and not self.lost:
            try:
                self.send()
            except ClusterLostError:
                pass

    def _housekeep(self) -> None:
        while not self._housekeeper_stop.is_set():
            if self._submit_wake.wait(FLUSH_INTERVAL):
                self._submit_wake.clear()
                self._flush_when_due()
            else:
                self.flush_refs()

    def _flush_when_due(self) -> None:
        """Send the queued batch once its oldest submission has waited SUBMIT_DELAY."""
        while not self.lost and not self._housekeeper_stop.is_set():
            with self._send_lock:
                if not self._queued:
                    return
                due = self._queued_since + SUBMIT_DELAY - time.perf_counter()
                if due <= 0:
                    try:
                        self._write_queued()
                    except ClusterLostError:
                        pass
                    except Exception:         # never expected (_sendable_later): say so, live on
                        log.exception("could not send the queued submissions")
                    return
            self._housekeeper_stop.wait(due)

    @property
    def current_task_id(self) -> Optional[str]:
        """The task this thread or coroutine runs for (engines only)."""
        msg = current_task.get()
        return msg.task_id if msg is not None else None

    # ------------------------------------------------------------------ ids and refs
    def new_id(self, prefix: str = "") -> str:
        return f"{self.client_id}.{prefix}{next(self._ids)}"

    def own(self, object_id: str) -> None:
        """A ref made here by submit or put: the scheduler counts it already."""
        with self._lock:
            self._refcounts[object_id] = self._refcounts.get(object_id, 0) + 1
            self._owned.add(object_id)

    def adopt(self, object_id: str) -> None:
        """A ref deserialized here: count it, and tell the scheduler if it is new."""
        with self._lock:
            n = self._refcounts.get(object_id, 0)
            self._refcounts[object_id] = n + 1
            if n == 0:
                self._ref_ops.append((object_id, 1))

    def release(self, object_id: str) -> None:
        with self._lock:
            n = self._refcounts.get(object_id, 0) - 1
            if n > 0:
                self._refcounts[object_id] = n
                return
            self._refcounts.pop(object_id, None)
            self._entries.pop(object_id, None)
            if self._arrivals:
                self._arrivals.pop(object_id, None)
            self._direct_ids.discard(object_id)
            self._owned.discard(object_id)
            self._subscribed.discard(object_id)
            self._ref_ops.append((object_id, -1))

    def register_stream(self, task_id: str, stream) -> None:
        """Route the items of a streaming generator task we submitted to `stream`."""
        with self._lock:
            self._streams[task_id] = stream

    def unregister_stream(self, task_id: str) -> None:
        """Its generator is gone: items still to come are released on arrival."""
        with self._lock:
            self._streams.pop(task_id, None)

    def holds(self, object_id: str) -> bool:
        return object_id in self._refcounts

    def ready(self, object_id: str) -> bool:
        return object_id in self._entries

    # ------------------------------------------------------------------ results
    def seed(self, entries) -> None:
        """Values that arrived with a task (its resolved arguments)."""
        with self._lock:
            for e in entries:
                self._entries[e.object_id] = e

    def unseed(self, ids) -> None:
        """Forget seeded values that no ref here holds (the task is over)."""
        with self._lock:
            for i in ids:
                if i not in self._refcounts:
                    self._entries.pop(i, None)

    def wait_entries(self, ids: list, needed: int, timeout: Optional[float],
                     stop_on_error: bool) -> tuple[dict, bool]:
        """Block until `needed` of `ids` are ready (or one is an error, if
        stop_on_error), or `timeout` seconds pass.  Returns the ready entries
        by id, and whether the wait timed out."""
        with self._lock:
            ready = {i: self._entries[i] for i in ids if i in self._entries}
            if len(ready) >= needed or (stop_on_error and any(e.error for e in ready.values())):
                return ready, False
            if self.lost:
                raise ClusterLostError(self.lost)
            missing = {i for i in ids if i not in ready}
            waiter = _Waiter(missing, needed - len(ready), stop_on_error)
            for i in missing:
                self._waiters.setdefault(i, []).append(waiter)
            subscribe = [i for i in missing if i not in self._owned and i not in self._subscribed]
            self._subscribed.update(subscribe)
        try:
            if subscribe:
                self.send(m.Subscribe(object_ids=subscribe))
            with self._blocked():
                finished = waiter.event.wait(timeout)
        finally:
            with self._lock:
                for i in waiter.missing:
                    lst = self._waiters.get(i)
                    if lst is not None:
                        try:
                            lst.remove(waiter)
                        except ValueError:
                            pass
                        if not lst:
                            del self._waiters[i]
        if self.lost:
            raise ClusterLostError(self.lost)
        with self._lock:
            return {i: self._entries[i] for i in ids if i in self._entries}, not finished

    def when_ready(self, object_id: str, fn: Callable) -> Optional[ReadyCallback]:
        """Call `fn(entry)` once the object is ready, or `fn(None)` if the
        cluster is lost: at once in this thread if that is already so (and
        return None), else later from the reader thread, so `fn` must be quick
        and never block.  The caller keeps a ref to the object meanwhile (an
        object nobody here holds is never delivered).  `forget` undoes it."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None and not self.lost:
                cb = ReadyCallback(object_id, fn)
                self._callbacks.setdefault(object_id, []).append(cb)
                subscribe = object_id not in self._owned and object_id not in self._subscribed
                if subscribe:
                    self._subscribed.add(object_id)
            else:
                cb = None
        if cb is None:
            fn(entry)
            return None
        self.flush()            # it may wait on a submission still queued here
        if subscribe:
            try:
                self.send(m.Subscribe(object_ids=[object_id]))
            except ClusterLostError:
                pass                # _mark_lost has called fn(None)
        return cb

    def on_arrival(self, object_id: str, fn: Callable[[], None]) -> None:
        """Call fn() on the reader thread when an entry for `object_id`
        arrives while a ref here holds it (at once if it has; never if the
        last ref goes first).  Unlike when_ready it sends nothing and flushes
        nothing: it costs one dict entry."""
        with self._lock:
            if object_id not in self._entries:
                self._arrivals[object_id] = ReadyCallback(object_id, lambda _entry: fn())
                return
        fn()

    def forget(self, cb: Optional[ReadyCallback]) -> None:
        """Drop a `when_ready` registration that has not fired (no-op otherwise)."""
        if cb is None:
            return
        with self._lock:
            lst = self._callbacks.get(cb.object_id)
            if lst is not None:
                try:
                    lst.remove(cb)
                except ValueError:
                    pass
                if not lst:
                    del self._callbacks[cb.object_id]

    def _fire(self, fired: list) -> None:
        for cb, entry in fired:
            try:
                cb.fn(entry)
            except Exception:       # a callback's bug must not leave this process deaf
                log.exception("a ready callback failed")

    def _blocked(self):
        return _BlockedSection(self)

    def load(self, entry: ObjectEntry):
        """The value of a ready entry (an exception instance for errors).

        An object on another host is copied into this host's store first
        (engine to engine, never through the scheduler).  If the copy it names
        is gone (its host died), ask the scheduler again: it may have rebuilt
        the object elsewhere, or say it is lost.
        """
        try:
            return self._load(entry)
        except (SerializationError, ShoalError):
            raise
        except Exception as exc:          # the bytes are there but will not become a value
            raise SerializationError(
                f"the value of object {entry.object_id} could not be rebuilt in this process: "
                f"{type(exc).__name__}: {exc}") from exc

    def _load(self, entry: ObjectEntry):
        for attempt in range(LOAD_ATTEMPTS):
            if entry.inline is not None:
                return deserialize(entry.inline)
            try:
                return self._load_stored(entry)
            except (OSError, ConnectionError) as exc:
                if attempt == LOAD_ATTEMPTS - 1:
                    raise ObjectLostError(
                        f"object {entry.object_id} could not be read from host "
                        f"{entry.host_id}: {exc}") from None
                entry = self._current_entry(entry.object_id, delay=0.05 * 2 ** attempt)
                if entry.error:
                    raise deserialize(entry.inline)     # e.g. lost for good

    def _load_stored(self, entry: ObjectEntry):
        if self.store is not None:
            try:
                return self.store.read(entry.object_id)       # ours, or a copy made here
            except FileNotFoundError:
                if entry.host_id == self.host_id:
                    raise
        host = self.hosts.get(entry.host_id)
        if host is None:
            self.hosts = {h.host_id: h for h in self.query("hosts")}
            host = self.hosts.get(entry.host_id)
            if host is None:
                raise ConnectionError(f"host {entry.host_id} has left the cluster")
        data = fetch_object(host.object_address, self._key, entry.object_id, self.store)
        if data is not None:                 # no store here: the bytes came to us
            return deserialize(data)
        self.send(m.ObjectLocated(object_id=entry.object_id, host_id=self.host_id))
        return self.store.read(entry.object_id)

    def _current_entry(self, object_id: str, delay: float) -> ObjectEntry:
        """Drop a stale entry and wait for the scheduler's current one."""
        time.sleep(delay)       # the scheduler may not have noticed the loss yet
        with self._lock:
            self._entries.pop(object_id, None)
            self._direct_ids.discard(object_id)
            self._subscribed.discard(object_id)
        self.send(m.Subscribe(object_ids=[object_id]))
        entries, timed_out = self.wait_entries([object_id], 1, None, stop_on_error=False)
        return entries[object_id]

    def store_value(self, object_id: str, value: Serialized) -> ObjectEntry:
        """An entry for a serialized value: inline if small, else in the host store."""
        if value.size < INLINE_LIMIT or self.store is None:
            return ObjectEntry(object_id, inline=value.packed(), size=value.size,
                               type_name=value.type_name)
        spilled = self.store.write(object_id, value)
        return ObjectEntry(object_id, host_id=self.host_id, size=value.size,
                           type_name=value.type_name, spilled=spilled)

    def register_function(self, func_id: str, name: str, blob: bytes,
                          retry_exceptions: bytes | None = None) -> list:
        """Messages to send before the first use of a function (none if sent already)."""
        if func_id in self._registered_functions:
            return []
        self._registered_functions.add(func_id)
        return [m.RegisterFunction(func_id=func_id, name=name, blob=pickle.PickleBuffer(blob),
                                   retry_exceptions=retry_exceptions)]

    def query(self, kind: str, timeout: float = 10.0, **args):
        """Ask the scheduler for state (see messages.Query); raises what it reports."""
        request_id = next(self._ids)
        self.send(m.Query(request_id=request_id, kind=kind, args=args))
        with self._reply_cond:
            ok = self._reply_cond.wait_for(lambda: request_id in self._replies or self.lost, timeout)
            if self.lost:
                raise ClusterLostError(self.lost)
            if not ok:
                raise GetTimeoutError(f"the scheduler did not answer a {kind!r} query")
            reply = self._replies.pop(request_id)
        if reply.error is not None:
            raise ValueError(reply.error)
        return reply.value

    def status(self, timeout: float = 10.0) -> dict:
        return self.query("status", timeout)

    # ------------------------------------------------------------------ receiving
    def _read_loop(self) -> None:
        try:
            if self._channel is not None:
                self._channel.serve(self.conn, self._handle, self._on_direct)
            while True:
                self._handle(self.conn.recv())
        except (OSError, ConnectionError, ValueError) as exc:
            reason = "the client was shut down" if self._closing else \
                f"lost the connection to the cluster's scheduler ({exc})"
            self._mark_lost(reason)

    def _handle(self, msg) -> None:
        try:
            self._dispatch(msg)
        except Exception:       # a handler's bug must not leave this process deaf
            log.exception("error handling %s", type(msg).__name__)

    def _on_direct(self, msg) -> None:
        """A message on the reply channel, from an engine on this machine:
        ProtocolError (its connection is closed) for anything unexpected."""
        reply_channel.check_direct(msg)
        if type(msg) is m.ObjectsReady:
            self._on_ready(msg.entries, direct=True)
        else:
            self._route_output(msg)

    def _dispatch(self, msg) -> None:
        if type(msg) is m.ObjectsReady:
            self._on_ready(msg.entries)     # values of a batch come apart (codec.unshared)
        elif type(msg) is m.EngineLease:     # (only to a driver that said it takes them)
            self.leases.granted(msg.engine_id)
        elif type(msg) is m.RevokeLease:
            self.leases.revoked(msg.engine_id)
        elif type(msg) is m.TaskOutput:
            self._route_output(msg)
        elif type(msg) is m.QueryReply:
            with self._reply_cond:
                self._replies[msg.request_id] = msg
                self._reply_cond.notify_all()
        elif type(msg) is m.Events:
            for handler in list(self.event_handlers):
                try:
                    handler(msg)
                except Exception:
                    log.exception("an event handler failed")
        elif type(msg) is m.Notice:
            print(f"shoal: {msg.text}", file=sys.stderr)
        elif self._on_message is not None:
            self._on_message(msg)
        else:
            log.warning("unexpected message %s", type(msg).__name__)

    def remember_context(self, task_id: str) -> None:
        """Record where the output of a task submitted now should go."""
        if self.output_context is not None:
            if len(self._contexts) > 100_000:          # tasks with no results never clean up
                self._contexts.pop(next(iter(self._contexts)))
            self._contexts[task_id] = self.output_context()

    def pending_contexts(self) -> list:
        """(task id, output context) of the tasks submitted here whose results
        have not come yet."""
        return list(self._contexts.items())

    def context_of(self, task_id: str):
        """The output context of a task submitted here (None if unknown)."""
        context = self._contexts.get(task_id)
        return context if context is not None else self._finished_contexts.get(task_id)

    def _route_output(self, msg: m.TaskOutput) -> None:
        try:
            self.output_handler(msg, self.context_of(msg.origin or msg.task_id))
        except Exception:
            log.exception("the task output handler failed")

    def _on_ready(self, entries: list, direct: bool = False) -> None:
        """Values pushed by the scheduler, or sent `direct` by their engine.
        The first entry for an id wins: an engine that died between sending
        here and telling the scheduler has its task re-run, whose value (or
        crash) the scheduler pushes too."""
        if self.leases is not None and self.leases.waiting:
            self.leases.arrived(entries)
        if self._direct_ids or direct:
            entries = self._first_entries(entries, direct)
        if self._contexts:
            for e in entries:      # a task's output comes before its results: done with it
                if is_item_id(e.object_id):
                    continue
                task_id = e.object_id.rpartition("/")[0]
                context = self._contexts.pop(task_id, None)
                if context is not None:     # ... but tasks it started may print on
                    self._finished_contexts[task_id] = context
                    if len(self._finished_contexts) > FINISHED_CONTEXTS:
                        self._finished_contexts.popitem(last=False)
        fired = []
        with self._lock:
            for e in entries:
                oid = e.object_id
                stream = self._streams.get(oid.rpartition("/")[0]) if self._streams else None
                if is_item_id(oid) and oid not in self._refcounts:
                    # A generator item: the scheduler counts it as ours already.
                    if stream is None:
                        self._ref_ops.append((oid, -1))     # its generator is gone
                        continue
                    self._refcounts[oid] = 0        # the ref deliver() makes counts 1
                    self._owned.add(oid)
                if stream is not None:
                    if is_item_id(oid):
                        self._refcounts[oid] += 1
                    self._entries[oid] = e
                    stream.deliver(self, oid, e)
                if oid not in self._refcounts and oid not in self._waiters:
                    continue        # released meanwhile: nobody here wants it
                self._entries[oid] = e
                if self._arrivals and oid in self._arrivals:
                    fired.append((self._arrivals.pop(oid), e))
                if self._callbacks:
                    fired.extend((cb, e) for cb in self._callbacks.pop(oid, ()))
                for waiter in self._waiters.pop(oid, ()):
                    waiter.missing.discard(oid)
                    waiter.needed -= 1
                    if e.error and waiter.stop_on_error:
                        waiter.error = True
                        waiter.event.set()
                    elif waiter.needed <= 0:
                        waiter.event.set()
        if fired:
            self._fire(fired)

    def came_direct(self, object_id: str) -> bool:
        """Whether the value of `object_id` here came straight from its engine:
        its task has finished, though the scheduler may not have heard yet."""
        return object_id in self._direct_ids

    def _first_entries(self, entries: list, direct: bool) -> list:
        with self._lock:
            if direct:
                entries = [e for e in entries if e.object_id not in self._entries
                           and (e.object_id in self._refcounts or e.object_id in self._waiters)]
                self._direct_ids.update(e.object_id for e in entries)
                return entries
            return [e for e in entries if e.object_id not in self._direct_ids]

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            self.lost = reason
            for waiters in self._waiters.values():
                for w in waiters:
                    w.event.set()
            for stream in self._streams.values():
                stream.wake()
            self._reply_cond.notify_all()
            callbacks, self._callbacks = self._callbacks, {}
        self._fire([(cb, None) for cbs in callbacks.values() for cb in cbs])
        if self._on_message is not None:
            self._on_message(None)

    def close(self) -> None:
        """Close the connection and join the threads.  Idempotent."""
        if self._closing:
            return
        self._closing = True
        self.flush_refs()
        self._housekeeper_stop.set()
        self._submit_wake.set()
        if self._channel is not None:
            self._channel.stop()            # the reader serves it: make it return
        self.conn.close()
        for t in (self._reader, self._housekeeper):
            if t is not threading.current_thread() and t.is_alive():
                t.join(timeout=5)
        if self._channel is not None:
            self._channel.close()
        if not self.lost:
            self.lost = "the client was shut down"
        if self.completer is not None:
            self.completer.close()


class _BlockedSection:
    """While an engine's task waits for objects, its CPU is lent back."""
    __slots__ = ("client", "task_id")

    def __init__(self, client: Client) -> None:
        self.client = client
        # Only pool engines hold CPU while running; an actor's calls hold none.
        self.task_id = client.current_task_id if client.actor_id is None else None

    def __enter__(self):
        self.client.flush()              # what we wait for may still be queued here
        if self.task_id:
            self.client.send(m.EngineBlocked(task_id=self.task_id, blocked=True))

    def __exit__(self, *exc):
        if self.task_id and not self.client.lost:
            self.client.send(m.EngineBlocked(task_id=self.task_id, blocked=False))


def _local_host(hosts: list) -> Optional[str]:
    """The host whose store this process can read: same machine, store present."""
    hostname = socket.gethostname()
    for h in hosts:
        if h.hostname == hostname and os.path.isdir(h.store_dir):
            return h.host_id
    return None


def print_output(msg: m.TaskOutput, context=None) -> None:
    """The default output handler: print with Ray's "(name pid=N)" prefix."""
    stream = sys.stderr if msg.stream == "stderr" else sys.stdout
    prefix = f"({msg.name} pid={msg.pid}) "
    if msg.stream == "display":
        bundle = (msg.data or {}).get("data", {})
        text = bundle.get("text/plain", f"<display of {', '.join(bundle) or 'nothing'}>")
    else:
        text = msg.text
    lines = text.splitlines(keepends=True)
    stream.write("".join(prefix + line for line in lines) + ("" if text.endswith("\n") else "\n"))
    stream.flush()


def _sendable_later(msgs) -> bool:
    """Submissions that may wait in the queue as messages and be encoded with
    the batch: nothing in them can fail to encode (small arguments inside the
    header; options, placement and runtime_env are plain data, validated when
    made; no actor creation with its options).  Others are encoded at once, so
    a failure is the caller's."""
    return all(type(msg) is m.SubmitTask and type(msg.args) is bytes
               and msg.method != "__init__" for msg in msgs)


def _chunks(items: list) -> list:
    """The chunks of queued submissions, in order: each run of messages as few
    frames (codec.encode_many), the ones encoded at once as they are."""
    out: list = []
    run: list = []
    for item in items:
        if type(item) is list:
            if run:
                out.extend(encode_all(run))
                run = []
            out.extend(item)
        else:
            run.append(item)
    if run:
        out.extend(encode_all(run))
    return out
