"""Submissions are coalesced on the driver (Client.submit): a burst goes out
in a few writes, a lone call at once, and nothing overtakes what came first."""
import time

import pytest

import shoal
from shoal.core import client as client_module
from shoal.core import runtime
from shoal.exceptions import TaskCancelledError

from conftest import wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@shoal.remote
def ident(x):
    return x


@shoal.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


@shoal.remote
def fan_out(n):
    return sum(shoal.get([ident.remote(i) for i in range(n)]))


@pytest.fixture
def writes(monkeypatch):
    """The writes to the scheduler that carried submissions, in order (a
    lease returned meanwhile is a write of its own: not one of them)."""
    from shoal.protocol import codec
    from shoal.protocol import messages as m
    from shoal.protocol.framing import FrameDecoder
    conn = runtime.current().client.conn
    seen, send = [], conn.send_chunks

    def spy(chunks):
        data = b"".join(bytes(c) for c in chunks)
        msgs = [x for f in FrameDecoder().feed(data) for x in codec.decode_frame(*f)]
        if any(type(x) is m.SubmitTask for x in msgs):
            seen.append(len(chunks))
        send(chunks)
    monkeypatch.setattr(conn, "send_chunks", spy)
    return seen


def test_a_burst_goes_out_in_a_few_writes(writes, monkeypatch):
    monkeypatch.setattr(client_module, "BURST_GAP", 60.0)      # every call is part of the burst
    monkeypatch.setattr(client_module, "SUBMIT_DELAY", 1.0)   # ... and only size or get flush it
    time.sleep(0.01)
    refs = [ident.remote(i) for i in range(200)]
    assert len(writes) <= 1 + 200 // client_module.SUBMIT_BATCH
    assert shoal.get(refs) == list(range(200))
    assert len(writes) <= 2 + 200 // client_module.SUBMIT_BATCH


@pytest.fixture
def frames(monkeypatch):
    """The messages of each frame written to the scheduler, in order."""
    from shoal.protocol import codec
    from shoal.protocol.framing import FrameDecoder
    conn = runtime.current().client.conn
    seen, send = [], conn.send_chunks

    def spy(chunks):
        data = b"".join(bytes(c) for c in chunks)
        seen.extend(codec.decode_frame(*f) for f in FrameDecoder().feed(data))
        send(chunks)
    monkeypatch.setattr(conn, "send_chunks", spy)
    return seen


def test_a_burst_goes_out_in_a_few_frames_in_order(frames, monkeypatch):
    """Queued submissions are encoded together (codec.encode_many); one whose
    arguments travel out-of-band was encoded at once and keeps its place."""
    from shoal.protocol import messages as m
    monkeypatch.setattr(client_module, "BURST_GAP", 60.0)
    monkeypatch.setattr(client_module, "SUBMIT_DELAY", 1.0)
    big = "x" * 5000                         # out-of-band arguments: a frame of their own
    args = [big if i == 30 else i for i in range(100)]
    refs = [ident.remote(a) for a in args]
    assert shoal.get(refs) == args
    submitted = [msg for frame in frames for msg in frame if type(msg) is m.SubmitTask]
    ids = [ref.task_id() for ref in refs]
    assert [msg.task_id for msg in submitted if msg.task_id in ids] == ids
    with_burst = [frame for frame in frames if any(type(x) is m.SubmitTask and x.task_id in ids
                                                   for x in frame)]
    assert len(with_burst) <= 8, [len(f) for f in with_burst]


def test_a_lone_call_is_sent_before_remote_returns(writes, monkeypatch):
    leases = runtime.current().client.leases
    monkeypatch.setattr(leases, "route", lambda *args: None)     # through the scheduler
    time.sleep(0.01)                         # well past the burst gap
    before = len(writes)
    ref = ident.remote(1)
    assert len(writes) == before + 1 and not runtime.current().client._queued
    assert shoal.get(ref) == 1


def test_a_lone_call_to_a_leased_engine_is_sent_to_it_before_remote_returns():
    client = runtime.current().client
    wait_for(lambda: shoal.get(ident.remote(0)) == 0 and client.leases._leases)
    wait_for(lambda: not client._queued, what="the records sent")
    time.sleep(0.01)
    ref = ident.remote(1)
    assert client.leases.waiting and not client._straight      # written to its engine
    assert shoal.get(ref) == 1


def test_a_queued_call_nobody_waits_for_is_sent_by_the_timer(monkeypatch):
    client = runtime.current().client
    monkeypatch.setattr(client_module, "BURST_GAP", 60.0)
    monkeypatch.setattr(client_module, "SUBMIT_DELAY", 0.05)
    monkeypatch.setattr(client, "_last_submit", 0.0)    # no burst going on
    refs = [ident.remote(i) for i in range(3)]
    assert client._queued                   # the first went at once, the rest wait
    deadline = time.monotonic() + 5
    while client._queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not client._queued               # the housekeeper sent them, no get asked it to
    assert shoal.get(refs) == [0, 1, 2]


def test_cancel_reaches_a_task_still_queued_here(monkeypatch):
    monkeypatch.setattr(client_module, "BURST_GAP", 60.0)
    monkeypatch.setattr(client_module, "SUBMIT_DELAY", 1.0)
    refs = [nap.remote(0.5) for _ in range(6)]
    shoal.cancel(refs[-1])                   # flushes the queue first: the scheduler knows it
    with pytest.raises(TaskCancelledError):
        shoal.get(refs[-1])
    assert shoal.get(refs[:-1]) == [0.5] * 5


def test_nested_bursts_from_a_task(monkeypatch):
    assert shoal.get(fan_out.remote(100)) == sum(range(100))
