"""Messages <-> frames.  The only place that serializes protocol messages.

A header is the pickled tuple ``(type_code, field values...)``: several times
faster to build than pickling the dataclass itself.  Any `pickle.PickleBuffer`
inside a message travels out-of-band as a raw frame buffer and comes out as a
PickleBuffer over a read-only slice of the received frame, so it goes on
out-of-band again as it is: that is how opaque payloads (task arguments,
inline values, function code) cross the scheduler, which routes them by the
ids beside them and never copies or decodes them.

Several messages for one peer go as one frame when none of them carries an
out-of-band buffer: the header is then the pickled list of their tuples
(`encode_many`).  A frame, a pickle call and a decode each cost more than
the message itself when there are many (an engine's batch of reports, the
scheduler's tasks for an engine): ~1/3 of the CPU per message.  Messages
with buffers keep a frame each, so a value kept by its receiver never keeps
a neighbour's frame alive (see `unshared`).  One object in several messages
of a batch (an actor's resources dict) comes out as one object, as pickle's
memo makes it: like every message field, never changed in place.  Pickle is safe
here because no frame is decoded before the peer has proven it holds the
cluster key (see auth.py); a frame that still fails to decode raises
ProtocolError and the connection is closed.
"""
from __future__ import annotations

import pickle

from .framing import ProtocolError, encode_frame
from .messages import MESSAGE_TYPES, ObjectsReady, TaskFinished, replace

_CODES = {cls: code for code, cls in enumerate(MESSAGE_TYPES)}
_SIZES = [len(cls._fields) + 1 for cls in MESSAGE_TYPES]


def _wire(msg) -> tuple:
    """(type code, field values...): the header's tuple."""
    return (_CODES[type(msg)], *msg)


BATCH_MAX = 256              # messages in one frame
BATCH_BYTES = 1 << 20        # a bigger batch is sent a frame per message


def encode(msg) -> list:
    buffers: list = []
    header = pickle.dumps(_wire(msg), protocol=5, buffer_callback=buffers.append)
    return encode_frame(header, [b.raw() for b in buffers], type(msg).__name__)


def encode_many(msgs) -> list:
    """The chunks of several messages, in order: as one frame where none has an
    out-of-band buffer, else a frame each."""
    if len(msgs) == 1:
        return encode(msgs[0])
    out: list = []
    for start in range(0, len(msgs), BATCH_MAX):
        run = msgs[start:start + BATCH_MAX]
        buffers: list = []
        header = pickle.dumps([_wire(msg) for msg in run], protocol=5,
                              buffer_callback=buffers.append)
        if buffers or len(header) > BATCH_BYTES or len(run) == 1:
            out.extend(chunk for msg in run for chunk in encode(msg))
        else:
            out.extend(encode_frame(header, (), f"{len(run)} messages"))
    return out


def decode(header: bytes, buffers: list):
    """The one message of a frame (ProtocolError for a batch)."""
    msgs = decode_frame(header, buffers)
    if len(msgs) != 1:
        raise ProtocolError(f"expected one message, got a batch of {len(msgs)}")
    return msgs[0]


def decode_frame(header: bytes, buffers: list) -> list:
    """The messages of a frame: one, or a batch (encode_many)."""
    try:
        values = pickle.loads(header, buffers=map(pickle.PickleBuffer, buffers))
        if type(values) is list:
            if len(values) < 2 or buffers:
                raise ValueError(f"a batch of {len(values)} with {len(buffers)} buffers")
            return [_message(v) for v in values]
        msg = _message(values)
        if len(buffers) > 1 and type(msg) in _KEPT_APART:
            msg = _KEPT_APART[type(msg)](msg)
    except Exception as exc:
        raise ProtocolError(f"undecodable message: {exc!r}") from None
    return [msg]


def _message(values: tuple):
    code = values[0]
    cls = MESSAGE_TYPES[code]
    if len(values) != _SIZES[code]:
        raise ValueError(f"{cls.__name__} with {len(values) - 1} fields, not {_SIZES[code] - 1}")
    # Straight into the slots: cls(**dict(zip(names, values))) cost 3x (messages.py).
    return cls._from_wire(values)


def unshared(entries: list) -> list:
    """Values decoded from one frame are views of it: one of them kept alone
    must not keep the others (a batch of pushes: up to 16 MiB) alive, so each
    out-of-band value of several gets its own copy.  A single value stays a view."""
    if len(entries) < 2:
        return entries
    return [e._replace(inline=e.inline.raw().tobytes()) if type(e.inline) is pickle.PickleBuffer
            else e for e in entries]


# Messages whose values their receiver keeps one by one (the scheduler a
# task's results, a driver its pushed values), each beyond the others.
_KEPT_APART = {
    ObjectsReady: lambda msg: ObjectsReady(entries=unshared(msg.entries)),
    TaskFinished: lambda msg: replace(msg, results=unshared(msg.results)),
}
