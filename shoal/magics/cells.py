"""Running a `%%remote` cell: ship, submit, wait, bring back.

`RemoteCells.run` is the whole life of a cell, on the notebook side:

1. register the cell's source under the file name IPython gives cells (so
   remote tracebacks show its lines) and analyse what it reads and writes;
2. ship the names it reads that the notebook defines, as top-level task
   arguments: ObjectRefs the user holds travel by reference; refs bound by a
   `--bg` cell are resolved first (the cell waits for them, as a dependent
   task); large values go through the object store once;
3. submit one task (`run_cell`), one task per engine (`--all`, pinned with
   `_engine_id`), or one call of the namespace actor (`--on`);
4. blocking: wait; on KeyboardInterrupt cancel the cell's tasks (forcing
   after a grace period) and raise a short KeyboardInterrupt; on `--timeout`
   cancel and raise GetTimeoutError; bind the returned names, return the
   result (IPython displays it); raise the remote error rendered as a local one;
5. `--bg`: bind each assigned name to the ObjectRef of its future value at
   once (names bound only by imports stay remote) and hand the rest to
   `background.BackgroundCells`.

Values travel as copies, as with any task: an object the cell changes in
place comes back only if the cell assigns its name.  A `--on` namespace
keeps its objects; a notebook value is sent to it again only when it is not
the very object last exchanged with that namespace (or with `--push`).
A value that cannot be sent is left out with a warning (the cell then sees
a NameError if it needed it); one that cannot come back stays remote, with
a warning.

Uses only the public API (`shoal.remote`, `get`, `wait`, `cancel`, `put`,
`shoal.util.state`, taken from shoal.core.api, their home: the magics sit
below the `shoal` facade), and the runtime handle for the client's output hooks.
"""
from __future__ import annotations

import ast
import contextlib
import re
import signal
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass, field
from typing import Optional

from IPython.core.error import UsageError


from ..core import api, backend
from ..exceptions import ActorDiedError, GetTimeoutError, TaskCancelledError
from ..protocol.serialization import SerializationError, serialize
from ..util import state
from . import errors
from .analysis import analyze, magic_calls
from .options import CellOptions
from .runner import RemoteNamespace, Unavailable, run_cell

CANCEL_GRACE = 1.0        # seconds a cancelled cell gets to stop before its engine is killed
ENGINES_TIMEOUT = 10.0    # how long --all waits for a new cluster's engines to join
NAMESPACE_GROUP = "shoal.remote"      # the actor namespace of --on namespaces
_SIMPLE = (type(None), bool, int, float, complex, str, bytes)
_SHOAL_MAGIC = "shoal's own magics run in the notebook (put it in a cell of its own)"
_HISTORY = "it works on this notebook's history, which the engine does not have"
NOT_REMOTE = {**dict.fromkeys(("remote", "autoremote", "cluster", "timeline", "objects"),
                              _SHOAL_MAGIC),
              **dict.fromkeys(("history", "hist", "recall", "rerun", "edit", "ed", "load",
                               "macro", "save", "store", "notebook"), _HISTORY),
              **dict.fromkeys(("qtconsole", "connect_info", "autosave"),
                              "it acts on this notebook's kernel")}
_IPYTHON_NAMES = re.compile(r"^(_+|_i+|_i?\d+|_[dio]h|_sh|In|Out|get_ipython|exit|quit)$")


@dataclass
class Submitted:
    """What a cell put on the cluster: one list of return refs per task."""
    tasks: list                       # [[result ref, ref of pull[0], ...], ...]
    labels: list                      # per task: "" or the engine id (--all)
    pull: list
    spec: dict
    opts: CellOptions
    title: str
    namespace: Optional["Namespace"] = None
    sent: dict = field(default_factory=dict)   # name -> value shipped


class Namespace:
    """The notebook's view of one `--on` namespace: its actor, and which
    notebook values it already holds (so they are not shipped again)."""

    def __init__(self, name: str, handle, client) -> None:
        self.name = name
        self.handle = handle
        self.client = client
        self.token = None
        self._synced: dict = {}

    def in_sync(self, name: str, value) -> bool:
        ref = self._synced.get(name)
        return ref is not None and ref() is value

    def mark(self, name: str, value) -> None:
        try:
            self._synced[name] = weakref.ref(value)
        except TypeError:                           # ints, lists, dicts: hold them
            self._synced[name] = lambda value=value: value

    def forget(self, name: str) -> None:
        self._synced.pop(name, None)

    def dropped(self, names, user_ns: dict) -> list:
        """Of `names`, those this namespace got from the notebook (or gave it)
        that the notebook has deleted since; forgotten here, to be deleted there."""
        gone = sorted(n for n in names if n in self._synced and n not in user_ns)
        for name in gone:
            self.forget(name)
        return gone

    def seen(self, token) -> None:
        if token is not None and token != self.token:
            if self.token is not None:
                self._synced.clear()               # the actor restarted: its namespace is new
            self.token = token


