"""What runs in Ray's worker processes for shoal.

`setup()` is the job's worker_process_setup_hook (set by shoal.init on Ray):
it makes the Ray backend active in each worker, so shoal's API called inside
a task or actor (nested tasks, `shoal.get`, `shoal.put`, ...) goes to Ray too.

`CellOutput` is what a task's code enters on the worker when it was
submitted from a notebook cell (a `%%remote` cell's code, a plain task
through `routed(fn)`, and the tasks those submit, at any depth): while it
runs, its stdout, stderr and rich displays go to the output relay, tagged
with the cell they belong to, instead of to the worker's log file (from
where Ray's log forwarding would print them under whatever cell runs when
they arrive).  Leaving it sends what is buffered and waits until the relay
has it, so the notebook can show all of it before the cell's result.
"""
from __future__ import annotations

import contextvars
import inspect
import io
import os
import sys
import threading
import time
from typing import Optional

FLUSH_BYTES = 8192          # send a stream's text at a newline, or once this much is buffered
FLUSH_INTERVAL = 0.05       # seconds output waits to go with what follows (one relay call)


def setup() -> None:
    """Ray's worker_process_setup_hook: shoal's API in this worker talks to Ray."""
    from ...core import backend
    from .backend import RayBackend
    if backend.active is None:
        backend.set_active(RayBackend("ray", in_worker=True))


class _TextOut(io.TextIOBase):
    """A writable UTF-8 text stream that is not a terminal."""

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


class _RelayStream(_TextOut):
    """One stream of one route: lines to the relay (through the sender)."""

    def __init__(self, output: "CellOutput", name: str) -> None:
        self._output = output
        self._name = name
        self._parts: list = []
        self._size = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            ready = "\n" in text or self._size >= FLUSH_BYTES
        if ready:
            self.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            text, self._parts, self._size = "".join(self._parts), [], 0
        if text:
            self._output.send(self._name, text)


class _Dispatch(_TextOut):
    """sys.stdout / sys.stderr of a worker once output was routed here: text
    goes to the route of the task or actor call writing it (`current` in its
    context; in a thread the code started, the route entered last), else
    where it went before (the worker's log, which Ray forwards)."""

    def __init__(self, name: str, fallback) -> None:
        self._name = name
        self._fallback = fallback

    def fileno(self) -> int:
        return self._fallback.fileno()

    def write(self, text: str) -> int:
        route = route_now()
        if route is None:
            return self._fallback.write(text)
        return route.streams[self._name].write(text)

    def flush(self) -> None:
        route = route_now()
        if route is not None:
            route.streams[self._name].flush()
        else:
            self._fallback.flush()


_active: list = []          # the routes entered in this process, oldest first
_active_lock = threading.Lock()


def route_now() -> Optional["CellOutput"]:
    """The route of the code running here (a thread it started: the route entered last)."""
    route = current.get()
    if route is None and _active:
        try:
            route = _active[-1]
        except IndexError:
            route = None
    return route


def _publish(data: dict, metadata: dict) -> bool:
    """The engine shell's publisher: a display goes to the route of the code
    calling display(); False (not sent) where there is none."""
    route = route_now()
    return route is not None and route._display(data, metadata)


def _install() -> None:
    """Route this process's streams (once; another stream put in their place is
    wrapped in turn)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _Dispatch):
            setattr(sys, name, _Dispatch(name, stream))


_relays: dict = {}          # relay name -> its handle, looked up once per process


def _relay(name: str):
    handle = _relays.get(name)
    if handle is None:
        import ray
        from .relay import RELAY_NAMESPACE
        handle = _relays[name] = ray.get_actor(name, namespace=RELAY_NAMESPACE)
    return handle


class _Sender:
    """This process's sender of routed output.  An item goes at once after a
    quiet spell; in a burst, items wait up to FLUSH_INTERVAL and go in one push
    per relay (one actor call for many lines, not one per line); pushes go one at a time, each awaited, so items reach the relay in
    the order they were written (the relay is an async actor: Ray does not
    keep the order of concurrent calls to one).  `flush()` sends what waits
    now and returns once the relay has it (a task's end: its output before
    its result)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()           # guards _pending and _thread
        self._sending = threading.Lock()        # one push at a time
        self._pending: list = []                # (relay name, item), in order
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def add(self, relay: str, item: tuple) -> None:
        with self._lock:
            self._pending.append((relay, item))
            if self._thread is None:
                # Owned by this worker process: it lives as long as the process.
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shoal-ray-output-sender")
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        last = 0.0
        while True:
            self._wake.wait()
            # A line after a quiet spell goes at once; a burst, in one push per interval.
            pause = last + FLUSH_INTERVAL - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._wake.clear()
            last = time.monotonic()
            try:
                self.flush()
            except Exception:                   # the relay went (its driver left): drop
                pass

    def flush(self) -> None:
        import ray
        with self._sending:
            with self._lock:
                items, self._pending = self._pending, []
            if not items:
                return
            batches: dict = {}
            for relay, item in items:
                batches.setdefault(relay, []).append(item)
            ray.get([_relay(relay).push.remote(_coalesced(batch))
                     for relay, batch in batches.items()])


