"""A driver's reply channel: results straight from same-host engines.

A result relayed through the scheduler costs two framed hops and a turn of
its loop (~0.4 ms end to end here); one hop costs ~0.08 ms.  So a driver
listens on a Unix socket in the session dir (mode 0600) and tells the
scheduler (messages.ReplyChannel); an engine on this machine running one of
its tasks tells the scheduler the task finished (TaskFinished.delivered: it
sends the results here too), then sends a plain success here (ObjectsReady,
after the task's output).  The scheduler skips this driver's push, unless the
send fails (the engine says so) or the engine dies in between: then it pushes
them after all, and the driver keeps the first entry it gets.  Everything
else goes through the scheduler only.

Every connection proves the cluster key (auth.py) before a byte of it is
decoded; one that fails, or sends anything but EngineHello (first) /
ObjectsReady / TaskOutput, or bytes that are not messages, is closed: it
never takes the driver down.  An actor's engine names its actor in its
EngineHello: the driver then sends that actor's plain calls back down the
connection (direct_calls.py); a pool engine lent to the driver gets its
tasks the same way (leases.py).

One reader thread serves the scheduler's connection and these with one
selector.  Ready engine connections are read before the scheduler's: what an
engine sent here went out before the scheduler could relay anything of the
same task, so a task's output stays ahead of a result that was relayed.
"""
from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
from typing import Callable, Optional

from ..protocol import messages as m
from ..protocol.connection import UNIX_PREFIX, Connection
from ..protocol.framing import ProtocolError

log = logging.getLogger("shoal.client")
AUTH_TIMEOUT = 10.0
# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS).
MAX_PATH = 100
_ACCEPT, _WAKE = object(), object()


def enabled() -> bool:
    """On unless SHOAL_DIRECT_RESULTS=0 (everything then goes through the scheduler)."""
    return os.environ.get("SHOAL_DIRECT_RESULTS", "1") != "0"


