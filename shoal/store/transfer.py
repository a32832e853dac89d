"""Moving objects between hosts: each host agent serves its store's files;
a process on another host fetches them straight into its own store.

The bytes never pass through the scheduler and are never held whole in a
process: the server streams the file with sendfile(2), the receiver reads
the socket directly into the memory map of the new file.  Connections
authenticate with the cluster key like every other shoal connection.
"""
from __future__ import annotations

import logging
import mmap
import os
import socket
import threading
from typing import Optional

from ..protocol import messages as m
from ..protocol import tls
from ..protocol.connection import Connection
from .shm import HostStore, write_atomically

log = logging.getLogger("shoal.transfer")
CHUNK = 8 << 20
SOCKET_BUFFER = 4 << 20       # big kernel buffers: fewer wake-ups per megabyte moved


class ObjectServer:
    """Serves one host's objects to other hosts.  Runs in the host agent."""

    def __init__(self, store: HostStore, key: bytes, host: str = "127.0.0.1",
                 tls_dir: Optional[str] = None) -> None:
        """Listen on `host` (loopback unless this host must be reachable from
        others; then over TLS, with a certificate made in `tls_dir`); 0.0.0.0
        advertises this machine's hostname address."""
        self._tls = tls.ServerTLS.create(tls_dir or store.spill_dir, "objects") \
            if tls.needs_tls(host) else None
        self.store = store
        self._key = key
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        bound = self._sock.getsockname()
        advertised = bound[0]
        if advertised in ("0.0.0.0", "::"):
            advertised = socket.gethostbyname(socket.gethostname())
        self.address = f"{advertised}:{bound[1]}"
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="object-server",
                                        daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), name="object-send",
                             daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        try:
            conn = Connection.accept(sock, self._key, server_tls=self._tls)
        except (OSError, ConnectionError) as exc:
            log.warning("refused an object-transfer connection: %s", exc)
            return
        try:
            while True:
                msg = conn.recv()
                if not isinstance(msg, m.FetchObject):
                    raise ValueError(f"unexpected {type(msg).__name__}")
                self._send_object(conn, msg.object_id)
        except (OSError, ConnectionError, ValueError) as exc:
            if not isinstance(exc, ConnectionError):
                log.warning("object transfer connection failed: %s", exc)
        finally:
            conn.close()

    def _send_object(self, conn: Connection, object_id: str) -> None:
        path = self.store.existing_path(object_id)
        if path is None:
            conn.send(m.ObjectData(object_id=object_id, size=0, found=False))
            return
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            conn.send(m.ObjectData(object_id=object_id, size=size, found=True))
            conn.sock.sendfile(f, 0, size)

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass


def fetch_object(address: str, key: bytes, object_id: str,
                 store: Optional[HostStore]) -> Optional[memoryview]:
    """Copy an object from the host serving at `address`.

    With a local store the bytes land in it (and are read from there like any
    local object); returns None.  Without one (a driver on no host), returns
    the packed bytes.  Raises FileNotFoundError if that host does not have it,
    OSError if the host cannot be reached.
    """
    conn = Connection.connect(address, key)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    try:
        conn.send(m.FetchObject(object_id=object_id))
        reply = conn.recv()
        if not isinstance(reply, m.ObjectData) or not reply.found:
            raise FileNotFoundError(f"host at {address} has no object {object_id}")
        head = conn.take_buffered()
        if store is None:
            data = bytearray(reply.size)
            _receive_into(conn.sock, memoryview(data), head)
            return memoryview(data)
        def fill(fd: int) -> None:
            # Reserve the pages before mapping them: a full tmpfs fails here, not
            # with SIGBUS in the middle of the copy.
            os.posix_fallocate(fd, 0, reply.size)
            with mmap.mmap(fd, reply.size) as mm:
                _receive_into(conn.sock, memoryview(mm), head)

        # Two processes may fetch the same object at once: each its own temp file.
        write_atomically(store.path_for(object_id), fill,
                         f".{os.getpid()}.{threading.get_ident()}.part")
        return None
    finally:
        conn.close()


def _receive_into(sock: socket.socket, dest: memoryview, head: bytes) -> None:
    dest[:len(head)] = head
    at, size = len(head), dest.nbytes
    while at < size:
        n = sock.recv_into(dest[at:at + CHUNK])
        if n == 0:
            raise ConnectionError(f"the object stream ended after {at} of {size} bytes")
        at += n
