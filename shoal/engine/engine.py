"""The engine process: runs one task at a time on its main thread.

Tasks arrive through the engine's Client (its reader thread queues them);
inside a task the whole public API works, because the engine's Client is the
process's runtime.  Output a task prints is captured and sent, tagged with the
task id, to the task's owner.  An InterruptTask raises KeyboardInterrupt in
the running task (a real SIGINT to the main thread, so blocking calls wake).
"""
from __future__ import annotations

import io
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Optional

import cloudpickle

from .. import exceptions
from ..core import runtime
from ..core.client import Client
from ..core.object_ref import ObjectRef
from ..protocol import messages as m
from ..protocol.serialization import SerializationError, deserialize, serialize
from ..session import read_config_from_stdin, setup_process_logging

log = logging.getLogger("shoal.engine")
_SHOAL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_FLUSH = 0.05


class TaskOutputStream(io.TextIOBase):
    """A stream that forwards what a task writes to the task's owner.  Text is
    buffered and flushed at newlines-plus-time, at task end, or on flush()."""

    def __init__(self, engine: "Engine", stream: str) -> None:
        self.engine = engine
        self.stream = stream
        self._buf: list = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            with self._lock:
                self._buf.append(text)
            self.engine.output_pending.set()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            text, self._buf = "".join(self._buf), []
        task = self.engine.task
        if text and task is not None:
            self.engine.client.send(m.TaskOutput(task_id=task.task_id, name=task.name,
                                                 pid=os.getpid(), stream=self.stream, text=text))


