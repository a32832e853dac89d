"""Results straight from engine to driver, piece by piece: the scheduler's
rules (no sockets), the driver's reply channel (real sockets, no cluster),
first entry wins in the client, and the engine's side."""
import os
import select
import socket
import stat
import threading
import time

import pytest

from shoal.core.client import Client
from shoal.core.reply_channel import ReplyChannel
from shoal.engine.engine import _plain_success
from shoal.engine.replies import ReplyConnections
from shoal.protocol import messages as m
from shoal.protocol.auth import AuthenticationError
from shoal.protocol.connection import Connection
from shoal.protocol.framing import encode_frame
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import dumps

from test_scheduler_state import Harness

pytestmark = pytest.mark.timeout(60)
KEY = b"k" * 32
ADDRESS = "unix:/tmp/session/reply-d2.sock"


# ---------------------------------------------------------------- the scheduler
def _local_driver(h, conn="drv2", hostname="h1", address=ADDRESS):
    h.s.handle(conn, m.ClientHello(client_id=conn, kind="driver", pid=5, hostname=hostname))
    h.s.handle(conn, m.ReplyChannel(address=address))
    h.out()


def _execute(h, conn):
    tid = h.submit(conn=conn)
    [(engine, msg)] = [(c, x) for c, x in h.out() if isinstance(x, m.ExecuteTask)]
    return tid, engine, msg


def test_a_same_host_driver_with_a_channel_gets_reply_to():
    h = Harness()
    _local_driver(h)
    tid, engine, msg = _execute(h, "drv2")
    assert msg.reply_to == ADDRESS


@pytest.mark.parametrize("hostname, address, kind", [
    ("elsewhere", ADDRESS, "driver"),          # another machine: the relay
    ("h1", "10.0.0.1:5", "driver"),            # not a Unix socket
    ("h1", ADDRESS, "cli"),                    # not a driver
])
def test_no_reply_to_otherwise(hostname, address, kind):
    h = Harness()
    h.s.handle("p", m.ClientHello(client_id="p", kind=kind, pid=5, hostname=hostname))
    h.s.handle("p", m.ReplyChannel(address=address))
    h.out()
    tid, engine, msg = _execute(h, "p")
    assert msg.reply_to is None


def test_a_delivered_result_skips_only_its_owners_push():
    h = Harness()
    _local_driver(h)
    tid, engine, msg = _execute(h, "drv2")
    h.s.handle("drv", m.Subscribe(object_ids=[f"{tid}/0"]))      # another holder waits
    h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
        ObjectEntry(f"{tid}/0", inline=dumps(7))], delivered=True))
    out = h.out()
    assert f"{tid}/0" not in h.pushed(out, "drv2")
    assert f"{tid}/0" in h.pushed(out, "drv")
    assert h.s.objects[f"{tid}/0"].entry.inline is not None       # the scheduler keeps it


def _delivered(h, conn="drv2"):
    tid, engine, msg = _execute(h, conn)
    h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
        ObjectEntry(f"{tid}/0", inline=dumps(7))], delivered=True))
    assert f"{tid}/0" not in h.pushed(h.out(), conn)
    return tid, engine


def test_a_failed_straight_send_has_the_scheduler_push_the_results():
    h = Harness()
    _local_driver(h)
    tid, engine = _delivered(h)
    h.s.handle(engine, m.Undelivered(task_id=tid))
    assert h.pushed(h.out(), "drv2")[f"{tid}/0"].inline == dumps(7)
    h.s.handle(engine, m.Undelivered(task_id="t-unknown"))       # nothing to push: ignored
    assert not h.out()


def test_an_engine_that_dies_after_telling_has_its_recent_results_pushed():
    # TaskFinished came, then the engine died: the straight send may never have
    # happened.  Results the owner has released are not pushed.
    h = Harness(cpus=1)
    _local_driver(h)
    kept, engine = _delivered(h)
    released, _ = _delivered(h)
    h.s.handle("drv2", m.RefUpdates(ops=[(f"{released}/0", -1)]))
    h.out()
    h.s.connection_closed(engine)
    pushed = h.pushed(h.out(), "drv2")
    assert f"{kept}/0" in pushed and f"{released}/0" not in pushed