class RemoteCells:
    """Runs `%%remote` cells for one IPython shell."""

    def __init__(self, shell, router, cluster, background) -> None:
        self.shell = shell
        self.router = router
        self.cluster = cluster
        self.background = background
        self.namespaces: dict = {}
        self.futures = _Futures()         # refs bound by --bg cells
        self._functions: dict = {}
        self._actor_class = None

    # ------------------------------------------------------------------ the cell
    def run(self, body: str, opts: CellOptions, magic_line: Optional[str]):
        """Run `body` remotely; the cell's result (or None).  `magic_line`
        is the `%%remote ...` line above the body (None for %remote and
        %autoremote cells, whose code starts on the cell's first line)."""
        rt = self.cluster.ensure()
        number = self.shell.execution_count
        pad = 0 if magic_line is None or opts.auto else 1
        raw = body if pad == 0 else f"{magic_line}\n{body}"
        filename = self.shell.compile.cache(raw, number, raw_code=raw)
        source, magics = "\n" * pad + body, False
        try:
            cell = analyze(source, filename)
        except SyntaxError as exc:
            source, magics = self._with_magics(body, pad, exc)
            cell = analyze(source, filename, self.shell.transform_cell)
        title = opts.name or f"cell In[{number}]"
        owner = getattr(rt, "client", rt)        # what a --on namespace belongs to
        namespace = self._namespace(opts, owner) if opts.on is not None else None
        send = self._names_to_send(cell, opts, namespace)
        pull = list(opts.pull) if opts.pull is not None else \
            [n for n in cell.writes if not _IPYTHON_NAMES.match(n)
             and not (opts.bg and n in cell.imports)]   # a module is no future value
        pull += [n for n in sorted(cell.deletes) if n not in pull]
        user_ns = self.shell.user_ns
        spec = {"source": source, "filename": filename, "names": [], "pull": pull,
                "deletes": sorted(cell.deletes), "result": cell.has_result and not cell.quiet,
                "star": list(cell.star_imports), "magics": magics,
                # What the notebook lacks, or has and the cell does not read, stays
                # as it is unless the cell binds it (see runner._run)...
                "absent": [n for n in pull if n not in user_ns],
                "aside": [n for n in pull if n in user_ns and n not in cell.reads
                          and n not in cell.deletes],
                # ...and a namespace forgets what the notebook deleted since.
                "drop": namespace.dropped({*cell.reads, *cell.writes, *cell.deletes}, user_ns)
                if namespace is not None else []}
        with _InterruptsHeld() as held:
            job = self._submit(spec, send, opts, title, namespace)
        if held.interrupted:
            self.cancel(job)
            raise errors.interrupted(self.shell, f"{job.title} was cancelled on the cluster")
        if opts.bg:
            self._bind_futures(job)
            self.background.start(job, self.router.sink.current_parent())
            return None
        outcomes = self._wait(job)
        return self.finish(job, outcomes)

    def _with_magics(self, body: str, pad: int, exc: SyntaxError) -> tuple:
        """A body that is not plain Python may hold magics (`%%time` on its
        first line, `%time` or `!ls` in it): IPython's own transform makes
        them Python that runs them on the engine's shell.  Magics that only
        make sense in this notebook fail here, by name."""
        source = "\n" * pad + self.shell.transform_cell(body)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            raise errors.syntax_error(self.shell, exc) from None
        for kind, name, _, _ in magic_calls(tree):
            why = NOT_REMOTE.get(name)
            if why is not None:
                mark = "%%" if kind == "cell" else "%"
                raise UsageError(f"%%remote: error: {mark}{name} cannot run on the cluster: {why}")
        return source, True

    def _names_to_send(self, cell, opts: CellOptions, namespace) -> list:
        user_ns = self.shell.user_ns
        if opts.push is not None:
            missing = [n for n in opts.push if n not in user_ns]
            if missing:
                raise UsageError(f"%%remote: error: --push: name {missing[0]!r} is not defined")
            return list(opts.push)
        hidden = self.shell.user_ns_hidden
        send = [n for n in sorted(cell.reads) if n in user_ns and not _IPYTHON_NAMES.match(n)
                and not (n in hidden and hidden[n] is user_ns[n])]
        if namespace is not None:
            send = [n for n in send if not namespace.in_sync(n, user_ns[n])]
        return send

    # ------------------------------------------------------------------ submitting
    def _submit(self, spec: dict, send: list, opts: CellOptions, title: str, namespace) -> Submitted:
        user_ns = self.shell.user_ns
        is_ref = backend.current().is_ref
        while True:
            names, values, byref = [], [], {}
            for n in send:
                v = user_ns[n]
                if is_ref(v) and v not in self.futures:
                    byref[n] = v
                else:
                    names.append(n)
                    values.append(v)
            spec["names"] = names
            job = Submitted([], [], spec["pull"], spec, opts, title, namespace,
                            {n: user_ns[n] for n in send})
            try:
                self._launch(job, byref, values)
                return job
            except TypeError:        # shoal's SerializationError, or Ray's for an argument
                bad = [n for n, v in zip(names, values) if not _serializes(v)]
                if not bad:
                    raise
                for n in bad:
                    _warn(f"not sending {n!r} ({type(user_ns[n]).__name__}) to the cluster: "
                          f"it cannot be serialized")
                send = [n for n in send if n not in bad]

    def _launch(self, job: Submitted, byref: dict, values: list) -> None:
        opts, spec = job.opts, job.spec
        n = 1 + len(job.pull)
        bk = backend.current()
        if opts.on is not None:
            with self.router.labelled(""):
                refs = job.namespace.handle.run.options(num_returns=n).remote(
                    self._routed(bk, spec), byref, *values)
            job.tasks.append(_as_list(refs))
            job.labels.append("")
            return
        fn = self._function(opts, n, job.title)
        if not opts.all:
            with self.router.labelled(""):
                job.tasks.append(_as_list(fn.remote(self._routed(bk, spec), byref, *values)))
            job.labels.append("")
            return
        engines = self._pool_engines()
        if len(engines) > 1:          # one copy in the store, not one per engine
            values = [v if type(v) in _SIMPLE or bk.is_ref(v) else api.put(v)
                      for v in values]
        short = len({e["host"] for e in engines}) == 1 and bk is backend.NATIVE
        for e in engines:
            label = e["id"].rsplit(".", 1)[-1] if short else e["id"][:12]
            with self.router.labelled(f"[{label}] "):
                refs = fn.options(**bk.pin(e)).remote(self._routed(bk, spec), byref, *values)
            job.tasks.append(_as_list(refs))
            job.labels.append(label)

    def _routed(self, bk, spec: dict) -> dict:
        """The cell spec, with the backend's route for the cell's output where it
        has one (call in the `labelled` block of the task it goes with)."""
        route = bk.output_route(self.router)
        return spec if route is None else {**spec, "output": route}

    def _function(self, opts: CellOptions, num_returns: int, title: str):
        key = (opts.num_cpus, opts.num_gpus, tuple(sorted((opts.resources or {}).items())),
               opts.retries)
        base = self._functions.get(key)
        if base is None:
            options = {}
            if opts.num_cpus is not None:
                options["num_cpus"] = opts.num_cpus
            if opts.num_gpus is not None:
                options["num_gpus"] = opts.num_gpus
            if opts.resources:
                options["resources"] = dict(opts.resources)
            if opts.retries is not None:
                options["max_retries"] = opts.retries
                options["retry_exceptions"] = opts.retries > 0
            try:
                base = api.remote(**options)(run_cell) if options else api.remote(run_cell)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"%%remote: error: {exc}") from None
            self._functions[key] = base
        return base.options(num_returns=num_returns, name=title)

    def _pool_engines(self) -> list:
        """Where --all runs (backend.workers(): shoal's engines, once a new
        cluster's have all joined; Ray's nodes)."""
        bk = backend.current()
        if bk is not backend.NATIVE:
            workers = bk.workers()
            if not workers:
                raise RuntimeError(f"the {bk.name} cluster has no nodes with CPUs to run --all on")
            return workers
        deadline = time.monotonic() + ENGINES_TIMEOUT
        while True:
            hosts = state.list_hosts()
            engines = sorted(bk.workers(), key=lambda e: e["id"])
            want = int(sum(h["resources"].get("CPU", 0) for h in hosts))
            if len(engines) >= want and engines or time.monotonic() > deadline:
                if not engines:
                    raise RuntimeError("the cluster has no engines to run --all on")
                return engines
            time.sleep(0.05)

    def _namespace(self, opts: CellOptions, client) -> Namespace:
        ns = self.namespaces.get(opts.on)
        if ns is not None and ns.client is client:
            return ns
        if self._actor_class is None:
            self._actor_class = api.remote(RemoteNamespace)
        options = {"name": opts.on, "namespace": NAMESPACE_GROUP, "get_if_exists": True}
        for key in ("num_cpus", "num_gpus", "resources"):
            if getattr(opts, key) is not None:
                options[key] = getattr(opts, key)
        try:
            handle = self._actor_class.options(**options).remote()
        except (ValueError, TypeError) as exc:
            raise UsageError(f"%%remote: error: {exc}") from None
        ns = self.namespaces[opts.on] = Namespace(opts.on, handle, client)
        return ns

    def forget_cluster(self) -> None:
        """The cluster went: drop what belonged to it."""
        self.namespaces.clear()
        self._functions.clear()
        self._actor_class = None

    # ------------------------------------------------------------------ waiting
    def _wait(self, job: Submitted) -> list:
        firsts = [t[0] for t in job.tasks]
        try:
            _, pending = api.wait(firsts, num_returns=len(firsts), timeout=job.opts.timeout)
            if not pending:
                return collect(job)
        except KeyboardInterrupt:
            self.cancel(job)
            raise errors.interrupted(self.shell, f"{job.title} was cancelled on the cluster") \
                from None
        self.cancel(job)
        exc = GetTimeoutError(f"{job.title} did not finish in {job.opts.timeout:g} s and "
                              f"was cancelled on the cluster")
        raise errors.shown(exc, errors.short_traceback(self.shell, exc))

    def cancel(self, job: Submitted) -> None:
        """Cancel a cell's tasks: KeyboardInterrupt into them; after
        CANCEL_GRACE seconds (or a second interrupt) kill the engines of pool
        tasks still running.  A namespace actor is never killed."""
        firsts = [t[0] for t in job.tasks]
        with _InterruptsHeld() as held:
            for ref in firsts:
                api.cancel(ref)
        pending = firsts
        if not held.interrupted:
            try:
                _, pending = api.wait(firsts, num_returns=len(firsts), timeout=CANCEL_GRACE)
            except KeyboardInterrupt:
                pass
        if pending and job.namespace is None:
            with _InterruptsHeld():
                for ref in pending:
                    api.cancel(ref, force=True)
        elif pending:
            _warn(f"namespace {job.namespace.name!r} is still busy with the cancelled cell")

    # ------------------------------------------------------------------ results
    def finish(self, job: Submitted, outcomes: list):
        """Bind what came back; return the result; raise the remote error."""
        failures = [(label, o) for label, o in zip(job.labels, outcomes)
                    if isinstance(o, BaseException)]
        if failures:
            self._forget_lost_namespace(job, failures)
            raise self._error(job, failures, len(outcomes))
        if job.namespace is not None:
            job.namespace.seen(outcomes[0][0][0])
            for name, value in job.sent.items():
                job.namespace.mark(name, value)
        bound = {n: v for n, v in outcomes[0][0][2].items() if not isinstance(v, Unavailable)}
        for i, name in enumerate(job.pull, start=1):
            values = [o[i] for o in outcomes]
            value = values[0] if not job.opts.all else _combine(values)
            if isinstance(value, Unavailable):
                self._unavailable(job, name, value)
                continue
            bound[name] = value
        if bound:
            self.shell.push(bound, interactive=True)
            if job.namespace is not None:
                for name, value in bound.items():
                    job.namespace.mark(name, value)
        return result_of(job, outcomes)

    def _unavailable(self, job: Submitted, name: str, value: Unavailable) -> None:
        user_ns = self.shell.user_ns
        if value.kind == "deleted":
            user_ns.pop(name, None)
            if job.namespace is not None:
                job.namespace.forget(name)
        elif value.kind == "unserializable":
            if job.namespace is not None:
                if name in user_ns:
                    job.namespace.mark(name, user_ns[name])
                _warn(f"{name!r} ({value.type_name}) stays in namespace {job.namespace.name!r}: "
                      f"it cannot be serialized ({value.reason})")
            else:
                _warn(f"{name!r} ({value.type_name}) could not come back from the cluster: "
                      f"{value.reason}")

    def _error(self, job: Submitted, failures: list, total: int) -> BaseException:
        label, err = next(((lb, e) for lb, e in failures
                           if not isinstance(e, TaskCancelledError)), failures[0])
        header = None
        if job.opts.all:
            header = f"[{label}] failed" + (f" ({len(failures)} of {total} engines failed)"
                                             if total > 1 else "")
        if isinstance(err, TaskCancelledError):
            exc = errors.interrupted(self.shell, f"{job.title} was cancelled on the cluster")
            return errors.shown(exc, ([header] if header else []) + exc._render_traceback_())
        return errors.remote_exception(self.shell, err, header)

    def _forget_lost_namespace(self, job: Submitted, failures: list) -> None:
        if job.namespace is not None and any(isinstance(e, ActorDiedError) for _, e in failures):
            if self.namespaces.get(job.namespace.name) is job.namespace:
                del self.namespaces[job.namespace.name]
            _warn(f"namespace {job.namespace.name!r} was lost; the next --on "
                  f"{job.namespace.name} cell starts a new one")

    def _bind_futures(self, job: Submitted) -> None:
        bound = {}
        for i, name in enumerate(job.pull, start=1):
            refs = [t[i] for t in job.tasks]
            for r in refs:
                self.futures.add(r)
            bound[name] = refs if job.opts.all else refs[0]
        if bound:
            self.shell.push(bound, interactive=True)
            if job.namespace is not None:
                for name, value in bound.items():
                    job.namespace.mark(name, value)


