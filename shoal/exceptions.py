"""shoal's exceptions, with every name of Ray's `ray.exceptions` and Ray's class
hierarchy, so `import shoal as ray` code that catches Ray's exceptions keeps working.

A failed task raises `TaskError`, and the class actually raised also derives
from the user's exception class, so ``except ValueError`` still catches a
remote ValueError (as Ray's RayTaskError.as_instanceof_cause does).  The
user's exception travels whatever its constructor takes (see `pack_exception`).
"""
from __future__ import annotations

import builtins
import concurrent.futures
import pickle

import cloudpickle


class ShoalError(Exception):
    """Base class of every shoal error (Ray: RayError)."""


class CrossLanguageError(ShoalError):
    """Raised from another language (never by shoal: it runs Python only)."""


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
        # Not super().__init__: in a TaskError(UserError) class that would be
        # the user's __init__, which takes whatever it takes.
        BaseException.__init__(self, self._message())

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
        args = list(self._args())
        args[3] = pack_exception(self.cause) if self.cause is not None else None
        return (_rebuild_task_error, tuple(args))

    def as_instanceof_cause(self) -> "TaskError":
        """This error as an instance of both TaskError and the cause's class,
        with the cause's args and attributes."""
        cause = self.cause
        cause_cls = type(cause) if cause is not None else None
        if (cause_cls is None or isinstance(self, cause_cls) or not issubclass(cause_cls, Exception)
                or issubclass(cause_cls, ShoalError)):
            return self
        cls = _dual_class(cause_cls)
        if cls is None:
            return self
        new_args = _builtin_args(cause)
        err = _blank_instance(cls, new_args)
        if err is None:
            return self
        _init_builtin_fields(err, new_args)
        try:
            err.__dict__.update(vars(cause))
        except TypeError:
            pass
        TaskError.__init__(err, *self._args())
        try:
            err.args = cause.args
        except Exception:
            pass
        return err


_DUAL_CLASSES: dict = {}


def _dual_getattr(self, name):
    # Attributes the cause computes (properties, slots) read through to it.
    cause = self.__dict__.get("cause")
    if cause is None or name.startswith("__"):
        raise AttributeError(name)
    return getattr(cause, name)


def _dual_class(cause_cls: type):
    if cause_cls not in _DUAL_CLASSES:
        name = f"TaskError({cause_cls.__name__})"
        try:
            cls = type(name, (TaskError, cause_cls), {
                "__init__": TaskError.__init__, "__str__": TaskError.__str__,
                "__reduce__": TaskError.__reduce__, "__getattr__": _dual_getattr,
                "__module__": __name__, "__qualname__": name,
            })
        except TypeError:          # a class that cannot be subclassed: plain TaskError
            cls = None
        _DUAL_CLASSES[cause_cls] = cls
    return _DUAL_CLASSES[cause_cls]


def _blank_instance(cls: type, args: tuple):
    """An instance made without running the user's __init__ (which may take
    anything): BaseException.__new__ stores args, OSError's sets errno."""
    for attempt in (args, ()):
        try:
            return cls.__new__(cls, *attempt)
        except Exception:
            continue
    return None


def _builtin_args(exc: BaseException) -> tuple:
    """What the builtin base's constructor takes to rebuild `exc`'s C-level
    fields: its own __reduce__ says (OSError's filename is not in args)."""
    try:
        reduced = exc.__reduce__()
        if isinstance(reduced, tuple) and isinstance(reduced[1], tuple):
            return reduced[1]
    except Exception:
        pass
    return exc.args


def _init_builtin_fields(exc: BaseException, args: tuple) -> None:
    """Set the C-level fields of a builtin base (UnicodeError's start, SyntaxError's
    lineno...) from args, as its __init__ does, without the user's __init__."""
    base = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
    try:
        base.__init__(exc, *args)
    except Exception:
        exc.args = args


def _rebuild_task_error(function_name, frames, exception_text, packed_cause, task_id, where):
    cause = unpack_exception(packed_cause, exception_text) if packed_cause is not None else None
    return TaskError(function_name, frames, exception_text, cause, task_id,
                     where).as_instanceof_cause()


