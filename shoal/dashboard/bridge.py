"""Widgets whose frontend is a web page over a websocket instead of a notebook.

The dashboard's pages run the very widgets a notebook shows (the same Python
class fed by the same event stream, the same JavaScript module): only the
transport changes.  ipywidgets opens a widget's comm through
`comm.create_comm`, the hook ipykernel itself replaces; `install()` puts a
dispatcher there that, while `page_comms(sink)` is active on the calling
thread, makes a `PageComm` that hands every message to `sink` instead of a
kernel (elsewhere it falls through to whatever was there before).  A widget
opens more than one comm (a DOMWidget has a Layout): the sink gets each
message's comm id, and a page forwards only its widget's.

Frames on the socket (see static/page.js, which speaks the other end):

    server -> page   binary: uint32 n, n bytes of JSON {"msg_type", "data",
                     "lengths"}, then the buffers back to back (lengths in bytes)
    page -> server   text: JSON {"method": "custom", "content": {...}} (the
                     widgets' clicks and "hello"s; a page sets no trait)
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import struct
from typing import Callable, Optional

import comm
from comm.base_comm import BaseComm

Sink = Callable[[str, str, dict, list], None]     # (comm_id, msg_type, data, buffers)
_sink: contextvars.ContextVar[Optional[Sink]] = contextvars.ContextVar("shoal_page_sink",
                                                                       default=None)
_fallback: Optional[Callable] = None
MAX_INCOMING = 64 * 1024         # bytes: what a page sends is a click or a "hello"


class PageComm(BaseComm):
    """A comm whose other end is a dashboard page: messages go to `sink`."""

    def __init__(self, sink: Sink, **kwargs) -> None:
        self._sink = sink
        super().__init__(**kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys) -> None:
        self._sink(self.comm_id, msg_type, data or {}, list(buffers or []))


def _create_comm(*args, **kwargs) -> BaseComm:
    sink = _sink.get()
    if sink is not None:
        return PageComm(sink, *args, **kwargs)
    return _fallback(*args, **kwargs)


def install() -> None:
    """Put the dispatcher in comm.create_comm (once; idempotent)."""
    global _fallback
    if comm.create_comm is not _create_comm:
        _fallback = comm.create_comm
        comm.create_comm = _create_comm


@contextlib.contextmanager
def page_comms(sink: Sink):
    """Widgets made inside this block (on this thread) talk to `sink`."""
    install()
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def encode(msg_type: str, data: dict, buffers: list) -> bytes:
    raw = [bytes(b) for b in buffers]
    head = json.dumps({"msg_type": msg_type, "data": data,
                       "lengths": [len(b) for b in raw]}, separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(head)), head, *raw])


def decode_incoming(text) -> dict:
    """A page's message as the comm's `msg` dict; ValueError for anything malformed."""
    if not isinstance(text, str) or len(text) > MAX_INCOMING:
        raise ValueError("expected a short text frame")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    method = data.get("method")
    if method == "custom" and isinstance(data.get("content"), dict):
        data = {"method": "custom", "content": data["content"]}
    else:
        raise ValueError(f"unknown message {method!r}")
    return {"content": {"data": data}, "buffers": []}
