"""The asyncio side of a connection: what the scheduler serves peers with.

`ServerConnection` authenticates the peer (auth.py), then decodes frames and
hands each message to the owner's `on_message(conn, msg)`; after the last
frame of a read it calls `on_read_done()`, where the owner sends what it has
to say (`send` queues, `flush` writes), so a burst of messages costs one
write per peer and no extra turn of the event loop.  A peer
that fails authentication, stays silent, or sends a malformed frame is logged
and dropped; it never takes the process down.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

from . import auth, codec, messages
from .framing import FrameDecoder, FrameTooLargeError, ProtocolError, write_gathered

log = logging.getLogger("shoal.protocol")
AUTH_TIMEOUT = 10.0


class ServerConnection(asyncio.BufferedProtocol):
    _next_id = 0

    def __init__(self, key: bytes, on_message: Callable, on_close: Callable,
                 on_read_done: Callable, server_tls=None) -> None:
        ServerConnection._next_id += 1
        self.id = ServerConnection._next_id
        self._key = key
        self._on_message = on_message
        self._on_close = on_close
        self._on_read_done = on_read_done
        self._tls = server_tls           # tls.ServerTLS for links that leave the host
        self._binding = server_tls.binding if server_tls else b""
        self._nonce = auth.new_nonce()
        self._authenticated = False
        self._proof = memoryview(bytearray(auth.CLIENT_PROOF_SIZE))
        self._proof_have = 0
        self._decoder = FrameDecoder()
        self._direct = server_tls is None   # may write to the socket itself (see flush)
        self._out: list = []
        self.transport = None
        self.peer = "?"
        self.closed = False
        self._close_notified = False
        self.info = None          # what the scheduler learns about this peer

    # asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = "%s:%s" % peer[:2] if isinstance(peer, tuple) else "local socket"
        self._auth_timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT, self._auth_timeout)
        if self._tls is None:
            transport.write(self._nonce)
        else:
            self._tls_task = asyncio.ensure_future(self._start_tls())

    async def _start_tls(self) -> None:
        """TLS first; a peer that does not speak it is refused with a log line."""
        try:
            self.transport = await asyncio.get_running_loop().start_tls(
                self.transport, self, self._tls.context, server_side=True,
                ssl_handshake_timeout=AUTH_TIMEOUT)
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            log.warning("closing connection from %s: no TLS handshake (%s)", self.peer,
                        exc.__class__.__name__)
            self.close()
            return
        if not self.closed:
            self.transport.write(self._nonce)

    # The socket reads straight into the decoder's buffers (asyncio.BufferedProtocol);
    # before authentication, into the proof's, and never a byte past it.
    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._authenticated:
            return self._proof[self._proof_have:]
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        try:
            if not self._authenticated:
                self._proof_have += nbytes
                if self._proof_have == auth.CLIENT_PROOF_SIZE:
                    self._authenticate(bytes(self._proof))
                return
            decoder = self._decoder
            decoder.buffer_updated(nbytes)
            frame = decoder.next_frame()
            while frame is not None:
                for msg in codec.decode_frame(*frame):
                    self._on_message(self, msg)
                    if self.closed:
                        break
                if self.closed:
                    break
                frame = decoder.next_frame()
        except (ProtocolError, auth.AuthenticationError) as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self.close()
        except Exception:
            log.exception("error handling a message from %s; closing it", self.peer)
            self.close()
        self._on_read_done()

    # Back-pressure: a peer that does not read what we send stops being read
    # from, so it cannot make this process buffer without bound.
    def pause_writing(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self._auth_timer.cancel()
        self.closed = True
        self._notify_closed()
        self._on_read_done()

    def _notify_closed(self) -> None:
        if self._authenticated and not self._close_notified:
            self._close_notified = True
            self._on_close(self)

    # ------------------------------------------------------------------------
    def _authenticate(self, proof: bytes) -> None:
        reply = auth.check_client_proof(self._key, self._nonce, proof, self._binding)
        self._authenticated = True
        self._auth_timer.cancel()
        self.transport.write(reply)

    def _auth_timeout(self) -> None:
        if not self._authenticated:
            log.warning("closing connection from %s: no authentication within %ss",
                        self.peer, AUTH_TIMEOUT)
            self.close()

    def send(self, msg) -> None:
        """Queue a message; it goes out at the next flush(), with the others
        queued by then in as few frames as may be (codec.encode_many)."""
        if not self.closed:
            self._out.append(msg)

    def _encoded(self, msgs: list) -> list:
        try:
            return codec.encode_many(msgs)
        except Exception:
            pass
        out = []
        for msg in msgs:       # one cannot be sent: the others go, a frame each
            try:
                out.extend(codec.encode(msg))
            except Exception as exc:     # never worth the peer's connection, nor the others'
                log.error("not sent to %s: %s: %s", self.peer, type(msg).__name__, exc)
                if type(msg) is messages.QueryReply:
                    what = "too large" if isinstance(exc, FrameTooLargeError) else "not sendable"
                    out.extend(codec.encode(messages.QueryReply(
                        request_id=msg.request_id, error=f"the answer is {what}: {exc}")))
        return out

    def flush(self) -> None:
        if self._out and not self.closed:
            msgs, self._out = self._out, []
            out = self._encoded(msgs)
            transport = self.transport
            if self._direct and not transport.get_write_buffer_size():
                out = _write_now(transport, out)
            if out:
                transport.writelines(out)


    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
            self._notify_closed()

    def __repr__(self) -> str:
        return f"<ServerConnection {self.id} {self.peer} {self.info!r}>"


def _write_now(transport, chunks: list) -> list:
    """Write what the socket takes now with writev, straight from the chunks
    (asyncio 3.11's writelines joins them into one copy first); return the
    chunks, or part-chunk, left for the transport to buffer.  Only for a plain
    socket whose transport has nothing queued, so the order of bytes holds."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return chunks
    fd = sock.fileno()
    # Any error stops it: the transport meets the same one when it writes the rest, and reports it.
    return write_gathered(lambda batch: os.writev(fd, batch), chunks, stop=OSError)
