"""The engine process: runs tasks, or hosts one actor.

Tasks (and calls of a plain actor) run one at a time on the main thread.  An
actor with max_concurrency > 1 runs calls on a thread pool; an actor with
`async def` methods runs them on an event loop thread, up to max_concurrency
at once.  Inside a task the whole public API works: the process's program
(shoal.core.worker) makes a core Client the process's runtime and hands the
engine the few services it needs of it (shoal.engine.services).

What a call prints is captured per call (a context variable says which call
is running, so threads and coroutines do not mix up their output) and sent,
tagged with the task id, to the task's owner.  An InterruptTask raises
KeyboardInterrupt in a running task (a real SIGINT to the main thread, so
blocking calls wake), cancels a running coroutine, or drops a call that has
not started; a running call of a plain or threaded actor is left to finish
(Ray's rule), unless its class sets `__shoal_interruptible__` (the magics'
`--on` namespaces, which a kernel interrupt must stop).  sys.exit() in a task exits the engine: a crash, as in Ray.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import io
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Callable, Optional

import cloudpickle

from .. import exceptions
from ..protocol import messages as m
from ..protocol.framing import ProtocolError
from ..protocol.object_ids import item_id
from ..protocol.serialization import SerializationError, deserialize, serialize
from ..session import read_config_from_stdin, setup_process_logging, wait_until_closed
from . import runtime_env
from . import display
from .current import current_task
from .finishes import Finishes
from .replies import ReplyConnections
from .services import Services

log = logging.getLogger("shoal.engine")
_SHOAL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_FLUSH = 0.05
DEFAULT_ASYNC_CONCURRENCY = 1000


class TaskOutputStream(io.TextIOBase):
    """sys.stdout/sys.stderr of an engine: text written during a call is
    buffered per call and sent to the call's owner; other text goes to the log."""

    def __init__(self, engine: "Engine", stream: str, fallback) -> None:
        self.engine = engine
        self.stream = stream
        self.fallback = fallback
        self._bufs: dict = {}          # task id -> (msg, [text])
        self._lock = threading.Lock()
        self._sending = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        msg = current_task.get()
        if msg is None:
            return self.fallback.write(text)
        if text:
            with self._lock:
                self._bufs.setdefault(msg.task_id, (msg, []))[1].append(text)
            self.engine.output_pending.set()
        return len(text)

    def flush(self, task_id: Optional[str] = None) -> None:
        # Taking and sending are one step under _sending: a call's flush at its end
        # waits for text the background flusher has taken but not sent yet, so a
        # call's output always goes out before its result.
        with self._sending:
            if task_id is not None and task_id not in self._bufs:
                return                     # the common case: the call printed nothing
            with self._lock:
                if task_id is None:
                    taken, self._bufs = list(self._bufs.values()), {}
                else:
                    taken = [self._bufs.pop(task_id)] if task_id in self._bufs else []
            for msg, parts in taken:
                self.engine.send_output(m.TaskOutput(task_id=msg.task_id, name=msg.name,
                                                     pid=os.getpid(), stream=self.stream,
                                                     text="".join(parts)))
        self.fallback.flush()


class RetryPolicy:
    """A function's `retry_exceptions`, as received; unpickled at its first failure."""
    __slots__ = ("_blob", "_policy")

    def __init__(self, blob) -> None:
        self._blob = blob
        self._policy = None

    def covers(self, exc: BaseException) -> bool:
        if self._blob is not None:
            self._policy, self._blob = cloudpickle.loads(self._blob), None
        if self._policy is True:
            return isinstance(exc, Exception)
        return bool(self._policy) and isinstance(exc, tuple(self._policy))