def test_an_engine_stopped_after_telling_has_its_results_pushed_when_it_goes():
    # max_calls=1: the scheduler retires the engine as it hears TaskFinished;
    # stopped before its straight send, its results come when its link closes.
    h = Harness(cpus=1)
    _local_driver(h)
    h.s.handle("drv2", m.RegisterFunction(func_id="once", name="once", blob=b"fn"))
    h.s.handle("drv2", m.SubmitTask(task_id="t1", func_id="once", name="once", args=b"",
                                    deps=[], nested=[], return_ids=["t1/0"],
                                    resources={"CPU": 1.0}, max_calls=1))
    [engine] = h.executes(h.out()).values()
    h.s.handle(engine, m.TaskFinished(task_id="t1", results=[
        ObjectEntry("t1/0", inline=dumps(7))], delivered=True))
    out = h.out()
    assert "t1/0" not in h.pushed(out, "drv2")
    assert any(isinstance(x, m.StopEngine) for _, x in out) and engine not in h.s.engines
    h.s.connection_closed(engine)
    assert h.pushed(h.out(), "drv2")["t1/0"].inline == dumps(7)


def test_a_failure_is_pushed_even_if_it_claims_delivery():
    h = Harness()
    _local_driver(h)
    tid, engine, msg = _execute(h, "drv2")
    h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
        ObjectEntry(f"{tid}/0", error=True, inline=dumps(ValueError()))], failed=True,
        delivered=True))
    assert f"{tid}/0" in h.pushed(h.out(), "drv2")


def test_a_delivered_success_of_a_cancelling_task_counts_as_finished():
    h = Harness()
    _local_driver(h)
    tid, engine, msg = _execute(h, "drv2")
    h.s.handle("drv2", m.CancelTask(object_id=f"{tid}/0"))
    assert h.s.tasks[tid].state == "cancelling"
    h.s.handle("drv", m.Subscribe(object_ids=[f"{tid}/0"]))
    h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
        ObjectEntry(f"{tid}/0", inline=dumps(7))], delivered=True))
    out = h.out()
    assert h.pushed(out, "drv")[f"{tid}/0"].error is False
    assert f"{tid}/0" not in h.pushed(out, "drv2")


def _stops(out):
    return [msg.engine_id for c, msg in out if isinstance(msg, m.StopEngine)]


def _orphan(h):
    """drv2 has a direct task running and queued on one engine, then leaves."""
    now = [0.0]
    h.s.clock = lambda: now[0]
    _local_driver(h)
    running, engine, _ = _execute(h, "drv2")
    queued = h.submit(conn="drv2")
    assert h.s.tasks[queued].state == "queued" and h.s.tasks[queued].engine_id == engine
    h.out()
    h.s.connection_closed("drv2")
    return now, engine, running, queued


def test_a_departed_owners_direct_tasks_may_still_finish():
    # The driver read both results straight from the engine and left before
    # the engine's TaskFinished messages reached the scheduler.
    h = Harness(cpus=1)
    now, engine, running, queued = _orphan(h)
    assert not _stops(h.out())
    assert h.s.tasks[running].state == "running"
    for tid in (running, queued):
        h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
            ObjectEntry(f"{tid}/0", inline=dumps(7))], delivered=True))
    now[0] = 10.0
    h.s.heartbeat()
    assert not _stops(h.out())                     # its engine is not replaced
    assert [h.s.story(t)[-1]["to"] for t in (running, queued)] == ["finished", "finished"]
    assert not h.s.tasks and not h.s.objects and not h.s.orphans


def test_a_departed_owners_direct_task_is_cancelled_after_the_grace():
    h = Harness(cpus=1)
    now, engine, running, queued = _orphan(h)
    now[0] = 0.5
    h.s.heartbeat()
    assert not _stops(h.out()) and h.s.tasks[running].state == "running"
    now[0] = 1.5
    h.s.heartbeat()
    assert _stops(h.out()) == [engine]             # it still runs: stopped with force
    assert [h.s.story(t)[-1]["to"] for t in (running, queued)] == ["cancelled", "cancelled"]
    assert not h.s.tasks and not h.s.orphans


def test_a_departed_owners_relayed_task_is_cancelled_at_once():
    h = Harness(cpus=1)
    tid = h.submit(conn="drv")                     # no reply channel: the relay
    assert h.s.tasks[tid].direct is False
    h.out()
    h.s.connection_closed("drv")
    assert _stops(h.out()) == ["h1.e0"] and tid not in h.s.tasks


