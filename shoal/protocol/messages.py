"""Every message that crosses a shoal connection, as an immutable tuple of fields.

Nothing else in shoal builds ad-hoc wire dicts.  Small nested records are
NamedTuples (immutable, typed, and cheap to pickle).  `codec.py` turns these
into frames; the order of declaration here is the wire type code, so append
new messages at the end of their section rather than reordering.
"""
from __future__ import annotations

from dataclasses import MISSING, Field, field
from operator import itemgetter
from typing import NamedTuple, Optional

try:
    from collections import _tuplegetter     # namedtuple's field accessor, in C
except ImportError:                          # (CPython's; elsewhere a property)
    def _tuplegetter(index, doc):
        return property(itemgetter(index), doc=doc)


MESSAGE_TYPES: list[type] = []


def message(cls):
    """Declare a wire message: an immutable tuple of its fields in declaration
    order, with a keyword-only constructor, attributes by name, equality by
    type and value, registered.

    A tuple, because every task makes and decodes several messages: built from
    the wire's tuple in C (0.26 us for a SubmitTask, against 0.97 for the
    frozen slotted dataclass these were, whose fields were set one descriptor
    call at a time; made by keyword 0.60 against 1.28), and encoded as itself.
    Fields are declared as for a dataclass (`field(default_factory=...)`
    included); `fields_of(cls)` names them."""
    names = list(cls.__dict__.get("__annotations__", {}))
    params, values = [], []
    env = {"_factory": _FACTORY, "_tuple_new": tuple.__new__}
    for name in names:
        default = cls.__dict__.get(name, MISSING)
        if isinstance(default, Field):
            if default.default_factory is not MISSING:
                env[f"_make_{name}"] = default.default_factory
                params.append(f"{name}=_factory")
                values.append(f"_make_{name}() if {name} is _factory else {name}")
                continue
            default = default.default
        if default is not MISSING:
            env[f"_default_{name}"] = default
            params.append(f"{name}=_default_{name}")
        else:
            params.append(name)
        values.append(name)
    star = "*, " if params else ""
    row = f"({', '.join(values)},)" if values else "()"
    exec(f"def __new__(_cls, {star}{', '.join(params)}):\n"
         f"    return _tuple_new(_cls, {row})\n", env)
    namespace = {name: value for name, value in cls.__dict__.items()
                 if name not in names and name not in ("__dict__", "__weakref__")}
    namespace.update({name: _tuplegetter(i, None) for i, name in enumerate(names)})
    namespace.update(__slots__=(), __new__=env["__new__"], _fields=tuple(names),
                     _field_index={name: i for i, name in enumerate(names)})
    msg_cls = type(cls.__name__, (_Message,), namespace)
    env["__new__"].__qualname__ = f"{msg_cls.__qualname__}.__new__"
    MESSAGE_TYPES.append(msg_cls)
    return msg_cls


class _Message(tuple):
    """What every message class shares (see `message`)."""
    __slots__ = ()
    _fields: tuple = ()

    @classmethod
    def _from_wire(cls, values):
        """The message of a wire tuple, (type code, *field values)."""
        return tuple.__new__(cls, values[1:])

    def __eq__(self, other):
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__

    def __bool__(self) -> bool:          # (one with no fields is no less a message)
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self)) + ")"

    def __reduce__(self):
        return _rebuild, (type(self), tuple(self))


def _rebuild(cls, values: tuple):
    return tuple.__new__(cls, values)


def fields_of(cls) -> tuple:
    """The field names of a message class, in order."""
    return cls._fields


def replace(msg, **changes):
    """A copy of a message with some fields changed."""
    cls = type(msg)
    values = list(msg)
    index = cls._field_index
    for name, value in changes.items():
        at = index.get(name)
        if at is None:
            raise TypeError(f"{type(msg).__name__} has no field {name!r}")
        values[at] = value
    return tuple.__new__(cls, values)


_FACTORY = object()      # "use the field's default_factory"


