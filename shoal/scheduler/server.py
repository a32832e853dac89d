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

from ..protocol.server import ServerConnection
from .state import SchedulerState

log = logging.getLogger("shoal.scheduler")
SHUTDOWN_GRACE = 3.0      # seconds agents get to stop their engines


class SchedulerServer:
    def __init__(self, state: SchedulerState, key: bytes, sock: socket.socket) -> None:
        self.state = state
        self._key = key
        self._sock = sock
        self._flush_scheduled = False
        self._stopped: asyncio.Event | None = None

    async def run(self, owner_fd: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await loop.create_server(
            lambda: ServerConnection(self._key, self._on_message, self._on_close), sock=self._sock)
        if owner_fd is not None:
            loop.add_reader(owner_fd, self._owner_readable, owner_fd)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
        log.info("scheduler serving on %s", self._sock.getsockname())
        await self._stopped.wait()
        server.close()
        # Give agents a moment to stop their engines, then go.
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.state.hosts and loop.time() < deadline:
            await asyncio.sleep(0.02)
        log.info("scheduler stopped")

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
        self.state.handle(conn, msg)
        if self.state.stopping and not self._stopped.is_set():
            self._stopped.set()
        self._schedule_flush()

    def _on_close(self, conn) -> None:
        self.state.connection_closed(conn)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for conn, msg in self.state.take_output():
            conn.send(msg)