# ---------------------------------------------------------------- the engine
def test_only_plain_successes_go_direct():
    ok = [ObjectEntry("t/0", inline=b"x")]
    assert _plain_success(ok, [[]], failed=False)
    assert not _plain_success(ok, [[]], failed=True)
    assert not _plain_success(ok, [["other/0"]], failed=False)               # holds a ref
    assert not _plain_success([ObjectEntry("t/0", host_id="h1")], [[]], failed=False)
    assert not _plain_success([], [], failed=False)                          # nothing to send


def test_an_engine_relays_when_no_channel_answers(tmp_path):
    replies = ReplyConnections(KEY, "e1")
    address = "unix:" + str(tmp_path / "none.sock")
    assert replies.send(address, [m.Heartbeat()]) is False
    started = time.monotonic()
    assert replies.send(address, [m.Heartbeat()]) is False                   # not retried at once
    assert time.monotonic() - started < 0.05


# ---------------------------------------------------------------- the driver's channel
class Served:
    """A ReplyChannel served on a thread, with a stand-in scheduler connection;
    what engines and the scheduler send it goes to `direct` and `relayed`, or to
    the given callbacks."""

    def __init__(self, tmp_path, on_direct=None, on_scheduler=None):
        self.channel = ReplyChannel(str(tmp_path), "d2", KEY)
        self.direct, self.relayed = [], []
        self.got = threading.Event()
        self.error = None
        a, self.scheduler_end = socket.socketpair()
        self.scheduler = Connection(a)

        def keep(msg):
            from shoal.core.reply_channel import check_direct
            check_direct(msg)
            self.direct.append(msg)
            self.got.set()

        def run():
            try:
                self.channel.serve(self.scheduler, on_scheduler or self.relayed.append,
                                   on_direct or keep)
            except Exception as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self):
        self.scheduler_end.close()
        self.thread.join(5)


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path)
    yield s
    s.stop()


def _ready(oid="t/0"):
    return m.ObjectsReady(entries=[ObjectEntry(oid, inline=dumps(1))])