class ObjectEntry(NamedTuple):
    """Where an object's value is.  Exactly one of `inline` or `host_id` is set:
    `inline` holds the serialized value (small objects; bytes-like, sent
    out-of-band when it is a PickleBuffer, see codec.py), `host_id` names the
    host whose store holds it (file `object_id` in that host's store dir)."""
    object_id: str
    error: bool = False
    inline: Optional[bytes] = None
    host_id: Optional[str] = None
    size: int = 0
    type_name: str = ""
    spilled: bool = False       # written straight to the host's spill directory


class HostInfo(NamedTuple):
    host_id: str
    hostname: str
    store_dir: str
    spill_dir: str
    store_limit: int
    object_address: str         # the host agent's object server, for transfers


class TaskEvent(NamedTuple):
    """One step of a task's story, for timelines and progress bars.  status is
    "running", or how a run ended: "finished", "failed", "cancelled",
    "retried" (it failed and runs again) or "crashed" (its engine died); or
    "revoked": the run a "running" event announced never began (its engine
    gave the task back before it started), so it is no run at all."""
    task_id: str
    name: str
    status: str
    engine_id: Optional[str]
    host_id: Optional[str]
    start: Optional[float]      # wall-clock seconds (the scheduler's clock)
    end: Optional[float]


# --- joining the cluster ----------------------------------------------------

@message
class ClientHello:
    """First message of a driver (or engine acting as a client)."""
    client_id: str
    kind: str                 # "driver" | "engine" | "agent" | "cli"
    pid: int
    hostname: str
    host_id: Optional[str] = None
    engine_id: Optional[str] = None
    actor_id: Optional[str] = None     # set for an engine started to host one actor


@message
class Welcome:
    cluster_id: str
    session_dir: str
    hosts: list               # [HostInfo]


@message
class RegisterHost:
    """An agent announces its host and what it offers."""
    host_id: str
    hostname: str
    resources: dict           # {"CPU": 4, "GPU": 1, "custom": 2.0}
    gpu_ids: list
    store_dir: str
    spill_dir: str
    store_limit: int
    object_address: str
    pid: int
    restartable: bool = False   # its owner restarts it if it dies (same host id and store)


@message
class Heartbeat:
    """Scheduler <-> agent, every second: silence past the deadline means the
    other side is gone or cut off (TCP alone may not notice for minutes)."""


@message
class Shutdown:
    """Ask the peer to stop: the scheduler stops the cluster, an agent its host."""
    reason: str = ""


@message
class ReplyChannel:
    """A driver -> scheduler, right after Welcome: results of its tasks may come
    straight from a same-host engine to this Unix socket ("unix:PATH"), which
    authenticates every connection with the cluster key."""
    address: str
    leases: bool = False      # it takes engine leases (core/leases.py)


# --- tasks -------------------------------------------------------------------

@message
class RegisterFunction:
    """A function's constants, sent once per driver; an engine gets them with
    its first task of the function (ExecuteTask.func_blob, func_retry), and
    every task names them by func_id."""
    func_id: str
    name: str
    blob: bytes               # the pickled function or class (bytes-like, out-of-band)
    retry_exceptions: Optional[bytes] = None   # pickled bool or list of classes