class Engine:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.engine_id = config["engine_id"]
        self.host_id = config["host_id"]
        self.actor_id = config.get("actor_id")
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.functions: dict = {}
        self.blobs: dict = {}           # function id -> pickled function, as received
        self.retry: dict = {}           # function id -> its RetryPolicy, if it has one
        self.instance = None            # the actor, once created
        self.running: dict = {}         # task id -> how to interrupt it
        self.cancelled: set = set()     # interrupted before they started
        # Copies, not ids: a task given back can be sent here again while the
        # copy given back still waits in the inbox, and only one copy may run.
        self.waiting: dict = {}         # task id -> copies received, not started, not given back
        self.revoked: dict = {}         # task id -> copies given back: skip that many
        self.lock = threading.Lock()
        self.output_pending = threading.Event()
        self.main_thread = threading.main_thread().ident
        self.base_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.groups = NO_GROUPS
        self.slots: Optional[asyncio.Semaphore] = None
        key = config.get("key")
        self.replies = ReplyConnections(
            bytes.fromhex(key), self.engine_id, self.actor_id, self.on_direct_call) if key else None
        self.reply_to: dict = {}        # task id -> its owner's reply channel, while usable
        self.creation: Optional[m.ExecuteTask] = None   # an actor's constructor call
        self.called_direct: set = set()  # calls its caller sent here itself (not the scheduler)

    def run(self, services: Services) -> None:
        """Serve tasks through `services` (its client connected with
        on_message=self.on_message, not yet started) until the cluster goes."""
        self.services = services
        self.client = services.client
        self.packages = runtime_env.PackageCache(os.path.join(self.config["session_dir"],
                                                              "runtime_env"), services.fetch)
        self.finishes = Finishes(self.client, self.replies)
        # A call's messages (KillActor from exit_actor, above all) go after the
        # reports of the calls that ended before it.
        self.client.before_send = self.finishes.flush
        self.client.start()         # on_message needs self.client: only now may messages come
        self.stdout = TaskOutputStream(self, "stdout", sys.stdout)
        self.stderr = TaskOutputStream(self, "stderr", sys.stderr)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        threading.Thread(target=self._flush_output, name="output-flush", daemon=True).start()
        display.engine_shell(self.publish_display)   # display() in a task goes to its cell
        while True:
            try:
                if self.finishes.holding and self.inbox.empty():
                    self.finishes.flush()       # before waiting for more work
                msg = self.inbox.get()
                if msg is None:
                    self.finishes.flush()
                    return
                self.dispatch(msg)
            except KeyboardInterrupt:
                continue        # an interrupt that came after its task had ended

    def on_message(self, msg) -> None:
        """Called on the client's reader thread."""
        if msg is None:                     # connection lost: the cluster is gone
            log.warning("lost the scheduler; exiting")
            os._exit(0)
        if type(msg) is m.ExecuteTask:
            if msg.func_blob is not None:
                # Keep it even if this task is revoked or cancelled before it runs:
                # the scheduler counts the function as shipped to this engine.
                self.blobs[msg.func_id] = msg.func_blob
                if msg.func_retry is not None:
                    self.retry[msg.func_id] = RetryPolicy(msg.func_retry)
            with self.lock:
                _count(self.waiting, msg.task_id, +1)
            if msg.reply_to is not None and self.replies is not None:
                self.reply_to[msg.task_id] = msg.reply_to
            self.inbox.put(msg)
        elif type(msg) is m.RevokeTask:
            with self.lock:
                ok = msg.task_id in self.waiting
                if ok:
                    _count(self.waiting, msg.task_id, -1)
                    _count(self.revoked, msg.task_id, +1)
            self.client.send(m.TaskRevoked(task_id=msg.task_id, ok=ok))
        elif type(msg) is m.InterruptTask:
            # Asked to stop: whatever it does now goes through the scheduler,
            # which decides what a cancelled call's holders get.
            self.reply_to.pop(msg.task_id, None)
            with self.lock:
                how = self.running.get(msg.task_id)
                if how is None:
                    self.cancelled.add(msg.task_id)
                elif how == "main":
                    signal.pthread_kill(self.main_thread, signal.SIGINT)
                elif isinstance(how, asyncio.Task):
                    self.loop.call_soon_threadsafe(how.cancel)
                # a call on a thread pool cannot be interrupted (as in Ray)
        else:
            log.warning("unexpected message %s", type(msg).__name__)

    def on_direct_call(self, msg: m.ExecuteTask, address: str) -> None:
        """A call of this engine's actor, straight from its caller's driver
        (core/direct_calls.py), or a task from the driver this pool engine is
        lent to (core/leases.py); called on that connection's reader thread.
        Its results go back the same way; the scheduler hears of it as of any
        task (TaskFinished.called_direct: maybe before the driver's submission)."""
        if self.actor_id is None:
            if msg.method is not None or type(msg.func_id) is not str or msg.gpu_ids:
                raise ProtocolError("a pool engine runs plain tasks sent straight, not calls")
            if msg.func_blob is not None:
                self.blobs[msg.func_id] = msg.func_blob
                if msg.func_retry is not None:
                    self.retry[msg.func_id] = RetryPolicy(msg.func_retry)
        else:
            creation = self.creation
            if creation is None or msg.method in (None, "__init__") or msg.func_blob is not None:
                raise ProtocolError("an actor call before the actor exists, or not a method call")
            msg = m.replace(msg, gpu_ids=creation.gpu_ids, job=creation.job,
                            resources=creation.resources)
        with self.lock:
            _count(self.waiting, msg.task_id, +1)
            self.called_direct.add(msg.task_id)
        self.reply_to[msg.task_id] = address
        self.inbox.put(msg)

    def publish_display(self, data: dict, metadata: dict) -> bool:
        """Send a display (a mimebundle) from the running task to its owner,
        which shows it where the task was launched.  False outside a task."""
        task = current_task.get()
        if task is None:
            return False
        self.send_output(m.TaskOutput(task_id=task.task_id, name=task.name, pid=os.getpid(),
                                      stream="display", data={"data": data, "metadata": metadata}))
        return True

    def send_output(self, msg: m.TaskOutput) -> None:
        """To the task's owner: straight to its reply channel while that works
        (so it stays ahead of the results sent there), else through the scheduler."""
        address = self.reply_to.get(msg.task_id)
        if address is not None:
            if self.replies.send(address, [msg]):
                return
            self.reply_to.pop(msg.task_id, None)      # and its results are relayed too
        self.client.send(msg)

    def _flush_output(self) -> None:
        # The first write of a burst goes out at once; what follows within
        # OUTPUT_FLUSH is gathered into one message.
        while True:
            self.output_pending.wait()
            self.output_pending.clear()
            self.stdout.flush()
            self.stderr.flush()
            time.sleep(OUTPUT_FLUSH)

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, msg: m.ExecuteTask) -> None:
        with self.lock:
            if msg.task_id in self.revoked:        # a copy given back: this one, or a later
                _count(self.revoked, msg.task_id, -1)     # one runs in its place
                if msg.task_id not in self.waiting:
                    self.reply_to.pop(msg.task_id, None)
                return
            _count(self.waiting, msg.task_id, -1)
        if msg.method is None or msg.method == "__init__" or (self.pool is None and self.loop is None):
            self.run_sync(msg)
        elif self.loop is not None:
            asyncio.run_coroutine_threadsafe(self.run_async(msg), self.loop)
        else:
            ctx = contextvars.copy_context()
            self.groups.pool_for(msg, self.pool).submit(ctx.run, self.run_sync, msg, False)

    def run_sync(self, msg: m.ExecuteTask, on_main: bool = True) -> None:
        started = time.perf_counter()
        token = current_task.set(msg)
        outcome = None
        undo_env = runtime_env.NOTHING
        try:
            with self.lock:
                if msg.task_id in self.cancelled:
                    self.cancelled.discard(msg.task_id)
                    raise KeyboardInterrupt
                # A running call of a plain actor is not interrupted (Ray): it
                # finishes, and the scheduler reports it cancelled.
                actor_call = msg.method is not None and msg.method != "__init__" and not \
                    getattr(type(self.instance), "__shoal_interruptible__", False)
                self.running[msg.task_id] = "main" if on_main and not actor_call else "thread"
            self._set_gpus(msg.gpu_ids)
            undo_env = runtime_env.apply(msg.runtime_env, self.packages)
            if msg.method == "__init__":                 # an actor keeps its env for life,
                undo_env = runtime_env.NOTHING          # and so do the tasks it submits
                self.services.keep_actor_env(msg.runtime_env, msg.placement)
            fn, args, kwargs = self._prepare(msg)
            value = fn(*args, **kwargs)
            if msg.generator is not None:     # still interruptible while it yields
                value = self._drain_generator(msg, value)
            if on_main:
                display.after_task()
            with self.lock:                  # from here on no interrupt is sent
                self.running.pop(msg.task_id, None)
            del args, kwargs
            if msg.method == "__init__":
                self._became_actor(value, msg)
                value = None
            outcome = self._results(msg, value)
        except SystemExit as exc:
            self._exit_as_crash(msg, exc)
        except BaseException as exc:     # KeyboardInterrupt too: that is how cancel arrives
            outcome = self._failure(msg, exc)
        finally:
            undo_env()
            self._finish(msg, outcome, time.perf_counter() - started)
            current_task.reset(token)

    async def run_async(self, msg: m.ExecuteTask) -> None:
        current_task.set(msg)            # this coroutine runs in its own context copy
        outcome = None
        try:
            async with self.groups.slots_for(msg, self.slots):
                with self.lock:
                    if msg.task_id in self.cancelled:
                        self.cancelled.discard(msg.task_id)
                        raise asyncio.CancelledError
                    self.running[msg.task_id] = asyncio.current_task()
                fn, args, kwargs = self._prepare(msg)
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
                if msg.generator is not None and inspect.isasyncgen(value):
                    value = await self._drain_async_generator(msg, value)
                elif msg.generator is not None:
                    value = self._drain_generator(msg, value)
                outcome = self._results(msg, value)
        except SystemExit as exc:
            self._exit_as_crash(msg, exc)
        except (Exception, asyncio.CancelledError) as exc:
            outcome = self._failure(msg, KeyboardInterrupt() if isinstance(
                exc, asyncio.CancelledError) else exc)
        finally:
            self._finish(msg, outcome)

    def _exit_as_crash(self, msg: m.ExecuteTask, exc: SystemExit) -> None:
        """sys.exit() in a task ends its engine, as in Ray: the scheduler sees a
        crashed worker (retried, then WorkerCrashedError)."""
        log.warning("task %s called sys.exit(%s); the engine exits", msg.task_id, exc.code)
        self.finishes.flush()               # the calls before it did finish
        self.stdout.flush()
        self.stderr.flush()
        self.client.close()
        os._exit(exc.code if isinstance(exc.code, int) and exc.code else 1)

    def _finish(self, msg: m.ExecuteTask, outcome, ran_for: float = 0.0) -> None:
        with self.lock:
            self.running.pop(msg.task_id, None)
            called_direct = msg.task_id in self.called_direct
            if called_direct:
                self.called_direct.discard(msg.task_id)
        self.stdout.flush(msg.task_id)
        self.stderr.flush(msg.task_id)
        if msg.dep_values:
            self.client.unseed([e.object_id for e in msg.dep_values])
        results, nested, failed, retryable = outcome
        address = self.reply_to.pop(msg.task_id, None)
        # The scheduler hears first: once the owner has the value, whatever it
        # does next (kill the actor, cancel, leave) finds the task finished, not
        # running, so nothing is re-run or cancelled behind its back.  If the
        # straight send then fails, the scheduler pushes the results instead
        # (and does so too if this engine dies before saying either).
        direct = address is not None and _plain_success(results, nested, failed)
        # A task or plain actor call with more waiting: report it with theirs;
        # unless its results hold refs: this engine's own refs to them may be
        # dropped before the batch goes, and the scheduler must count the
        # results' holds first.
        hold = self.pool is None and self.loop is None and msg.method != "__init__" \
            and not any(nested) and not self.inbox.empty()
        self.finishes.send(m.TaskFinished(task_id=msg.task_id, results=results, nested=nested,
                                          failed=failed, retryable=retryable, delivered=direct,
                                          called_direct=called_direct, ran_for=ran_for),
                           address if direct else None, hold)

    # ------------------------------------------------------------------ pieces
    def _prepare(self, msg: m.ExecuteTask):
        if msg.dep_values:
            self.client.seed(msg.dep_values)
        if msg.method is None or msg.method == "__init__":
            fn = self._function(msg)
        elif msg.method == "__ray_ready__":
            fn = _actor_ready
        elif msg.method == "__ray_terminate__":
            fn = self._terminate_actor
        else:
            fn = getattr(self.instance, msg.method)
        args, kwargs = deserialize(msg.args)
        if msg.dep_values:
            values = {e.object_id: e for e in msg.dep_values}
            ref_type = self.services.ref_type
            resolve = lambda a: self._resolve(a, values) if type(a) is ref_type else a  # noqa: E731
            args = [resolve(a) for a in args]
            kwargs = {k: resolve(v) for k, v in kwargs.items()}
        return fn, args, kwargs

    def _function(self, msg: m.ExecuteTask):
        fn = self.functions.get(msg.func_id)
        if fn is None:
            blob = self.blobs.get(msg.func_id)
            if blob is None:
                raise RuntimeError(f"function {msg.name!r} was never shipped to this engine")
            fn = self.functions[msg.func_id] = cloudpickle.loads(blob)
            del self.blobs[msg.func_id]
        return fn

    def _resolve(self, ref, values: dict):
        entry = values[ref.id]
        value = self.client.load(entry)
        if entry.error:
            raise value
        return value

    def _terminate_actor(self) -> None:
        """handle.__ray_terminate__: the actor exits after the calls queued before this one."""
        self.services.exit_actor(reason="it was terminated with __ray_terminate__")

    def _became_actor(self, instance, msg: m.ExecuteTask) -> None:
        """The constructor returned: choose how calls will run."""
        self.instance = instance
        self.client.actor_options = msg.actor_options      # for get_runtime_context().current_actor
        options = msg.actor_options or {}
        groups = options.get("concurrency_groups") or {}
        # The scheduler's limit covers every group; the default group's own is this.
        concurrency = options.get("max_concurrency")
        if groups and concurrency is not None:
            concurrency -= sum(groups.values())
        is_async = any(_is_async(getattr(type(instance), name, None))
                       for name in dir(type(instance)) if not name.startswith("__"))
        if is_async:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="actor-loop", daemon=True).start()
            limit = concurrency or DEFAULT_ASYNC_CONCURRENCY

            async def make_semaphores():
                return (asyncio.Semaphore(limit),
                        {name: asyncio.Semaphore(size) for name, size in groups.items()})

            self.slots, slots = asyncio.run_coroutine_threadsafe(
                make_semaphores(), self.loop).result()
            self.groups = ConcurrencyGroups(options.get("method_groups") or {}, slots=slots)
        elif (concurrency and concurrency > 1) or groups:
            self.pool = concurrent.futures.ThreadPoolExecutor(concurrency or 1, "actor-call")
            self.groups = ConcurrencyGroups(options.get("method_groups") or {}, pools={
                name: concurrent.futures.ThreadPoolExecutor(size, f"actor-{name}")
                for name, size in groups.items()})
        self.creation = msg          # calls may now come straight from callers too

    # ------------------------------------------------------------------ generators
    def _drain_generator(self, msg: m.ExecuteTask, gen):
        """Run a generator task to its end, handing each item on as it comes.
        Returns the task's value: the item count (streaming) or the refs
        (dynamic)."""
        _check_generator(msg, gen, inspect.isgenerator(gen))
        items = _ItemSink(self, msg)
        try:
            for item in gen:
                items.add(item)
        except Exception as exc:
            return items.failed(exc)
        return items.result()

    async def _drain_async_generator(self, msg: m.ExecuteTask, gen):
        items = _ItemSink(self, msg)
        try:
            async for item in gen:
                items.add(item)
        except Exception as exc:
            return items.failed(exc)
        return items.result()

    def _results(self, msg: m.ExecuteTask, value):
        n = len(msg.return_ids)
        if n == 0:
            return [], [], False, False
        if inspect.isgenerator(value) and msg.generator is None:
            value = list(value)          # a generator with a fixed num_returns (Ray)
            if n == 1:
                if len(value) != 1:
                    raise ValueError(f"task {msg.name!r} has num_returns=1 but its generator "
                                     f"yielded {len(value)} values")
                value = value[0]
        if n == 1:
            values = [value]
        else:
            try:
                values = list(value)
            except TypeError:
                raise ValueError(f"task {msg.name!r} has num_returns={n} but returned a "
                                 f"non-iterable {type(value).__name__}") from None
            if len(values) != n:
                raise ValueError(f"task {msg.name!r} has num_returns={n} but returned "
                                 f"{len(values)} values")
        results, nested = [], []
        for oid, v in zip(msg.return_ids, values):
            s = serialize(v)
            results.append(self.client.store_value(oid, s))
            nested.append(s.nested)
        return results, nested, False, False

    def _failure(self, msg: m.ExecuteTask, exc: BaseException):
        error = self._task_error(msg, exc)
        try:
            payload = serialize(error)
        except SerializationError:
            payload = serialize(exceptions.TaskError(msg.name, [], f"{type(exc).__name__}: {exc}\n"))
        results = [self.client.store_value(oid, payload)._replace(error=True)
                   for oid in msg.return_ids]
        return results, [], True, self._retryable(msg, exc)

    def _retryable(self, msg: m.ExecuteTask, exc: BaseException) -> bool:
        policy = self.retry.get(msg.func_id)
        if policy is None or isinstance(exc, (KeyboardInterrupt, SerializationError)):
            return False
        return policy.covers(exc)

    def _task_error(self, msg: m.ExecuteTask, exc: BaseException) -> BaseException:
        if isinstance(exc, (exceptions.TaskError, exceptions.ActorDiedError)):
            return exc                     # an upstream failure: pass it on unchanged
        if isinstance(exc, KeyboardInterrupt):
            return exceptions.TaskCancelledError(msg.task_id)
        where = f"task {msg.task_id}, engine {self.engine_id}, pid {os.getpid()}"
        # TaskError pickles its cause with exceptions.pack_exception: any exception travels.
        return exceptions.TaskError(msg.name, *user_traceback(exc), exc, msg.task_id, where)

    def _set_gpus(self, gpu_ids: list) -> None:
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
        elif self.base_cuda is None:
            if "CUDA_VISIBLE_DEVICES" in os.environ:     # pop() of a missing key raises inside
                del os.environ["CUDA_VISIBLE_DEVICES"]
        elif os.environ.get("CUDA_VISIBLE_DEVICES") != self.base_cuda:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.base_cuda


