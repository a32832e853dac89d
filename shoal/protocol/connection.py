"""A blocking, authenticated, framed connection for drivers and engines.

The scheduler and agents speak the same frames from asyncio (see
`protocol/server.py`); a driver or engine has a user thread to serve and uses
plain sockets: `send` may be called from any thread (it takes a lock), and one
reader thread calls `recv`.
"""
from __future__ import annotations

import socket
import ssl
import threading
from collections import deque

from . import auth, codec, tls
from .framing import FrameDecoder, ProtocolError, write_gathered

# Processes on the scheduler's machine use its Unix socket: a loopback TCP send
# costs ~45 us of kernel time here, a Unix socket send a fraction of that.
UNIX_PREFIX = "unix:"


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = FrameDecoder()
        self._decoded: deque = deque()      # the rest of a batch recv() took apart
        self._send_lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, address: str, key: bytes, timeout: float = 10.0) -> "Connection":
        """Connect to "HOST:PORT" (TCP) or "unix:PATH" and authenticate."""
        try:
            if address.startswith(UNIX_PREFIX):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(address[len(UNIX_PREFIX):])
                except BaseException:
                    sock.close()
                    raise
            else:
                host, port = parse_address(address)
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except socket.timeout:
            raise TimeoutError(f"cannot connect to a shoal scheduler at {address}: no answer "
                               f"within {timeout:g} s") from None
        except OSError as exc:         # refused, unreachable, unknown host: say where
            error = type(exc)(f"cannot connect to a shoal scheduler at {address}: "
                              f"{exc.strerror or exc}")
            error.errno = exc.errno
            raise error from None
        binding = b""
        try:
            if not address.startswith(UNIX_PREFIX) and tls.needs_tls(host):
                sock, binding = tls.wrap_client(sock)
            server_nonce = _recv_exactly(sock, auth.NONCE_SIZE)
            proof, client_nonce = auth.client_proof(key, server_nonce, binding)
            sock.sendall(proof)
            try:
                reply = _recv_exactly(sock, auth.DIGEST_SIZE)
            except (auth.AuthenticationError, ConnectionResetError):
                raise auth.AuthenticationError(
                    f"{address} refused this connection: wrong cluster key?") from None
            auth.check_server_proof(key, server_nonce, client_nonce, reply, binding)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock)

    @classmethod
    def accept(cls, sock: socket.socket, key: bytes, timeout: float = 10.0,
               server_tls=None, before_reply=None) -> "Connection":
        """The server side of the handshake, for blocking servers (object
        transfers); with `server_tls` (tls.ServerTLS) the link is TLS first.
        `before_reply(conn)` is called once the client's proof checks out and
        before the reply that lets the client send: whatever it sends next
        then finds the connection watched."""
        sock.settimeout(timeout)
        binding = b""
        try:
            if server_tls is not None:
                sock = server_tls.context.wrap_socket(sock, server_side=True)
                binding = server_tls.binding
            nonce = auth.new_nonce()
            sock.sendall(nonce)
            reply = auth.check_client_proof(
                key, nonce, _recv_exactly(sock, auth.CLIENT_PROOF_SIZE), binding)
            sock.settimeout(None)
            conn = cls(sock)
            if before_reply is not None:
                before_reply(conn)
            sock.sendall(reply)
        except BaseException:
            sock.close()
            raise
        return conn

    def take_buffered(self) -> bytes:
        """Bytes read past the last frame; for a raw byte stream that follows it."""
        if self._decoded:
            raise ProtocolError("a raw stream after a batch of messages")
        return self._decoder.take_pending()

    def send(self, msg) -> None:
        self.send_chunks(codec.encode(msg))

    def send_many(self, msgs) -> None:
        self.send_chunks(encode_all(msgs))

    def send_chunks(self, chunks: list) -> None:
        """Write chunks made by `encode_all` (or codec.encode), in order."""
        with self._send_lock:
            _send_chunks(self.sock, chunks)

    def recv(self):
        """Next message; raises ConnectionError when the peer is gone."""
        if self._decoded:
            return self._decoded.popleft()
        decoder = self._decoder
        frame = decoder.next_frame()
        while frame is None:
            n = self.sock.recv_into(decoder.get_buffer())
            if not n:
                raise ConnectionError("connection closed by peer")
            decoder.buffer_updated(n)
            frame = decoder.next_frame()
        msgs = codec.decode_frame(*frame)
        if len(msgs) > 1:
            self._decoded.extend(msgs[1:])
        return msgs[0]

    def received(self) -> list:
        """The messages here already, read by recv() past the one it returned
        (the rest of a batch, whole frames after it): the socket will not
        signal them again, so a selector's loop takes them before it waits."""
        msgs = list(self._decoded)
        self._decoded.clear()
        frame = self._decoder.next_frame()
        while frame is not None:
            msgs.extend(codec.decode_frame(*frame))
            frame = self._decoder.next_frame()
        return msgs

    def recv_ready(self, flags: int = 0) -> list:
        """The messages one read completes, for a selector's loop: call it when
        the socket is readable (or pass socket.MSG_DONTWAIT: then [] if nothing
        came).  Raises ConnectionError when the peer is gone, ProtocolError
        (a ValueError) for bytes that are not messages.  What recv() read past
        its message comes first, without a read (see `received`)."""
        msgs = self.received()
        if msgs:
            return msgs
        decoder, sock = self._decoder, self.sock
        while True:
            try:
                n = sock.recv_into(decoder.get_buffer(), 0, flags)
            except BlockingIOError:
                return msgs
            if not n:
                raise ConnectionError("connection closed by peer")
            decoder.buffer_updated(n)
            frame = decoder.next_frame()
            while frame is not None:
                msgs.extend(codec.decode_frame(*frame))
                frame = decoder.next_frame()
            # TLS may hold decrypted bytes the socket will not signal again.
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return msgs

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _send_chunks(sock: socket.socket, chunks: list) -> None:
    """Write chunks in order with scatter/gather sends: no joining copy."""
    if isinstance(sock, ssl.SSLSocket):      # TLS has no sendmsg: it encrypts a copy anyway
        sock.sendall(b"".join(chunks))
        return
    write_gathered(sock.sendmsg, chunks)     # a blocking socket takes it all


def encode_all(msgs) -> list:
    """The chunks of several messages, in order, batched where they may be
    (codec.encode_many); FrameTooLargeError for one too large."""
    return codec.encode_many(msgs) if msgs else []


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise auth.AuthenticationError("connection closed during authentication")
        data += chunk
    return data


def parse_address(address: str) -> tuple[str, int]:
    if not isinstance(address, str):
        raise ValueError(f"address must be a string like HOST:PORT, got {address!r}")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must look like HOST:PORT with a port from 1 to 65535, "
                         f"got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
