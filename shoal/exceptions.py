"""shoal's exceptions, with Ray's names as aliases so `import shoal as ray` code
that catches Ray's exceptions keeps working.

A failed task raises `TaskError`, and the class actually raised also derives
from the user's exception class, so ``except ValueError`` still catches a
remote ValueError (as Ray's RayTaskError.as_instanceof_cause does).
"""
from __future__ import annotations

import builtins
import concurrent.futures


class ShoalError(Exception):
    """Base class of every shoal error."""


class TaskError(ShoalError):
    """A task raised an exception.  `.cause` is the original exception; the
    message carries the remote traceback, shoal's own frames removed.

    The traceback travels as frames, not text, so that the driver fills in
    source lines from its own linecache: a function defined in a notebook
    cell shows the cell's lines, which the engine could never read.
    """

    def __init__(self, function_name: str, frames: list, exception_text: str,
                 cause: BaseException | None = None, task_id: str = "", where: str = "") -> None:
        self.function_name = function_name
        self.frames = frames              # [(filename, lineno, name, line or None)]
        self.exception_text = exception_text
        self.cause = cause
        self.task_id = task_id
        self.where = where
        super().__init__(self._message())

    @property
    def traceback_str(self) -> str:
        import linecache
        out = ["Traceback (most recent call last):\n"]
        for filename, lineno, name, line in self.frames:
            out.append(f'  File "{filename}", line {lineno}, in {name}\n')
            line = line or linecache.getline(filename, lineno).strip()
            if line:
                out.append(f"    {line}\n")
        out.append(self.exception_text)
        return "".join(out)

    def _message(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"task {self.function_name!r} failed{where}\n{self.traceback_str.rstrip()}"

    def __str__(self) -> str:
        return self._message()

    def _args(self) -> tuple:
        return (self.function_name, self.frames, self.exception_text, self.cause,
                self.task_id, self.where)

    def __reduce__(self):
        return (_rebuild_task_error, self._args())

    def as_instanceof_cause(self) -> "TaskError":
        """This error as an instance of both TaskError and the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or isinstance(self, cause_cls) or not issubclass(cause_cls, Exception):
            return self
        cls = _dual_class(cause_cls)
        if cls is None:
            return self
        try:
            err = cls.__new__(cls)
        except Exception:               # a cause class with a demanding __new__
            return self
        TaskError.__init__(err, *self._args())
        return err


_DUAL_CLASSES: dict = {}


def _dual_class(cause_cls: type):
    if cause_cls not in _DUAL_CLASSES:
        name = f"TaskError({cause_cls.__name__})"
        try:
            cls = type(name, (TaskError, cause_cls), {
                "__init__": TaskError.__init__, "__str__": TaskError.__str__,
                "__reduce__": TaskError.__reduce__, "__module__": __name__,
            })
        except TypeError:          # incompatible layouts (e.g. OSError): plain TaskError
            cls = None
        _DUAL_CLASSES[cause_cls] = cls
    return _DUAL_CLASSES[cause_cls]


def _rebuild_task_error(*args):
    return TaskError(*args).as_instanceof_cause()


class GetTimeoutError(ShoalError, builtins.TimeoutError):
    """`get` or `wait` ran out of time."""


class TaskCancelledError(ShoalError, concurrent.futures.CancelledError):
    """The task was cancelled with `shoal.cancel`."""

    def __init__(self, task_id: str = "", message: str = "") -> None:
        self.task_id = task_id
        super().__init__(message or f"task {task_id} was cancelled")

    def __reduce__(self):
        return (type(self), (self.task_id, self.args[0] if self.args else ""))


class WorkerCrashedError(ShoalError):
    """The engine running the task died, and no retries were left."""


class ActorError(ShoalError):
    """Base class of actor failures."""


class ActorDiedError(ActorError):
    """The actor is dead (killed, crashed beyond max_restarts, or its constructor failed)."""


class PendingCallsLimitExceeded(ShoalError):
    """An actor handle has max_pending_calls calls in flight already."""


class ObjectLostError(ShoalError):
    """Every copy of an object is gone and it cannot be rebuilt."""


class OwnerDiedError(ObjectLostError):
    """The process that owned an object died, so its value is gone."""


class ObjectFromOtherClusterError(ObjectLostError):
    """The ref belongs to a cluster this process has left (stopped, or
    switched from): its value does not carry over to the current one."""


class ObjectStoreFullError(ShoalError, MemoryError):
    """The object store is full and nothing can be spilled."""


class ClusterLostError(ShoalError, ConnectionError):
    """The connection to the cluster's scheduler is gone."""


# Ray's names for the same classes.
RayError = ShoalError
RayTaskError = TaskError
RayActorError = ActorError
# GetTimeoutError, TaskCancelledError, WorkerCrashedError, ActorDiedError,
# ObjectLostError, OwnerDiedError and ObjectStoreFullError share Ray's names.

__all__ = [
    "ShoalError", "TaskError", "GetTimeoutError", "TaskCancelledError", "WorkerCrashedError",
    "ActorError", "ActorDiedError", "PendingCallsLimitExceeded", "ObjectLostError", "OwnerDiedError", "ObjectStoreFullError",
    "ObjectFromOtherClusterError",
    "ClusterLostError", "RayError", "RayTaskError", "RayActorError",
]
