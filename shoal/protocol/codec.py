"""Messages <-> frames.  The only place that serializes protocol messages.

A header is the pickled tuple ``(type_code, field values...)``: several times
faster to build than pickling the dataclass itself.  Any `pickle.PickleBuffer`
inside a message travels out-of-band as a raw frame buffer and comes out as a
PickleBuffer over a read-only slice of the received frame, so it goes on
out-of-band again as it is: that is how opaque payloads (task arguments,
inline values, function code) cross the scheduler, which routes them by the
ids beside them and never copies or decodes them.  Pickle is safe
here because no frame is decoded before the peer has proven it holds the
cluster key (see auth.py); a frame that still fails to decode raises
ProtocolError and the connection is closed.
"""
from __future__ import annotations

import pickle
from dataclasses import fields, replace
from operator import attrgetter

from .framing import ProtocolError, encode_frame
from .messages import MESSAGE_TYPES, ObjectsReady, TaskFinished

_CODES = {cls: code for code, cls in enumerate(MESSAGE_TYPES)}
_FIELDS = [tuple(f.name for f in fields(cls)) for cls in MESSAGE_TYPES]


def _getter(names: tuple):
    """A fast callable: message -> tuple of its field values."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        return lambda msg, name=names[0]: (getattr(msg, name),)
    return lambda msg: ()


_GETTERS = [_getter(names) for names in _FIELDS]
_SIZES = [len(names) + 1 for names in _FIELDS]


def encode(msg) -> list:
    code = _CODES[type(msg)]
    values = _GETTERS[code](msg)
    buffers: list = []
    header = pickle.dumps((code, *values), protocol=5, buffer_callback=buffers.append)
    return encode_frame(header, [b.raw() for b in buffers], type(msg).__name__)


def decode(header: bytes, buffers: list):
    try:
        values = pickle.loads(header, buffers=map(pickle.PickleBuffer, buffers))
        code = values[0]
        cls = MESSAGE_TYPES[code]
        if len(values) != _SIZES[code]:
            raise ValueError(f"{cls.__name__} with {len(values) - 1} fields, "
                             f"not {_SIZES[code] - 1}")
        # Straight into the slots: cls(**dict(zip(names, values))) cost 3x (messages.py).
        msg = cls._from_wire(values)
    except Exception as exc:
        raise ProtocolError(f"undecodable message: {exc!r}") from None
    if len(buffers) > 1 and cls in _KEPT_APART:
        msg = _KEPT_APART[cls](msg)
    return msg


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