# ---------------------------------------------------- user exceptions on the wire
def pack_exception(exc: BaseException) -> tuple:
    """A user's exception in a form that always unpickles.

    Plain pickling loses exceptions whose __init__ does not take their args
    back (several required arguments, keyword-only ones, a formatted message:
    json.JSONDecodeError, subprocess.CalledProcessError...), so the pickled
    copy is checked here; failing that the exception travels as class + args
    + attributes and is rebuilt without calling its __init__.  Attributes
    that cannot be pickled are left out; a class that cannot be pickled at
    all leaves its name and message (UnserializableException).
    """
    try:
        blob = cloudpickle.dumps(exc)
        copy = pickle.loads(blob)
        if (type(copy) is type(exc) and copy.args == exc.args
                and set(getattr(copy, "__dict__", ())) == set(getattr(exc, "__dict__", ()))):
            return ("pickle", blob)
    except Exception:
        pass
    cls = type(exc)
    try:
        cls_blob = cloudpickle.dumps(cls)
    except Exception:
        return ("text", f"{cls.__module__}.{cls.__qualname__}", str(exc))
    args = tuple(_picklable_or(a, repr(a)) for a in exc.args)
    new_args = tuple(_picklable_or(a, repr(a)) for a in _builtin_args(exc))
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if _picklable(v)}
    return ("state", cls_blob, cloudpickle.dumps((args, new_args, state)), str(exc))


def _picklable(value) -> bool:
    try:
        cloudpickle.dumps(value)
        return True
    except Exception:
        return False


def _picklable_or(value, fallback):
    return value if _picklable(value) else fallback


def unpack_exception(packed: tuple, exception_text: str = "") -> BaseException:
    """The exception `pack_exception` packed; never raises (a cause that will
    not come back becomes UnserializableException with its text)."""
    kind = packed[0]
    try:
        if kind == "pickle":
            return pickle.loads(packed[1])
        if kind == "state":
            cls = pickle.loads(packed[1])
            args, new_args, state = pickle.loads(packed[2])
            exc = _blank_instance(cls, new_args)
            if exc is None:
                raise TypeError(f"cannot make a {cls.__name__}")
            _init_builtin_fields(exc, new_args)
            exc.args = args
            exc.__dict__.update(state)
            return exc
        name, text = packed[1], packed[2]
    except Exception as err:
        name, text = "exception", f"{exception_text.strip()} (could not be rebuilt here: {err})"
    return UnserializableException(f"{name}: {text}" if name != "exception" else text)


class UnserializableException(ShoalError):
    """Stands in for a task's exception that could not be sent back (its
    class could not be pickled or rebuilt here); keeps its name and message."""

    def __init__(self, original_stack_trace: str = "") -> None:
        self.original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)


class GetTimeoutError(ShoalError, builtins.TimeoutError):
    """`get` or `wait` ran out of time."""


class TaskCancelledError(ShoalError, concurrent.futures.CancelledError):
    """The task was cancelled with `shoal.cancel`."""

    def __init__(self, task_id: str = "", message: str = "") -> None:
        self.task_id = task_id
        super().__init__(message or f"task {task_id} was cancelled")

    def __reduce__(self):
        return (type(self), (self.task_id, self.args[0] if self.args else ""))


class TaskUnschedulableError(ShoalError):
    """The task can never be scheduled (e.g. its NodeAffinitySchedulingStrategy
    names a node that is gone, with soft=False)."""

    def __init__(self, error_message: str = "") -> None:
        self.error_message = error_message
        super().__init__(f"The task is not schedulable: {error_message}")

    def __reduce__(self):
        return (type(self), (self.error_message,))


class WorkerCrashedError(ShoalError):
    """The engine running the task died, and no retries were left."""


class LocalRayletDiedError(ShoalError):
    """Ray's error for a dead local raylet; shoal's equivalent (the host agent) is
    reported as WorkerCrashedError or ClusterLostError, so this is never raised."""


class ActorError(ShoalError):
    """Base class of actor failures (Ray: RayActorError)."""


class ActorDiedError(ActorError):
    """The actor is dead (killed, crashed beyond max_restarts, or its constructor failed)."""


class ActorUnavailableError(ActorError):
    """The actor is unreachable for now (restarting) but may come back."""


class ActorUnschedulableError(ShoalError):
    """The actor can never be scheduled."""

    def __init__(self, error_message: str = "") -> None:
        self.error_message = error_message
        super().__init__(f"The actor is not schedulable: {error_message}")

    def __reduce__(self):
        return (type(self), (self.error_message,))


class ActorAlreadyExistsError(ShoalError, ValueError):
    """A named actor with this name already exists in the namespace.  Also a
    ValueError, as Ray raised before it had this class."""


class AsyncioActorExit(ShoalError):
    """Raised inside an async actor by `shoal.actor.exit_actor()`."""


class PendingCallsLimitExceeded(ShoalError):
    """An actor handle has max_pending_calls calls in flight already."""


