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
from dataclasses import fields
from operator import attrgetter

from .framing import ProtocolError, encode_frame
from .messages import MESSAGE_TYPES

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
        return cls(**dict(zip(_FIELDS[code], values[1:])))
    except Exception as exc:
        raise ProtocolError(f"undecodable message: {exc!r}") from None