@message
class SubmitTask:
    task_id: str
    func_id: str
    name: str
    args: bytes               # packed (args, kwargs), top-level refs stay as ObjectRef: an
                              # out-of-band buffer the scheduler forwards and never decodes
    deps: list                # ids of top-level ObjectRef arguments, resolved before running
    nested: list              # ids of refs nested inside the arguments
    return_ids: list
    resources: dict           # {"CPU": 1.0, "GPU": 0, ...}, zero amounts dropped
    max_retries: int = 3
    parent_task_id: Optional[str] = None
    actor_id: Optional[str] = None     # an actor's creation (method "__init__") or method call
    method: Optional[str] = None
    actor_options: Optional[dict] = None   # creation only: ActorOptions fields
    engine_id: Optional[str] = None    # run on exactly this engine (e.g. %%remote --all)
    generator: Optional[str] = None    # "streaming" | "dynamic": the call yields its values
    job: tuple = ("", "")              # (job id, namespace) of the driver it runs for
    runtime_env: Optional[dict] = None   # see core/runtime_env.py (the wire form)
    placement: Optional[dict] = None     # strategy or placement group (scheduler/placement.py)
    concurrency_group: Optional[str] = None   # an actor call's group (None: the method's)
    max_calls: int = 0                   # a pool engine is replaced after this many (0: never)
    direct_to: Optional[str] = None      # an actor call its caller sent straight to this engine
                                         # (core/direct_calls.py), or a task to the engine it
                                         # leases (core/leases.py): the scheduler only records it


@message
class ExecuteTask:
    task_id: str
    func_id: str
    func_blob: Optional[bytes]  # sent the first time this engine sees the function...
    name: str
    args: bytes
    dep_values: list            # [ObjectEntry] for every id in deps
    return_ids: list
    gpu_ids: list
    func_retry: Optional[bytes] = None   # ...with its retry policy (RegisterFunction's)
    method: Optional[str] = None
    actor_options: Optional[dict] = None
    generator: Optional[str] = None
    job: tuple = ("", "")       # (job id, namespace); an actor's calls run in its creator's
    resources: dict = field(default_factory=dict)   # what the task or actor holds
    runtime_env: Optional[dict] = None
    placement: Optional[dict] = None
    concurrency_group: Optional[str] = None   # an actor call's group (None: the method's)
    reply_to: Optional[str] = None   # the owner's ReplyChannel: send a plain success there


# An engine reports at most this many finished tasks in one write (engine/
# finishes.py); the scheduler remembers at least as many delivered ones per
# engine, whose values may not have left when it dies (_push_undelivered).
REPORT_BATCH_MAX = 64


@message
class TaskFinished:
    task_id: str
    results: list               # [ObjectEntry], one per return id
    nested: list = field(default_factory=list)  # [[ids nested in result i]]
    failed: bool = False
    retryable: bool = False
    delivered: bool = False     # the engine sends the results straight to the owner (ExecuteTask.reply_to)
    called_direct: bool = False  # the call came straight from its caller: its SubmitTask may come later
    ran_for: float = 0.0        # seconds the function ran (pipelining queues more of short ones)
    ended_ago: float = 0.0      # seconds from its end to the sending of this report (held in a batch)


@message
class Undelivered:
    """Engine -> scheduler, after TaskFinished(delivered=True): sending the
    results straight to the owner failed, so the scheduler pushes them."""
    task_id: str


@message
class CancelTask:
    object_id: str
    force: bool = False
    recursive: bool = True


@message
class InterruptTask:
    """Scheduler -> engine: raise KeyboardInterrupt in the running task."""
    task_id: str


@message
class RevokeTask:
    """Scheduler -> engine: give back a task queued behind the running one, if
    it has not started (answered by TaskRevoked)."""
    task_id: str


@message
class TaskRevoked:
    task_id: str
    ok: bool                    # False: it had started already and will finish


@message
class EngineBlocked:
    """An engine's task waits in get/wait (True) or runs again (False): its CPU
    is lent back meanwhile so nested tasks cannot deadlock the cluster."""
    task_id: str
    blocked: bool


@message
class TaskOutput:
    task_id: str
    name: str
    pid: int
    stream: str                 # "stdout" | "stderr" | "display"
    text: str = ""
    data: Optional[dict] = None   # "display": {"data": mimebundle, "metadata": {...}}
    origin: Optional[str] = None  # set by the scheduler for nested work: the task the
                                  # receiver submitted that (transitively) started this one


@message
class CreatePlacementGroup:
    """Reserve bundles of resources on hosts (see scheduler/placement.py)."""
    pg_id: str
    bundles: list               # [{"CPU": 1.0, ...}]
    strategy: str               # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    name: str = ""
    detached: bool = False
    ready_value: bytes = b""    # the serialized value of its ready() ref