class ReplyChannel:
    def __init__(self, session_dir: str, client_id: str, key: bytes) -> None:
        path = os.path.join(session_dir, f"reply-{client_id}.sock")
        if len(os.fsencode(path)) > MAX_PATH:
            raise OSError(f"the reply socket's path is too long for AF_UNIX: {path}")
        self.path = path
        self.address = UNIX_PREFIX + path
        self._key = key
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = os.path.join(session_dir, f".r-{client_id}")
        try:
            # Bound under another name, made 0600, then moved where engines look.
            listener.bind(staging)
            os.chmod(staging, 0o600)
            os.replace(staging, path)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            for p in (staging, path):
                _unlink(p)
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._adopted: list = []          # authenticated, not yet watched
        self._lock = threading.Lock()
        self._conns: set = set()
        self._actors: dict = {}           # actor id -> (connection, engine id), from EngineHello
        self._engines: dict = {}          # pool engine id -> its connection, from EngineHello
        self._hellos: dict = {}           # connection -> its EngineHello
        self._stopping = False
        self.closed = False

    # ------------------------------------------------------------------ serving
    def serve(self, scheduler: Connection, on_scheduler: Callable, on_direct: Callable) -> None:
        """Read the scheduler's connection and the engines' until the
        scheduler's fails (its error is raised).  on_direct(msg) may raise
        ProtocolError: that engine's connection is closed."""
        sel = selectors.DefaultSelector()
        try:
            sel.register(scheduler.sock, selectors.EVENT_READ, None)
            sel.register(self._listener, selectors.EVENT_READ, _ACCEPT)
            sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            # What the scheduler sent with its Welcome (read by connect) is here
            # already: the socket will not say so.
            for msg in scheduler.received():
                on_scheduler(msg)
            while True:
                ready = sel.select()
                # The scheduler's first: what it sent may come before what an
                # engine sent since (a nested task's output, relayed, before the
                # result of the call that ran it, sent straight).
                if any(key.data is None for key, _ in ready):
                    for msg in scheduler.recv_ready():
                        on_scheduler(msg)
                for key, _ in ready:
                    if key.data is None:
                        continue
                    elif key.data is _ACCEPT:
                        self._accept()
                    elif key.data is _WAKE:
                        _drain(self._wake_r)
                    else:
                        self._read(sel, key.data, on_direct, 0)
                for conn in self._take_adopted():
                    try:
                        sel.register(conn.sock, selectors.EVENT_READ, conn)
                    except (ValueError, OSError):     # its handshake failed at the last step
                        self._forget(conn)
                        continue
                    self._read(sel, conn, on_direct, socket.MSG_DONTWAIT)   # sent before it was watched
                if self._stopping:
                    raise ConnectionError("the reply channel was stopped")
        finally:
            sel.close()
            self.close()

    def _read(self, sel, conn: Connection, on_direct: Callable, flags: int) -> None:
        try:
            for msg in conn.recv_ready(flags):
                if type(msg) is m.EngineHello:
                    self._hello(conn, msg)
                else:
                    on_direct(msg)
            return
        except ConnectionError:
            pass                        # the engine closed it (idle, or it exited)
        except OSError as exc:
            log.debug("an engine's reply connection failed: %s", exc)
        except Exception as exc:        # not messages, or not ours: never the driver's end
            log.warning("closing an engine's reply connection: %s", exc)
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._forget(conn)

    def _hello(self, conn: Connection, msg: m.EngineHello) -> None:
        if conn in self._hellos or type(msg.engine_id) is not str \
                or not (msg.actor_id is None or type(msg.actor_id) is str):
            raise ProtocolError("a second or malformed EngineHello")
        with self._lock:
            self._hellos[conn] = msg
            if msg.actor_id is not None:
                self._actors[msg.actor_id] = (conn, msg.engine_id)
            else:
                self._engines[msg.engine_id] = conn

    def actor_engine(self, actor_id: str) -> Optional[tuple]:
        """(connection, engine id) of the engine hosting `actor_id`, if it has
        a connection here that is open (see core/direct_calls.py)."""
        found = self._actors.get(actor_id)
        if found is None or found[0].closed:
            return None
        return found

    def engine_connection(self, engine_id: str) -> Optional[Connection]:
        """The open connection of pool engine `engine_id`, if it has one here
        (see core/leases.py)."""
        conn = self._engines.get(engine_id)
        return conn if conn is not None and not conn.closed else None

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._conns.discard(conn)
            hello = self._hellos.pop(conn, None)
            if hello is not None and hello.actor_id is not None \
                    and self._actors.get(hello.actor_id, (None,))[0] is conn:
                del self._actors[hello.actor_id]
            elif hello is not None and self._engines.get(hello.engine_id) is conn:
                del self._engines[hello.engine_id]
        conn.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("the reply channel cannot accept: %s", exc)
                return
            sock.setblocking(True)
            # The handshake waits on the peer: never on this (the reader) thread.
            threading.Thread(target=self._handshake, args=(sock,), name="shoal-reply-auth",
                             daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        try:
            Connection.accept(sock, self._key, timeout=AUTH_TIMEOUT, before_reply=self._adopt)
        except (OSError, ConnectionError) as exc:
            log.warning("refused a connection to the reply channel: %s", exc)

    def _adopt(self, conn: Connection) -> None:
        with self._lock:
            if self.closed:
                raise ConnectionError("the reply channel is closed")
            self._adopted.append(conn)
            self._conns.add(conn)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _take_adopted(self) -> list:
        if not self._adopted:
            return []
        with self._lock:
            taken, self._adopted = self._adopted, []
        return taken

    # ------------------------------------------------------------------ closing
    def stop(self) -> None:
        """Make serve() end (it raises ConnectionError), from another thread.
        Closing the scheduler's connection is not enough: a socket closed while
        the selector waits leaves its set without an event, and serve() would
        wait on the engines' connections."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        """Stop listening and drop every engine's connection.  Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            conns, self._conns, self._adopted = list(self._conns), set(), []
            self._actors.clear()
            self._engines.clear()
        _unlink(self.path)
        self._listener.close()
        for conn in conns:
            conn.close()
        self._wake_w.close()
        self._wake_r.close()


def check_direct(msg) -> None:
    """What an engine may send on a reply connection; anything else is a
    ProtocolError (the connection is closed)."""
    if type(msg) is m.ObjectsReady:
        if type(msg.entries) is list and all(
                type(e) is m.ObjectEntry and type(e.object_id) is str and e.inline is not None
                and not e.error for e in msg.entries):
            return
    elif type(msg) is m.TaskOutput:
        if type(msg.task_id) is str and msg.origin is None:
            return
    raise ProtocolError(f"not a result or output: {type(msg).__name__}")


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _unlink(path: Optional[str]) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, TypeError):
        pass
    except OSError as exc:
        log.debug("could not remove %s: %s", path, exc)
