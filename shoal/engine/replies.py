"""An engine's connections to drivers' reply channels (shoal/core/reply_channel.py).

When the scheduler names a task's owner's channel (ExecuteTask.reply_to),
the task's output and, if it is a plain success, its results go there, a hop
ahead of the scheduler's push (the engine tells the scheduler first:
TaskFinished.delivered).  A connection is opened on first use,
authenticated with the cluster key like every other, and closed when idle.
Any failure returns False: output is then relayed, and results arrive with
the scheduler's push.

Each connection starts with EngineHello.  The engine reads its connections
too: a driver sends an actor's calls down them (core/direct_calls.py), and
its tasks to a pool engine it leases (core/leases.py), handed to
`on_call(msg, address)`.  Those stay open until either end goes (an idle
close could drop a call being sent).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from ..protocol import messages as m
from ..protocol.connection import Connection
from ..protocol.framing import FrameTooLargeError, ProtocolError

log = logging.getLogger("shoal.engine")
IDLE_CLOSE = 30.0          # seconds unused before a connection is closed
RETRY_AFTER = 5.0          # after a failed connect, relay for this long
CONNECT_TIMEOUT = 2.0


class ReplyConnections:
    def __init__(self, key: bytes, engine_id: str, actor_id: Optional[str] = None,
                 on_call: Optional[Callable] = None) -> None:
        self._key = key
        self._hello = m.EngineHello(engine_id=engine_id, actor_id=actor_id)
        self._on_call = on_call         # an actor's engine: calls come back on its connections
        self._lock = threading.Lock()
        self._conns: dict = {}           # address -> Connection
        self._used: dict = {}            # address -> when last sent on
        self._failed: dict = {}          # address -> when its connect failed
        self._closer = None

    def send(self, address: str, msgs: list) -> bool:
        """Send msgs in order on the channel at `address`; False if they may
        not have arrived (the caller relays them)."""
        conn = self._connection(address)
        if conn is None:
            return False
        try:
            conn.send_many(msgs)
        except FrameTooLargeError:
            return False        # nothing was written: the connection (and calls on it) live on
        except (OSError, ValueError) as exc:     # the driver is gone
            log.debug("reply channel %s failed: %s", address, exc)
            self._drop(address, conn)
            return False
        self._used[address] = time.monotonic()
        return True

    def _connection(self, address: str):
        with self._lock:
            conn = self._conns.get(address)
            if conn is not None and not conn.closed:
                return conn
            failed = self._failed.get(address)
            if failed is not None and time.monotonic() - failed < RETRY_AFTER:
                return None
            try:
                conn = Connection.connect(address, self._key, timeout=CONNECT_TIMEOUT)
                conn.send(self._hello)
            except (OSError, ConnectionError) as exc:
                log.debug("no reply channel at %s: %s", address, exc)
                self._failed[address] = time.monotonic()
                return None
            self._failed.pop(address, None)
            self._conns[address] = conn
            self._used[address] = time.monotonic()
            if self._on_call is not None:
                threading.Thread(target=self._read_calls, args=(address, conn),
                                 name="direct-calls", daemon=True).start()
            elif self._closer is None:
                self._closer = threading.Thread(target=self._close_idle, name="reply-idle",
                                                daemon=True)
                self._closer.start()
            return conn

    def _drop(self, address: str, conn: Connection) -> None:
        with self._lock:
            if self._conns.get(address) is conn:
                del self._conns[address]
                self._used.pop(address, None)
        conn.close()

    def _read_calls(self, address: str, conn: Connection) -> None:
        """Hand the calls the driver sends down this connection to on_call,
        until it closes; anything but a call closes it."""
        try:
            while True:
                msg = conn.recv()
                if type(msg) is not m.ExecuteTask:
                    raise ProtocolError(f"not a call or task: {type(msg).__name__}")
                self._on_call(msg, address)
        except (OSError, ConnectionError):
            pass                            # the driver went
        except Exception as exc:            # not messages, or not calls: never the engine's end
            log.warning("closing a driver's connection: %s", exc)
        self._drop(address, conn)

    def _close_idle(self) -> None:
        while True:
            time.sleep(IDLE_CLOSE / 3)
            now = time.monotonic()
            with self._lock:
                idle = [(a, c) for a, c in self._conns.items()
                        if now - self._used.get(a, 0.0) > IDLE_CLOSE]
            for address, conn in idle:
                self._drop(address, conn)