def test_the_channel_is_0600_in_the_session_dir_and_removed_on_close(served, tmp_path):
    path = served.channel.path
    assert os.path.dirname(path) == str(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    served.stop()
    assert served.error is not None and not os.path.exists(path)


def test_a_wrong_key_is_refused_and_the_channel_serves_on(served):
    with pytest.raises(AuthenticationError):
        Connection.connect(served.channel.address, b"x" * 32, timeout=5)
    conn = Connection.connect(served.channel.address, KEY, timeout=5)
    conn.send(_ready())
    assert served.got.wait(5)
    assert served.direct[0].entries[0].object_id == "t/0"
    conn.close()


@pytest.mark.parametrize("bad", ["message", "bytes", "entries"])
def test_a_malformed_message_closes_that_connection_only(served, bad):
    conn = Connection.connect(served.channel.address, KEY, timeout=5)
    if bad == "message":
        conn.send(m.Query(request_id=1, kind="status", args={}))    # not what engines send here
    elif bad == "bytes":
        conn.send_chunks(encode_frame(b"not a pickle"))
    else:
        conn.send(m.ObjectsReady(entries=[("t/0", False, b"x")]))    # not ObjectEntry records
    conn.sock.settimeout(5)
    assert conn.sock.recv(1) == b""          # closed by the driver
    assert served.error is None and served.thread.is_alive()
    good = Connection.connect(served.channel.address, KEY, timeout=5)
    good.send(_ready("t/9"))
    assert served.got.wait(5) and served.direct[-1].entries[0].object_id == "t/9"
    good.close()


def test_a_silent_peer_does_not_hold_up_the_others(served):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(served.channel.path)          # never answers the challenge
    conn = Connection.connect(served.channel.address, KEY, timeout=5)
    conn.send(_ready())
    assert served.got.wait(5)
    silent.close()
    conn.close()


def test_engine_side_connections_deliver_in_order(served):
    replies = ReplyConnections(KEY, "e1")
    out = m.TaskOutput(task_id="t", name="f", pid=1, stream="stdout", text="hi\n")
    assert replies.send(served.channel.address, [out, _ready()])
    wait = time.monotonic() + 5
    while len(served.direct) < 2 and time.monotonic() < wait:
        time.sleep(0.01)
    assert [type(x) for x in served.direct] == [m.TaskOutput, m.ObjectsReady]


def test_an_actor_engines_connection_announces_it_and_outlives_a_frame_too_large(served,
                                                                               monkeypatch):
    from shoal.protocol import framing
    replies = ReplyConnections(KEY, "e1", "A1", on_call=lambda msg, address: None)
    assert replies.send(served.channel.address, [_ready("t/0")])
    wait = time.monotonic() + 5
    # t/0 read first: MAX_MESSAGE is this process's, so the channel's reader
    # would refuse a frame it had not parsed yet (its hello goes in one before).
    while not served.direct and time.monotonic() < wait:
        time.sleep(0.01)
    conn, engine_id = served.channel.actor_engine("A1")
    assert engine_id == "e1"
    monkeypatch.setattr(framing, "MAX_MESSAGE", 10)    # nothing can be written now
    assert not replies.send(served.channel.address, [_ready("t/1")])
    monkeypatch.undo()
    assert replies.send(served.channel.address, [_ready("t/2")])  # the same connection
    while len(served.direct) < 2 and time.monotonic() < wait:
        time.sleep(0.01)
    assert [x.entries[0].object_id for x in served.direct] == ["t/0", "t/2"]
    assert served.channel.actor_engine("A1")[0] is conn


# ---------------------------------------------------------------- first entry wins
class _NoConn:
    closed = False

    def send_chunks(self, chunks):
        pass


def _client():
    return Client(_NoConn(), m.Welcome(cluster_id="c", session_dir="/nonexistent", hosts=[]),
                  "d", "driver")


def test_the_first_entry_for_an_id_wins():
    c = _client()
    c.own("t/0")
    c._on_ready([ObjectEntry("t/0", inline=b"direct")], direct=True)
    c._on_ready([ObjectEntry("t/0", inline=b"relayed")])     # a re-run's, or its crash
    assert c._entries["t/0"].inline == b"direct"
    c.own("u/0")
    c._on_ready([ObjectEntry("u/0", inline=b"relayed")])
    c._on_ready([ObjectEntry("u/0", inline=b"direct")], direct=True)
    assert c._entries["u/0"].inline == b"relayed"


def test_a_direct_value_nobody_holds_is_dropped_and_not_remembered():
    c = _client()
    c._on_ready([ObjectEntry("t/0", inline=b"x")], direct=True)
    assert "t/0" not in c._entries and not c._direct_ids
    c.own("t/1")
    c._on_ready([ObjectEntry("t/1", inline=b"x")], direct=True)
    c.release("t/1")
    assert not c._direct_ids


def test_an_engine_that_dies_after_a_whole_batch_of_reports_has_every_result_pushed():
    # A batch of reports (engine/finishes.py holds up to REPORT_BATCH_MAX) went
    # out, then the engine died before it sent their values straight.
    h = Harness(cpus=1)
    _local_driver(h)
    tids = [h.submit(conn="drv2") for _ in range(m.REPORT_BATCH_MAX + 1)]
    h.out()
    engine = "h1.e0"
    for tid in tids[:m.REPORT_BATCH_MAX]:
        h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
            ObjectEntry(f"{tid}/0", inline=dumps(7))], delivered=True))
    h.out()
    h.s.connection_closed(engine)
    pushed = h.pushed(h.out(), "drv2")
    assert all(f"{tid}/0" in pushed for tid in tids[:m.REPORT_BATCH_MAX])


def test_the_scheduler_is_read_first_when_it_and_an_engine_are_ready_together(tmp_path):
    """What the scheduler relayed (a nested task's output) may precede, causally,
    what an engine then sent straight (the result of the call that ran it): in
    a round where both sockets are readable, the scheduler's comes first."""
    order, release, first = [], threading.Event(), threading.Event()

    def on_direct(msg):
        order.append(("engine", msg.entries[0].object_id))
        if msg.entries[0].object_id == "t/0":
            first.set()
            release.wait(5)                # hold the loop while both get readable

    served = Served(tmp_path, on_direct, lambda msg: order.append(("scheduler", msg.task_id)))
    engine = Connection.connect(served.channel.address, KEY, timeout=5)
    engine.send(_ready("t/0"))
    assert first.wait(5)
    Connection(served.scheduler_end).send(m.TaskOutput(task_id="leaf", name="f", pid=1,
                                                       stream="stdout", text="leaf\n"))
    engine.send(_ready("t/1"))
    # Both readable before the loop looks again: the engine's bytes went first, and
    # the scheduler's socket (the channel's end) shows readable once its bytes are in.
    assert select.select([served.scheduler.sock], [], [], 5)[0] == [served.scheduler.sock]
    release.set()
    deadline = time.monotonic() + 5
    while len(order) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == [("engine", "t/0"), ("scheduler", "leaf"), ("engine", "t/1")]
    engine.close()
    served.stop()