def _coalesced(items: list) -> list:
    """Consecutive text of one stream of one task as one item."""
    out: list = []
    for item in items:
        last = out[-1] if out else None
        if last is not None and item[1] != "display" and last[:5] == item[:5]:
            out[-1] = (*last[:5], last[5] + item[5])
        else:
            out.append(item)
    return out


_SENDER = _Sender()


# The route of the task running in this thread: tasks it submits inherit it.
current: contextvars.ContextVar[Optional["CellOutput"]] = contextvars.ContextVar(
    "shoal_cell_output", default=None)


class CellOutput:
    """A route for one cell's output: the relay actor's handle and the cell's key
    (which the notebook side maps back to the cell), the task's name, and
    whether the task was started by another task (`nested`: its lines get
    Ray's "(name pid=N)" prefix).  Picklable; entered on the worker around
    the task's code."""

    def __init__(self, relay: str, key: str, name: str = "", nested: bool = False,
                 shell: bool = False) -> None:
        self.relay = relay               # the relay actor's name
        self.key = key
        self.name = name
        self.nested = nested
        self.shell = shell               # a cell: its displays go through the engine's shell
        self.streams: dict = {}
        self._token = None

    def __getstate__(self) -> dict:
        return {"relay": self.relay, "key": self.key, "name": self.name, "nested": self.nested,
                "shell": self.shell}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def child(self, name: str) -> "CellOutput":
        """The route of a task this one submits: the same cell."""
        return CellOutput(self.relay, self.key, name, nested=True)

    def for_cell(self) -> "CellOutput":
        """This route, for a `%%remote` cell's code (displays through its shell)."""
        return CellOutput(self.relay, self.key, self.name, self.nested, shell=True)

    def send(self, stream: str, payload) -> None:
        _SENDER.add(self.relay, (self.key, stream, os.getpid(), self.name, self.nested, payload))

    def _display(self, data: dict, metadata: dict) -> bool:
        for stream in self.streams.values():
            stream.flush()
        self.send("display", {"data": data, "metadata": metadata})
        return True

    def _engine_shell(self):
        """The process's engine shell (shoal.engine.display), whose displays
        this route takes while entered: made for a cell, and for a task once
        IPython is imported (a task that calls display() got it from IPython:
        its function's globals were loaded before it runs), unless another
        shell runs here."""
        if not self.shell and "IPython" not in sys.modules:
            return None
        from IPython.core.interactiveshell import InteractiveShell
        from ...engine import display as engine_display
        if self.shell or InteractiveShell._instance is None \
                or isinstance(InteractiveShell._instance, engine_display.EngineShell):
            return engine_display.engine_shell()
        return None

    def __enter__(self) -> "CellOutput":
        shell = self._engine_shell()
        if shell is not None:
            shell.publisher = _publish
        self.streams = {"stdout": _RelayStream(self, "stdout"),
                        "stderr": _RelayStream(self, "stderr")}
        _install()
        with _active_lock:
            _active.append(self)
        self._token = current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self.shell and "IPython" in sys.modules:
                from ...engine import display as engine_display
                engine_display.after_task()       # figures a task left open, as on engines
            for stream in self.streams.values():
                stream.flush()
        finally:
            current.reset(self._token)
            with _active_lock:
                _active.remove(self)
        try:
            _SENDER.flush()            # the relay has all of it before the task's result
        except Exception:              # the relay went with its driver: nobody to show it to
            pass


def routed(fn):
    """`fn` taking a CellOutput first and running inside it (a generator
    function stays one, for Ray's streaming returns).  Named as `fn`, so
    Ray's task names and tracebacks stay the user's."""
    if inspect.isgeneratorfunction(fn):
        def run(__shoal_output, *args, **kwargs):
            with __shoal_output:
                yield from fn(*args, **kwargs)
    else:
        def run(__shoal_output, *args, **kwargs):
            with __shoal_output:
                return fn(*args, **kwargs)
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        try:
            setattr(run, attr, getattr(fn, attr))
        except (AttributeError, TypeError):
            pass
    return run


ROUTE_KEYWORD = "__shoal_output__"     # the hidden argument of a routed actor call