class _InterruptsHeld:
    """Holds SIGINT back while a block sends messages: a KeyboardInterrupt
    raised inside a send that went through (Python checks for signals after
    each write) would lose the refs of a task that runs anyway.  After the
    block, `interrupted` says whether one came.  Main thread only (elsewhere
    it holds nothing back)."""

    def __enter__(self) -> "_InterruptsHeld":
        self.interrupted = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._note)
            except ValueError:
                pass
        return self

    def _note(self, signum, frame) -> None:
        self.interrupted = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def collect(job: Submitted, figures_guard: bool = True) -> list:
    """Each task's values, or the exception it failed with."""
    out = []
    backend.current().flush_output()     # the cells' output, before their results
    with _no_new_figures() if figures_guard else contextlib.nullcontext():
        for refs in job.tasks:
            try:
                out.append(api.get(refs))
            except Exception as exc:
                out.append(exc)
    return out


def result_of(job: Submitted, outcomes: list):
    """The cell's result: the last expression's value (a list with --all;
    None, which shows nothing, when every engine's is None)."""
    if not job.spec["result"]:
        return None
    results = [o[0][1] for o in outcomes]
    if not job.opts.all:
        return results[0]
    return None if all(r is None for r in results) else results


@contextlib.contextmanager
def _no_new_figures():
    """A matplotlib figure that comes back registers itself with pyplot, and
    the kernel's inline backend would show it a second time: unregister it
    (the Figure object stays usable)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    before = set(pyplot.get_fignums()) if pyplot is not None else set()
    try:
        yield
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            for num in set(pyplot.get_fignums()) - before:
                pyplot.close(num)


def _combine(values: list):
    """--all: one value per engine, except a module (an import), bound once."""
    first = values[0]
    if isinstance(first, types.ModuleType) and all(v is first for v in values):
        return first
    if all(isinstance(v, Unavailable) and v.kind == first.kind for v in values) \
            if isinstance(first, Unavailable) else False:
        return first
    return values


class _Futures:
    """The refs --bg cells bound (a cell that reads one waits for it): weakly
    held where refs allow it (shoal's), else by id, the newest MAX kept (Ray's)."""
    MAX = 100_000

    def __init__(self) -> None:
        self._weak: weakref.WeakSet = weakref.WeakSet()
        self._ids: dict = {}

    def add(self, ref) -> None:
        try:
            self._weak.add(ref)
        except TypeError:
            self._ids[ref.hex()] = True
            if len(self._ids) > self.MAX:
                del self._ids[next(iter(self._ids))]

    def __contains__(self, ref) -> bool:
        if ref in self._weak:
            return True
        key = getattr(ref, "hex", None)
        return bool(self._ids) and callable(key) and key() in self._ids


def _as_list(refs) -> list:
    return list(refs) if isinstance(refs, list) else [refs]


def _serializes(value) -> bool:
    try:
        serialize(value)
        return True
    except SerializationError:
        return False


def _warn(text: str) -> None:
    print(f"shoal: {text}", file=sys.stderr)


__all__ = ["RemoteCells", "Submitted", "Namespace", "collect", "result_of"]