class ConcurrencyGroups:
    """Ray's concurrency groups of an actor: each group runs at most its own
    number of calls at once, on its own thread pool (threaded actors) or under
    its own semaphore (async actors); a call goes to the group it was given
    (`.options(concurrency_group=)`), else its method's (`@method`), else the
    default group (max_concurrency)."""

    def __init__(self, method_groups: dict, pools: Optional[dict] = None,
                 slots: Optional[dict] = None) -> None:
        self.method_groups = method_groups
        self.pools = pools or {}
        self.slots = slots or {}

    def _group(self, msg: m.ExecuteTask) -> Optional[str]:
        return msg.concurrency_group or self.method_groups.get(msg.method)

    def pool_for(self, msg: m.ExecuteTask, default):
        return self.pools.get(self._group(msg), default)

    def slots_for(self, msg: m.ExecuteTask, default):
        return self.slots.get(self._group(msg), default)


NO_GROUPS = ConcurrencyGroups({})


def _plain_success(results: list, nested: list, failed: bool) -> bool:
    """Results that may go straight to their owner: a success, every value
    inline (a stored one is the host's to count and free), no refs inside
    (the scheduler must count those before the owner holds them)."""
    return (bool(results) and not failed and all(e.inline is not None for e in results)
            and not any(nested))