def routed_actor(cls: type) -> type:
    """`cls` with each public method taking its caller's route: the caller
    side (Ray's `__ray_invocation_decorator__`, kept in every handle of the
    actor, wherever it travels) adds the route of the cell or task that
    calls, as a hidden keyword; the actor side runs the call inside it.  So
    what an actor method prints or displays lands under the calling cell,
    as on shoal's own engines.  A call from where nothing is routed (a
    plain script) carries nothing and runs as it is."""
    methods = {name: _routed_method(cls.__name__, fn)
               for name, fn in inspect.getmembers(cls, inspect.isfunction)
               if not name.startswith("_") and not inspect.isasyncgenfunction(fn)}
    if routes_init(cls):                   # the creator passes its route (create_actor)
        methods["__init__"] = _routed_method(cls.__name__, cls.__init__, called=False)
    return type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def routes_init(cls: type) -> bool:
    """Whether routed_actor(cls)'s constructor takes its creator's route."""
    return inspect.isfunction(getattr(cls, "__init__", None))


def _routed_method(owner: str, fn, called: bool = True):
    import functools
    if inspect.iscoroutinefunction(fn):
        async def call(self, *args, **kwargs):
            route = kwargs.pop(ROUTE_KEYWORD, None)
            if route is None:
                return await fn(self, *args, **kwargs)
            with route:
                return await fn(self, *args, **kwargs)
    elif inspect.isgeneratorfunction(fn):
        def call(self, *args, **kwargs):
            route = kwargs.pop(ROUTE_KEYWORD, None)
            if route is None:
                return (yield from fn(self, *args, **kwargs))
            with route:
                return (yield from fn(self, *args, **kwargs))
    else:
        def call(self, *args, **kwargs):
            route = kwargs.pop(ROUTE_KEYWORD, None)
            if route is None:
                return fn(self, *args, **kwargs)
            with route:
                return fn(self, *args, **kwargs)
    functools.wraps(fn)(call)
    del call.__wrapped__       # Ray unwraps methods: it must read this one's attributes
    # Ray checks a call's arguments against this on the caller side: the user's
    # signature, plus the hidden keyword.
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter(ROUTE_KEYWORD, inspect.Parameter.KEYWORD_ONLY,
                                        default=None))
    call.__signature__ = signature.replace(parameters=params)
    if called:                 # a method: its callers add their route
        call.__ray_invocation_decorator__ = functools.partial(_with_route, owner)
    return call


def _with_route(owner: str, invocation):
    """Ray's invocation decorator of a routed actor's methods (caller side)."""
    def invoke(args, kwargs):
        from ...core import backend
        route_of = getattr(backend.active, "call_route", None)
        route = route_of(owner) if route_of is not None else None
        if route is not None:
            kwargs = {**kwargs, ROUTE_KEYWORD: route}
        return invocation(args, kwargs)
    return invoke


def interruptible(cls: type) -> type:
    """`cls` (whose class sets `__shoal_interruptible__`: a kernel interrupt
    reaches a running call, as the `%%remote --on` namespaces need) as an
    async Ray actor.  Ray does not interrupt a running call of a sync actor
    (its state could break); of an async one it cancels the asyncio task.
    So each public method of `cls` runs in the actor's one call thread, in
    order, awaited by a coroutine: `ray.cancel` of the call raises
    KeyboardInterrupt in that thread (at its next Python bytecode: a sleep in
    C ends first, as for Ray's own tasks) and waits until the call has
    ended, so the next call finds the state the interrupted one left."""
    methods = {name: _in_call_thread(fn)
               for name, fn in inspect.getmembers(cls, inspect.isfunction)
               if not name.startswith("_") and not inspect.iscoroutinefunction(fn)}
    return type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


class _CallThread:
    """The thread an interruptible actor's calls run in, and which call runs."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="shoal-actor-call")
        self.lock = threading.Lock()
        self.running: Optional[int] = None     # the id of the thread in a call, if any

    def run(self, fn, args, kwargs):
        with self.lock:
            self.running = threading.get_ident()
        try:
            return fn(*args, **kwargs)
        finally:
            with self.lock:
                self.running = None

    def interrupt(self) -> None:
        """KeyboardInterrupt into the running call (never into the idle thread:
        `running` is cleared under the lock before the call returns)."""
        import ctypes
        with self.lock:
            if self.running is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.running), ctypes.py_object(KeyboardInterrupt))


def _in_call_thread(fn):
    import asyncio
    import functools

    @functools.wraps(fn)
    async def call(self, *args, **kwargs):
        calls = self.__dict__.get("_shoal_call_thread")
        if calls is None:
            calls = self.__dict__["_shoal_call_thread"] = _CallThread()
        started = calls.pool.submit(calls.run, fn, (self, *args), kwargs)
        done = asyncio.wrap_future(started)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if not started.cancel():           # running: interrupt it, let it end
                calls.interrupt()
                await asyncio.wait([done])
            raise
    return call


__all__ = ["setup", "CellOutput", "current", "routed", "routed_actor", "routes_init",
           "interruptible", "ROUTE_KEYWORD"]
