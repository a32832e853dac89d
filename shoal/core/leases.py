"""Engines the scheduler lends this driver: its plain tasks go to them straight.

A task relayed by the scheduler crosses three processes before it runs; one
sent to its engine crosses two.  The scheduler lends a driver the idle engine
its task just ended on, while nothing else waits to run (scheduler/leases.py):
then a task with nothing to resolve (no ref arguments, one CPU, no placement
or pinning, not a generator, no packages in its runtime_env, no refs in its
code) goes down the engine's connection to our reply channel (ExecuteTask,
with the function's code the first time), and to the scheduler as the
record of a task running there (SubmitTask.direct_to), as a straight actor
call does (direct_calls.py).  Its results come back the same way.  One task
at a time per leased engine: a burst goes through the scheduler, which
spreads it over the cluster, and asks the leases back to do so.

Asked back (RevokeLease), a lease is returned (LeaseReturned) after the
records of every task sent there; a submission that raced the revoke is sent
to the scheduler only.  `SHOAL_LEASES=0` in the driver's environment turns
leases off.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from ..protocol import messages as m

PLAIN = {"CPU": 1.0}          # the only request a leased engine runs


def enabled() -> bool:
    return os.environ.get("SHOAL_LEASES", "1") != "0"


class Lease:
    __slots__ = ("engine_id", "active", "running", "shipped")

    def __init__(self, engine_id: str) -> None:
        self.engine_id = engine_id
        self.active = True            # until asked back (changed under the send lock)
        self.running: Optional[str] = None   # the task sent there whose result is not here yet
        self.shipped: set = set()     # function ids whose code went down its connection


class Leases:
    def __init__(self, client, channel) -> None:
        self._client = client
        self._channel = channel
        self._leases: dict = {}       # engine id -> Lease
        self._running: dict = {}      # task id -> its Lease
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the scheduler's word
    def granted(self, engine_id: str) -> None:
        """Lent, or lent still with no task of ours there (the last one failed
        or was cancelled: its result, if any, came through the scheduler)."""
        with self._lock:
            lease = self._leases.get(engine_id)
            if lease is None:
                self._leases[engine_id] = Lease(engine_id)
            elif lease.running is not None:
                self._running.pop(lease.running, None)
                lease.running = None

    def revoked(self, engine_id: str) -> None:
        """Asked back: no task goes there from now on; the records of those
        that went are sent before LeaseReturned (Client.send's order)."""
        with self._lock:
            lease = self._leases.pop(engine_id, None)
            if lease is not None and lease.running is not None:
                self._running.pop(lease.running, None)
        if lease is not None:
            self._client.deactivate(lease)
        self._client.send(m.LeaseReturned(engine_id=engine_id))

    # ------------------------------------------------------------------ sending
    def route(self, task_id: str, func_id: str, blob: bytes, retry: Optional[bytes],
              name: str, args: bytes, return_ids: list, job: tuple,
              runtime_env: Optional[dict]) -> Optional[tuple]:
        """(lease, connection, ExecuteTask) for a plain task if a leased engine
        waits for one; None: the scheduler places it."""
        if not self._leases:
            return None
        found = None
        unusable = []
        with self._lock:
            for lease in self._leases.values():
                if lease.running is None:
                    conn = self._channel.engine_connection(lease.engine_id)
                    if conn is not None:
                        found = lease
                        break
                    unusable.append(lease)
            for gone in unusable:             # its engine closed the connection, or died
                del self._leases[gone.engine_id]
            if found is not None:
                found.running = task_id
                self._running[task_id] = found
                first = func_id not in found.shipped
                found.shipped.add(func_id)
        for gone in unusable:                 # (none of ours is on its way there)
            self._client.send(m.LeaseReturned(engine_id=gone.engine_id))
        if found is None:
            return None
        msg = m.ExecuteTask(task_id=task_id, func_id=func_id, func_blob=blob if first else None,
                            func_retry=retry if first else None, name=name, args=args,
                            dep_values=[], return_ids=return_ids, gpu_ids=[], job=job,
                            resources=PLAIN, runtime_env=runtime_env)
        return found, conn, msg

    def unsent(self, lease: Lease, task_id: str) -> None:
        """The lease was asked back before the task went: it is not there."""
        with self._lock:
            if lease.running == task_id:
                lease.running = None
            self._running.pop(task_id, None)

    def arrived(self, entries: list) -> None:
        """Results came (straight, or pushed: a failure): their task's engine
        waits for the next one.  Called on the reader thread."""
        with self._lock:
            for e in entries:
                lease = self._running.pop(e.object_id.rpartition("/")[0], None)
                if lease is not None:         # (its running task is this one)
                    lease.running = None

    @property
    def held(self) -> bool:
        """Whether any engine is lent to us now."""
        return bool(self._leases)

    @property
    def waiting(self) -> bool:
        """Whether a task sent to a leased engine has no result here yet."""
        return bool(self._running)


def eligible(deps: list, nested: list, puts: list, generator, resources: dict,
             placement, engine_id, max_calls, runtime_env) -> bool:
    """A task an engine can run as it comes, on one CPU, anywhere, needing no
    object the scheduler may not know yet when it starts: no refs among its
    arguments, none put for it, no packages in its runtime_env (a working_dir
    or py_modules: the engine fetches them through the scheduler, which hears
    of a new one from us on another connection)."""
    return (not deps and not nested and not puts and generator is None and resources == PLAIN
            and not placement and engine_id is None and not max_calls
            and not (runtime_env and (runtime_env.get("working_dir")
                                      or runtime_env.get("py_modules"))))