def _is_async(fn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def _check_generator(msg: m.ExecuteTask, gen, ok: bool) -> None:
    if not ok:
        raise TypeError(f"{msg.name!r} was called with num_returns={msg.generator!r}, which "
                        f"needs a generator function (one that yields), but it returned "
                        f"{type(gen).__name__}")


class _ItemSink:
    """Where a generator task's items go: streamed to the owner one by one
    (GeneratorItem), or put into the store for a dynamic task's result."""

    def __init__(self, engine: "Engine", msg: m.ExecuteTask) -> None:
        self.engine = engine
        self.msg = msg
        self.refs: list = []             # dynamic: refs to the items put so far
        self.count = 0

    def add(self, item) -> None:
        client = self.engine.client
        if self.msg.generator == "dynamic":
            self.refs.append(self.engine.services.put(item))
        else:
            s = serialize(item)
            oid = item_id(self.msg.task_id, self.count)
            client.send(m.GeneratorItem(task_id=self.msg.task_id, index=self.count,
                                        entry=client.store_value(oid, s), nested=s.nested))
        self.count += 1

    def failed(self, exc: BaseException):
        """The generator raised: streaming fails the task (the end marker holds
        the error); dynamic stores the error as one more, final item (Ray)."""
        if self.msg.generator != "dynamic":
            raise exc
        client = self.engine.client
        error = self.engine._task_error(self.msg, exc)
        oid = client.new_id("p")
        entry = client.store_value(oid, serialize(error))._replace(error=True)
        self.refs.append(self.engine.services.owned_ref(oid))
        client.send(m.PutObject(entry=entry))
        return self.result()

    def result(self):
        if self.msg.generator == "dynamic":
            return self.engine.services.dynamic_generator(self.refs)
        return self.count


def _actor_ready() -> bool:
    """handle.__ray_ready__: True once the constructor has run."""
    return True


def user_traceback(exc: BaseException) -> tuple[list, str]:
    """(frames, exception text) of an exception, shoal's own frames removed.
    A frame's line is None where this process cannot read the source."""
    te = traceback.TracebackException.from_exception(exc)
    frames = [(f.filename, f.lineno, f.name, f.line or None) for f in te.stack
              if not f.filename.startswith(_SHOAL_DIR)]
    return frames, "".join(te.format_exception_only())


def _count(counts: dict, key: str, change: int) -> None:
    """Add `change` to a count kept only while it is above zero."""
    n = counts.get(key, 0) + change
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


def main(connect: Callable[[dict, Callable], Services]) -> None:
    """Run an engine process: its configuration on stdin; `connect(config,
    on_message)` gives the services of the process's client side, its client
    connected but not started (shoal.core.worker is the program that calls this)."""
    config = read_config_from_stdin()
    setup_process_logging(config["session_dir"], f"engine-{config['engine_id']}")
    owner_fd = config.get("owner_fd")
    if owner_fd is not None:
        threading.Thread(target=_exit_when_closed, args=(owner_fd,), name="owner-watch",
                         daemon=True).start()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    engine = Engine(config)
    engine.run(connect(config, engine.on_message))


def _exit_when_closed(fd: int) -> None:
    wait_until_closed(fd)
    os._exit(0)
