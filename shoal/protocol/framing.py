"""Length-prefixed frames: one pickled header plus zero or more raw buffers.

Layout of a frame (all integers little-endian)::

    u32 header_length | u32 buffer_count | u64 length * buffer_count
    header bytes | buffer 0 | buffer 1 | ...

Buffers carry pickle protocol 5 out-of-band data, so a large numpy array
travels as its own bytes with no extra copy into the header.

Neither side copies a frame's bytes in user space more than it must: the
sender writes prefix, header and buffers with one scatter/gather call
(`encode_frame` returns them as separate chunks), and the decoder is
recv_into-shaped (`get_buffer` / `buffer_updated`, like asyncio's
BufferedProtocol).  Small frames arrive in a staging buffer, many per read,
and are copied once into a body of their own; the body of a large frame is
allocated as soon as its prefix is in and the socket reads straight into it.
A frame's header and buffers are read-only slices of its body, so they stay
valid for as long as anyone holds them.  The decoder is sans-IO and parses
lazily (`next_frame`), so bytes that follow a frame and are not frames (an
object transfer's raw stream) are never touched.  Anything that does not parse
raises ProtocolError, and the owner of the connection closes it.
"""
from __future__ import annotations

import mmap
import struct

PREFIX = struct.Struct("<II")
LENGTH = struct.Struct("<Q")
PREFIX_ONE = struct.Struct("<IIQ")      # the common frame with one buffer
MAX_MESSAGE = 64 << 20         # header and buffers together; bulk data goes through the
                               # object store, so anything larger is an attack or a bug
MAX_BUFFERS = 4096
STAGING = 256 << 10            # one read's worth of small frames
DIRECT = 64 << 10              # a body this large is read straight into place
IOV_BATCH = 512                # chunks per scatter/gather write, under any IOV_MAX
MAPPED = 1 << 20               # ...and one this large is an anonymous map: no zero-fill pass,
                               # pages are only touched as the peer's bytes arrive


class ProtocolError(ValueError):
    """The peer sent bytes that are not a valid frame or message."""


class FrameTooLargeError(ValueError):
    """A message we were about to send is larger than a peer accepts.  Raised
    before any of it is written, so the connection stays usable."""


def check_frame(header: bytes, lengths, what: str) -> None:
    """What a FrameDecoder would refuse, refused on the sending side instead."""
    size = len(header) + sum(lengths)
    if size > MAX_MESSAGE or len(lengths) > MAX_BUFFERS:
        _refuse(size, len(lengths), what)


def _refuse(size: int, nbufs: int, what: str):
    if size > MAX_MESSAGE:
        raise FrameTooLargeError(
            f"{what} is too large to send: {size / 2**20:.1f} MiB of message data, "
            f"more than the {MAX_MESSAGE / 2**20:.0f} MiB a message may carry outside the "
            f"object store")
    raise FrameTooLargeError(f"{what} has {nbufs} out-of-band buffers; at most "
                             f"{MAX_BUFFERS} go in one message")


def encode_frame(header: bytes, buffers: list = (), what: str = "a message") -> list:
    """Return the chunks to write, in order: prefix, header, buffers (nothing
    is copied).  Raises FrameTooLargeError for a frame the receiving decoder
    would refuse."""
    if not buffers:
        check_frame(header, (), what)
        return [PREFIX.pack(len(header), 0), header]
    lengths = [memoryview(b).nbytes for b in buffers]
    check_frame(header, lengths, what)
    if len(lengths) == 1:
        return [PREFIX_ONE.pack(len(header), 1, lengths[0]), header, buffers[0]]
    prefix = PREFIX.pack(len(header), len(lengths)) + struct.pack(f"<{len(lengths)}Q", *lengths)
    return [prefix, header, *buffers]


def write_gathered(writev, chunks: list, stop=()) -> list:
    """Write chunks in order with `writev(batch) -> bytes written` (sendmsg,
    os.writev), IOV_BATCH chunks a call, resuming inside a partly written
    chunk; nothing is joined or copied.  A call that raises one of `stop`
    ends the writing: return the chunks (or part-chunk) still to write."""
    at = 0
    while at < len(chunks):
        batch = chunks[at:at + IOV_BATCH]
        try:
            sent = writev(batch)
        except stop:
            break
        for chunk in batch:
            n = memoryview(chunk).nbytes
            if sent >= n:
                sent -= n
                at += 1
                continue
            chunks[at] = memoryview(chunk).cast("B")[sent:]
            break
    return chunks[at:]


