"""The scheduler process: an asyncio shell around SchedulerState.

It accepts authenticated connections (protocol/server.py), feeds each message
to the state machine and writes out what the state machine asks for, once per
loop iteration.  It stops on a Shutdown message, when its owner goes away
(the read end of the owner pipe sees EOF), or on SIGTERM.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from ..protocol import tls
from ..protocol.server import ServerConnection
from .state import HEARTBEAT_INTERVAL, SchedulerState

log = logging.getLogger("shoal.scheduler")
SHUTDOWN_GRACE = 3.0      # seconds agents get to stop their engines
EVENT_INTERVAL = 0.1      # widgets get at most ~10 updates a second


class SchedulerServer:
    def __init__(self, state: SchedulerState, key: bytes, socks: list,
                 tls_files: tuple = (None, None)) -> None:
        self.state = state
        state.batch_placement = True      # one placement pass per read (_flush)
        self._key = key
        self._socks = socks       # listening sockets: TCP, and a Unix one for local peers
        self._tls_files = tls_files   # a user's (cert, key); else one is made if needed
        self._stopped: asyncio.Event | None = None

    async def run(self, owner_fd: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        servers = []
        for sock in self._socks:
            if sock.family == socket.AF_UNIX:
                servers.append(await loop.create_unix_server(self._factory(None), sock=sock))
            elif tls.needs_tls(sock.getsockname()[0]):      # links that leave the host
                server_tls = tls.ServerTLS.create(self.state.session_dir, "scheduler",
                                                  *self._tls_files)
                servers.append(await loop.create_server(self._factory(server_tls), sock=sock))
            else:
                servers.append(await loop.create_server(self._factory(None), sock=sock))
        if owner_fd is not None:
            loop.add_reader(owner_fd, self._owner_readable, owner_fd)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
        loop.call_later(EVENT_INTERVAL, self._send_events)
        loop.call_later(HEARTBEAT_INTERVAL, self._heartbeat)
        log.info("scheduler serving on %s", ", ".join(str(s.getsockname()) for s in self._socks))
        await self._stopped.wait()
        for server in servers:
            server.close()
        # Give agents a moment to stop their engines, then go.
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.state.hosts and loop.time() < deadline:
            await asyncio.sleep(0.02)
        log.info("scheduler stopped")

    def _factory(self, server_tls):
        return lambda: ServerConnection(self._key, self._on_message, self._on_close,
                                        self._flush, server_tls)

    def stop(self, reason: str = "") -> None:
        if not self.state.stopping:
            log.info("stopping the cluster: %s", reason)
            self.state.shutdown(reason)
            self._flush()
        self._stopped.set()

    def _owner_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            self.stop("the owner process is gone")

    def _on_message(self, conn, msg) -> None:
        try:
            self.state.handle(conn, msg)
        except AssertionError as exc:
            if not self.state.strict:
                raise
            # A strict scheduler (SHOAL_STRICT_STATES=1, the tests) found a bug: an
            # illegal transition or a stale index.  Closing only this peer's
            # connection could let a test pass around it; stopping the cluster
            # makes every driver see ClusterLostError with the reason.
            log.critical("strict scheduler: %s", exc, exc_info=True)
            self.stop(f"scheduler bug (strict states): {exc}")
            return
        if self.state.stopping and not self._stopped.is_set():
            self._stopped.set()

    def _on_close(self, conn) -> None:
        self.state.connection_closed(conn)

    def _heartbeat(self) -> None:
        for conn in self.state.heartbeat():
            conn.close()                 # as if it hung up: its host is lost
        self._flush()
        if not self._stopped.is_set():
            asyncio.get_running_loop().call_later(HEARTBEAT_INTERVAL, self._heartbeat)

    def _send_events(self) -> None:
        _send_all(self.state.take_events())
        if not self._stopped.is_set():
            asyncio.get_running_loop().call_later(EVENT_INTERVAL, self._send_events)

    def _flush(self) -> None:
        """After each read (or close): send what the state machine produced."""
        _send_all(self.state.take_output())


def _send_all(pairs: list) -> None:
    """Queue each (conn, msg), then write once per connection."""
    touched = {}
    for conn, msg in pairs:
        conn.send(msg)
        touched[conn] = None
    for conn in touched:
        conn.flush()
