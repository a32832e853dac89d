"""Actor calls sent straight to the actor's engine, a hop ahead of the scheduler.

A relayed actor call costs a framed hop to the scheduler and a turn of its
loop before the engine sees it.  An actor's engine on this machine that has
sent this driver a result already has a connection to the driver's reply
channel, and says which actor it hosts (EngineHello).  Calls without ref
arguments then go down that connection (ExecuteTask), and the scheduler gets
the same call as a SubmitTask with `direct_to`: it records the call as
running there, owns its refs, and handles the actor's death as for any call
it sent (retry on the restarted actor, or ActorDiedError).  The engine tells
the scheduler the call finished (maybe before the scheduler has the
submission: it keeps such a finish until the submission comes) and then
sends the value back down the same connection.

Order: each caller's calls to an actor start in submission order, as in Ray.
Calls on one connection stay in order.  A call that went another way (through
the scheduler, because it has ref arguments, or down an engine's connection
that has since closed) may still be on its way; so a call goes straight only
once the last call that went another way has its result here (its engine
had received every earlier call by then).  The other direction, a relayed
call after straight ones, is the scheduler's: it holds a caller's relayed
calls while that caller's straight calls run (scheduler/actors.py).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from ..protocol import messages as m

_BLIND = ""          # the last call had no return value to wait for


def enabled() -> bool:
    """On unless SHOAL_DIRECT_CALLS=0 (every actor call then goes through the scheduler)."""
    return os.environ.get("SHOAL_DIRECT_CALLS", "1") != "0"


class _Last:
    """The last call this driver made to one actor: the connection it went
    down (None: through the scheduler), and its first return value, whose
    arrival here says it started (so every call before it had reached the
    engine)."""
    __slots__ = ("conn", "object_id", "arrived")

    def __init__(self, conn, object_id: str) -> None:
        self.conn = conn
        self.object_id = object_id
        self.arrived = False


class DirectCalls:
    """A driver's straight actor calls, over its reply channel's connections."""

    def __init__(self, client, channel) -> None:
        self._client = client
        self._channel = channel
        self._last: dict = {}           # actor id -> _Last
        # actor id -> the connection to the engine this driver killed it on
        # (calls never go down it again), or None: killed for good
        self._killed: dict = {}
        self._lock = threading.Lock()

    def route(self, actor_id: str, return_ids: list, eligible: bool) -> Optional[tuple]:
        """(connection, engine id) to send this call down (the caller sends
        it, with its submission: Client.submit's `straight`), or None: the
        scheduler relays it.  Records the way it goes."""
        client = self._client
        target = self._channel.actor_engine(actor_id) if eligible else None
        if target is not None and actor_id in self._killed \
                and self._killed[actor_id] in (None, target[0]):
            target = None                   # that engine is stopping
        with self._lock:
            last = self._last.get(actor_id)
            if target is not None and last is not None and last.conn is not target[0] \
                    and not (last.arrived or client.ready(last.object_id)):
                target = None               # the call before may not be there yet
            now = self._last[actor_id] = _Last(target[0] if target else None,
                                               return_ids[0] if return_ids else _BLIND)
        if target is None and now.object_id:
            # Relayed: watch for its arrival.  Nothing holds it for that: if its
            # refs are dropped first, it never "arrives", and the next call is
            # relayed too (and watched in its place).
            client.on_arrival(now.object_id, lambda: self._arrived(now))
        return target

    def killed(self, actor_id: str, restarts: bool) -> None:
        """This driver killed the actor: later calls go through the scheduler
        (which fails them, or queues them for the restarted actor), never to
        the engine still alive for a moment; if the actor `restarts`, straight
        again to its new engine."""
        found = self._channel.actor_engine(actor_id) if restarts else None
        if restarts and found is None:
            return                          # no connection to avoid
        self._killed[actor_id] = found[0] if found else None

    @staticmethod
    def _arrived(last: _Last) -> None:
        last.arrived = True


def eligible(deps: list, nested: list, generator: Optional[str]) -> bool:
    """A call the engine can run as it comes: no refs to resolve or count,
    nothing streamed."""
    return not deps and not nested and generator is None


def call_message(task_id: str, name: str, args: bytes, return_ids: list, method: str,
                 concurrency_group: Optional[str]) -> m.ExecuteTask:
    """What the actor's engine gets; it fills in what belongs to its actor
    (GPUs, job, resources)."""
    return m.ExecuteTask(task_id=task_id, func_id=None, func_blob=None, name=name, args=args,
                         dep_values=[], return_ids=return_ids, gpu_ids=[], method=method,
                         concurrency_group=concurrency_group)