class TaskPlacementGroupRemoved(ShoalError):
    """The task's placement group was removed."""


class ActorPlacementGroupRemoved(ShoalError):
    """The actor's placement group was removed."""


class RuntimeEnvSetupError(ShoalError):
    """A runtime_env could not be set up."""

    def __init__(self, error_message: str | None = None) -> None:
        self.error_message = error_message
        super().__init__("\n".join(["Failed to set up runtime environment."]
                                   + ([error_message] if error_message else [])))

    def __reduce__(self):
        return (type(self), (self.error_message,))


class ObjectLostError(ShoalError):
    """Every copy of an object is gone and it cannot be rebuilt."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching an object from another host timed out."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """An object was freed while a reference to it still existed (a bug)."""


class OwnerDiedError(ObjectLostError):
    """The process that owned an object died, so its value is gone."""


class ObjectReconstructionFailedError(ObjectLostError):
    """A lost object could not be rebuilt from its lineage."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """A lost object could not be rebuilt: its task's retries are used up."""


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """A lost object could not be rebuilt: its lineage was dropped."""


class ObjectFromOtherClusterError(ObjectLostError):
    """The ref belongs to a cluster this process has left (stopped, or
    switched from): its value does not carry over to the current one."""


class ObjectStoreFullError(ShoalError, MemoryError):
    """The object store is full and nothing can be spilled."""


class OutOfDiskError(ShoalError):
    """The local disk is full."""


class OutOfMemoryError(ShoalError):
    """The host ran out of memory and a task or actor was killed for it."""


class NodeDiedError(ShoalError):
    """A host (node) died."""


class PlasmaObjectNotAvailable(ShoalError):
    """An object was not available in time (Ray internal; kept for imports)."""


class RaySystemError(ShoalError):
    """shoal itself failed (not the user's code)."""

    def __init__(self, client_exc="", traceback_str: str | None = None) -> None:
        self.client_exc = client_exc
        self.traceback_str = traceback_str
        super().__init__(client_exc)

    def __str__(self) -> str:
        text = f"System error: {self.client_exc}"
        return f"{text}\ntraceback: {self.traceback_str}" if self.traceback_str else text

    def __reduce__(self):
        return (type(self), (self.client_exc, self.traceback_str))


class ClusterLostError(RaySystemError, ConnectionError):
    """The connection to the cluster's scheduler is gone."""

    def __str__(self) -> str:
        return str(self.client_exc)


class RayChannelError(RaySystemError):
    """A compiled-graph channel failed (Ray's compiled graphs; shoal has none)."""


class RayChannelTimeoutError(RayChannelError, builtins.TimeoutError):
    """A compiled-graph channel timed out (Ray's compiled graphs; shoal has none)."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A compiled graph has too many executions in flight (shoal has none)."""


class ObjectRefStreamEndOfStreamError(ShoalError):
    """A generator task's stream has no more items."""


class AuthenticationError(ShoalError):
    """A connection failed to authenticate to the cluster."""


class OufOfBandObjectRefSerializationException(ShoalError):
    """Ray's error for pickling an ObjectRef by hand; shoal tracks such refs, so
    it never raises this."""


# Ray's names for the same classes.
RayError = ShoalError
RayTaskError = TaskError
RayActorError = ActorError
# Every other name of ray.exceptions is defined above under Ray's own name.

__all__ = [
    "ShoalError", "TaskError", "ActorError", "ClusterLostError", "UnserializableException",
    "RayError", "RayTaskError", "RayActorError", "CrossLanguageError", "GetTimeoutError",
    "TaskCancelledError", "TaskUnschedulableError", "WorkerCrashedError", "LocalRayletDiedError",
    "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError",
    "ActorAlreadyExistsError", "AsyncioActorExit", "PendingCallsLimitExceeded",
    "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved", "RuntimeEnvSetupError",
    "ObjectLostError", "ObjectFetchTimedOutError", "ReferenceCountingAssertionError",
    "OwnerDiedError", "ObjectFromOtherClusterError", "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError", "ObjectStoreFullError", "OutOfDiskError",
    "OutOfMemoryError", "NodeDiedError", "PlasmaObjectNotAvailable", "RaySystemError",
    "RayChannelError", "RayChannelTimeoutError", "RayCgraphCapacityExceeded",
    "ObjectRefStreamEndOfStreamError", "AuthenticationError",
    "OufOfBandObjectRefSerializationException", "pack_exception", "unpack_exception",
]