@message
class RemovePlacementGroup:
    pg_id: str


@message
class GeneratorItem:
    """Engine -> scheduler: a streaming generator task yielded item `index`
    (object id "<task id>/g<index>"), which goes to the task's owner now."""
    task_id: str
    index: int
    entry: ObjectEntry
    nested: list = field(default_factory=list)


@message
class Notice:
    """A warning the scheduler wants the driver's user to see."""
    text: str


# --- objects -----------------------------------------------------------------

@message
class PutObject:
    entry: ObjectEntry
    nested: list = field(default_factory=list)


@message
class ObjectsReady:
    entries: list               # [ObjectEntry]


@message
class Subscribe:
    """Push these objects to me when they are ready (for refs I did not create)."""
    object_ids: list


@message
class RefUpdates:
    """Ordered +1/-1 changes of this client's holding of objects."""
    ops: list                   # [(object_id, delta)]


@message
class FreeObjects:
    """Scheduler -> agent: drop these objects from the host store."""
    object_ids: list


@message
class FetchObject:
    """Client -> another host's object server: send me this object's bytes."""
    object_id: str


@message
class ObjectData:
    """Object server -> client: `size` raw bytes follow this frame (0 if not found)."""
    object_id: str
    size: int
    found: bool


@message
class ObjectLocated:
    """Client -> scheduler: this host now holds a copy too."""
    object_id: str
    host_id: str


@message
class SpillObjects:
    """Scheduler -> agent: move these objects from shared memory to disk."""
    object_ids: list


# --- engines and agents -----------------------------------------------------------

@message
class KillActor:
    actor_id: str
    no_restart: bool = True
    reason: str = ""            # why, for the ActorDiedError (default: shoal.kill())


@message
class StartEngines:
    count: int
    actor_id: Optional[str] = None     # start one engine dedicated to this actor


@message
class StopEngine:
    engine_id: str
    restart: bool = False       # kill now and start a replacement (force-cancel)


@message
class EngineExited:
    engine_id: str
    returncode: Optional[int]


# --- the event stream (widgets) ---------------------------------------------

@message
class SubscribeEvents:
    """Start (or stop) receiving Events; starting brings a snapshot first."""
    subscribe: bool = True


@message
class Events:
    """A batch of what happened, at most ~10 per second per subscriber."""
    tasks: list                    # [TaskEvent]
    objects_changed: bool = False
    cluster_changed: bool = False  # hosts, engines or actors came or went
    snapshot: bool = False         # tasks is the remembered history, not news


# --- requests -------------------------------------------------------------------

@message
class Query:
    """Ask the scheduler for state: kind is "status", "get_actor", "list_actors", "hosts",
    "scale", "placement_groups", "objects", "memory" or "story" (a task's transitions)."""
    request_id: int
    kind: str
    args: dict = field(default_factory=dict)


@message
class QueryReply:
    request_id: int
    value: object = None
    error: Optional[str] = None


# --- straight between processes ---------------------------------------------------

@message
class EngineHello:
    """Engine -> driver, first on a reply connection: who is sending.  An
    actor's engine names its actor; the driver may then send that actor's
    calls back on this connection (ExecuteTask; see core/direct_calls.py)."""
    engine_id: str
    actor_id: Optional[str] = None


# --- engine leases (core/leases.py, scheduler/leases.py) -----------------------

@message
class EngineLease:
    """Scheduler -> driver: the idle engine its task just ended on is its own
    for plain tasks, sent straight (SubmitTask.direct_to), until RevokeLease."""
    engine_id: str


@message
class RevokeLease:
    """Scheduler -> driver: other work needs the engine: send it no more tasks."""
    engine_id: str


@message
class LeaseReturned:
    """Driver -> scheduler, after the records of every task it sent the engine."""
    engine_id: str
