"""Length-prefixed frames: one pickled header plus zero or more raw buffers.

Layout of a frame (all integers little-endian)::

    u32 header_length | u32 buffer_count | u64 length * buffer_count
    header bytes | buffer 0 | buffer 1 | ...

Buffers carry pickle protocol 5 out-of-band data, so a large numpy array
travels as its own bytes with no extra copy into the header.  The decoder is
incremental and sans-IO: feed it whatever the socket gave and take whole
frames out.  Anything that does not parse raises ProtocolError, and the owner
of the connection closes it.
"""
from __future__ import annotations

import struct

PREFIX = struct.Struct("<II")
LENGTH = struct.Struct("<Q")
MAX_HEADER = 64 << 20          # a header is metadata; anything larger is an attack or a bug
MAX_BUFFERS = 4096
MAX_BUFFER = 1 << 40


class ProtocolError(ValueError):
    """The peer sent bytes that are not a valid frame or message."""


class FrameTooLargeError(ValueError):
    """A message we were about to send is larger than a peer accepts.  Raised
    before any of it is written, so the connection stays usable."""


def check_frame(header: bytes, buffers, what: str) -> None:
    """What a FrameDecoder would refuse, refused on the sending side instead."""
    if len(header) > MAX_HEADER:
        raise FrameTooLargeError(
            f"{what} is too large to send: {len(header) / 2**20:.1f} MiB of message data, "
            f"more than the {MAX_HEADER / 2**20:.0f} MiB a message may carry outside the "
            f"object store")
    if len(buffers) > MAX_BUFFERS:
        raise FrameTooLargeError(f"{what} has {len(buffers)} out-of-band buffers; at most "
                                 f"{MAX_BUFFERS} go in one message")


def encode_frame(header: bytes, buffers: list = (), what: str = "a message") -> list:
    """Return the chunks to write, in order (buffers are not copied).  Raises
    FrameTooLargeError for a frame the receiving decoder would refuse."""
    check_frame(header, buffers, what)
    lengths = [memoryview(b).nbytes for b in buffers]
    prefix = PREFIX.pack(len(header), len(lengths))
    if lengths:
        prefix += struct.pack(f"<{len(lengths)}Q", *lengths)
    return [prefix + header, *buffers] if buffers else [prefix + header]


class FrameDecoder:
    """Accumulates bytes and yields complete (header, buffers) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data) -> list[tuple[bytes, list[bytes]]]:
        self._buf += data
        frames = []
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= PREFIX.size:
            header_len, nbufs = PREFIX.unpack_from(buf, pos)
            if header_len > MAX_HEADER or nbufs > MAX_BUFFERS:
                raise ProtocolError(f"frame too large: header {header_len} bytes, {nbufs} buffers")
            lengths_end = pos + PREFIX.size + 8 * nbufs
            if end < lengths_end:
                break
            lengths = struct.unpack_from(f"<{nbufs}Q", buf, pos + PREFIX.size) if nbufs else ()
            if any(n > MAX_BUFFER for n in lengths):
                raise ProtocolError("frame buffer too large")
            frame_end = lengths_end + header_len + sum(lengths)
            if end < frame_end:
                break
            header = bytes(buf[lengths_end:lengths_end + header_len])
            buffers = []
            at = lengths_end + header_len
            for n in lengths:
                buffers.append(bytes(buf[at:at + n]))
                at += n
            frames.append((header, buffers))
            pos = frame_end
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)

    def take_pending(self) -> bytes:
        data, self._buf = bytes(self._buf), bytearray()
        return data