def _allocate(size: int):
    if size < MAPPED:
        return memoryview(bytearray(size))
    return memoryview(mmap.mmap(-1, size))


class FrameDecoder:
    """Takes bytes through `get_buffer`/`buffer_updated` (or `feed`) and gives
    complete (header, buffers) frames through `next_frame`."""

    def __init__(self) -> None:
        self._stage = memoryview(bytearray(STAGING))
        self._start = self._end = 0         # unparsed bytes: _stage[_start:_end]
        self._body = None                   # a large frame's body, being read into place
        self._filled = 0
        self._shape = None                  # (header length, buffer lengths) of that frame

    # -- filling ---------------------------------------------------------------
    def get_buffer(self) -> memoryview:
        """Where the next read should go (never empty)."""
        if self._body is not None:
            return self._body[self._filled:]
        free = STAGING - self._end
        if self._start and free < STAGING // 2:      # room for any partial small frame
            n = self._end - self._start
            self._stage[:n] = self._stage[self._start:self._end]
            self._start, self._end = 0, n
            free = STAGING - n
        if not free:
            raise RuntimeError("FrameDecoder: take the complete frames before reading more")
        return self._stage[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at the start of the last get_buffer()."""
        if self._body is not None:
            self._filled += nbytes
        else:
            self._end += nbytes

    def feed(self, data) -> list:
        """Copy `data` in and return every frame it completes."""
        data = memoryview(data).cast("B")
        frames, at = [], 0
        while True:
            frame = self.next_frame()
            while frame is not None:
                frames.append(frame)
                frame = self.next_frame()
            if at >= data.nbytes:
                return frames
            buf = self.get_buffer()
            n = min(buf.nbytes, data.nbytes - at)
            buf[:n] = data[at:at + n]
            self.buffer_updated(n)
            at += n

    # -- parsing ---------------------------------------------------------------
    def next_frame(self):
        """The next complete (header, [buffer, ...]) or None; raises
        ProtocolError for bytes that cannot be a frame."""
        if self._body is not None:
            if self._filled < self._body.nbytes:
                return None
            body, (header_len, lengths) = self._body.toreadonly(), self._shape
            self._body = self._shape = None
            return _split(body, header_len, lengths)
        stage, pos, end = self._stage, self._start, self._end
        if end - pos < 8:
            return None
        header_len, nbufs = PREFIX.unpack_from(stage, pos)
        if header_len > MAX_MESSAGE or nbufs > MAX_BUFFERS:
            raise ProtocolError(f"frame too large: header {header_len} bytes, {nbufs} buffers")
        at = pos + 8 + 8 * nbufs                 # where the header starts
        if end < at:
            return None
        if nbufs == 1:
            lengths = LENGTH.unpack_from(stage, pos + 8)
            size = header_len + lengths[0]
        elif nbufs:
            lengths = struct.unpack_from(f"<{nbufs}Q", stage, pos + 8)
            size = header_len + sum(lengths)
        else:
            lengths, size = (), header_len
        if size > MAX_MESSAGE:
            raise ProtocolError(f"frame too large: {size} bytes")
        have = end - at
        if have >= size:                         # all here: one copy out of the staging buffer
            body = stage[at:at + size].tobytes()
            self._start = at + size
            if self._start == end:
                self._start = self._end = 0
            if not nbufs:
                return body, []
            return _split(memoryview(body), header_len, lengths)
        if size >= DIRECT:                       # the rest is read straight into its place
            body = _allocate(size)
            body[:have] = stage[at:end]
            self._body, self._filled, self._shape = body, have, (header_len, lengths)
            self._start = self._end = 0
        return None

    def take_pending(self) -> bytes:
        """The bytes read past the last frame taken (not parsed as frames)."""
        if self._body is not None:
            raise RuntimeError("a frame is half received")
        data = bytes(self._stage[self._start:self._end])
        self._start = self._end = 0
        return data


def _split(body: memoryview, header_len: int, lengths) -> tuple:
    if len(lengths) == 1:
        return body[:header_len], [body[header_len:]]
    buffers, at = [], header_len
    for n in lengths:
        buffers.append(body[at:at + n])
        at += n
    return body[:header_len], buffers