class Engine:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.engine_id = config["engine_id"]
        self.host_id = config["host_id"]
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.functions: dict = {}
        self.task: Optional[m.ExecuteTask] = None
        self.interrupt_lock = threading.Lock()
        self.output_pending = threading.Event()
        self.main_thread = threading.main_thread().ident
        self.base_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")

    def run(self) -> None:
        self.client = Client.connect(
            self.config["address"], bytes.fromhex(self.config["key"]), kind="engine",
            host_id=self.host_id, store_dir=self.config["store_dir"],
            engine_id=self.engine_id, on_message=self.on_message)
        runtime.set_current(runtime.Runtime(self.client, self.config["address"]))
        self.stdout = TaskOutputStream(self, "stdout")
        self.stderr = TaskOutputStream(self, "stderr")
        threading.Thread(target=self._flush_output, name="output-flush", daemon=True).start()
        while True:
            try:
                msg = self.tasks.get()
                if msg is None:
                    return
                self.execute(msg)
            except KeyboardInterrupt:
                continue        # an interrupt that came after its task had ended

    def on_message(self, msg) -> None:
        """Called on the client's reader thread."""
        if msg is None:                     # connection lost: the cluster is gone
            log.warning("lost the scheduler; exiting")
            os._exit(0)
        if type(msg) is m.ExecuteTask:
            self.tasks.put(msg)
        elif type(msg) is m.InterruptTask:
            with self.interrupt_lock:
                if self.task is not None and self.task.task_id == msg.task_id:
                    signal.pthread_kill(self.main_thread, signal.SIGINT)
        else:
            log.warning("unexpected message %s", type(msg).__name__)

    def _flush_output(self) -> None:
        while True:
            self.output_pending.wait()
            self.output_pending.clear()
            time.sleep(OUTPUT_FLUSH)     # gather a burst of writes into one message
            self.stdout.flush()
            self.stderr.flush()

    # ------------------------------------------------------------------ running a task
    def execute(self, msg: m.ExecuteTask) -> None:
        client = self.client
        client.seed(msg.dep_values)
        failed = retryable = False
        nested: list = []
        with self.interrupt_lock:
            self.task = msg
            client.current_task_id = msg.task_id
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self._set_gpus(msg.gpu_ids)
        try:
            fn = self._function(msg)
            args, kwargs = self._arguments(msg)
            value = fn(*args, **kwargs)
            del args, kwargs
            results, nested = self._store_results(msg, value)
        except BaseException as exc:     # KeyboardInterrupt too: that is how cancel arrives
            failed = True
            retryable = self._retryable(msg, exc)
            error = self._task_error(msg, exc)
            results = [client.store_value(oid, serialize(error))._replace(error=True)
                       for oid in msg.return_ids]
        finally:
            with self.interrupt_lock:
                sys.stdout.flush()
                sys.stderr.flush()
                sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
                self.task = None
                client.current_task_id = None
        client.unseed(e.object_id for e in msg.dep_values)
        client.send(m.TaskFinished(task_id=msg.task_id, results=results, nested=nested,
                                   failed=failed, retryable=retryable))

    def _function(self, msg: m.ExecuteTask):
        fn = self.functions.get(msg.func_id)
        if fn is None:
            if msg.func_blob is None:
                raise RuntimeError(f"function {msg.name!r} was never shipped to this engine")
            fn = self.functions[msg.func_id] = cloudpickle.loads(msg.func_blob)
        return fn

    def _arguments(self, msg: m.ExecuteTask):
        args, kwargs = deserialize(msg.args)
        if msg.dep_values:
            values = {e.object_id: e for e in msg.dep_values}
            resolve = lambda a: self._resolve(a, values) if type(a) is ObjectRef else a
            args = [resolve(a) for a in args]
            kwargs = {k: resolve(v) for k, v in kwargs.items()}
        return args, kwargs

    def _resolve(self, ref: ObjectRef, values: dict):
        entry = values[ref.id]
        value = self.client.load(entry)
        if entry.error:
            raise value
        return value

    def _store_results(self, msg: m.ExecuteTask, value) -> tuple[list, list]:
        n = len(msg.return_ids)
        if n == 0:
            return [], []
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
        return results, nested

    def _retryable(self, msg: m.ExecuteTask, exc: BaseException) -> bool:
        if msg.retry_exceptions is None or isinstance(exc, (KeyboardInterrupt, SerializationError)):
            return False
        policy = cloudpickle.loads(msg.retry_exceptions)
        if policy is True:
            return isinstance(exc, Exception)
        return bool(policy) and isinstance(exc, tuple(policy))

    def _task_error(self, msg: m.ExecuteTask, exc: BaseException) -> BaseException:
        if isinstance(exc, exceptions.TaskError):
            return exc                     # an upstream failure: pass it on unchanged
        if isinstance(exc, KeyboardInterrupt):
            return exceptions.TaskCancelledError(msg.task_id)
        where = f"task {msg.task_id}, engine {self.engine_id}, pid {os.getpid()}"
        cause = exc
        try:
            cloudpickle.dumps(exc)
        except Exception:                  # an exception we cannot ship: keep its text
            cause = RuntimeError(f"{type(exc).__name__}: {exc}")
        return exceptions.TaskError(msg.name, *user_traceback(exc), cause, msg.task_id, where)

    def _set_gpus(self, gpu_ids: list) -> None:
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
        elif self.base_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.base_cuda


def user_traceback(exc: BaseException) -> tuple[list, str]:
    """(frames, exception text) of an exception, shoal's own frames removed.
    A frame's line is None where this process cannot read the source."""
    te = traceback.TracebackException.from_exception(exc)
    frames = [(f.filename, f.lineno, f.name, f.line or None) for f in te.stack
              if not f.filename.startswith(_SHOAL_DIR)]
    return frames, "".join(te.format_exception_only())


def main() -> None:
    config = read_config_from_stdin()
    setup_process_logging(config["session_dir"], f"engine-{config['engine_id']}")
    owner_fd = config.get("owner_fd")
    if owner_fd is not None:
        threading.Thread(target=_exit_when_closed, args=(owner_fd,), name="owner-watch",
                         daemon=True).start()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    Engine(config).run()


def _exit_when_closed(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 64):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os._exit(0)
