"""An engine's reports of finished tasks (engine/finishes.py): held while a
task or plain actor call has more waiting, sent together, in the order a lone
report has (the scheduler hears first)."""
import threading
import time

import pytest

import shoal
from shoal.engine import finishes
from shoal.engine.finishes import Finishes
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry

pytestmark = pytest.mark.timeout(60)


class _Wire:
    """Both ends an engine writes to, as one ordered record of writes."""

    def __init__(self, reply_ok=True):
        self.writes, self.reply_ok = [], reply_ok
        self.lock = threading.Lock()

    def send(self, *msgs):                    # the scheduler's connection (Client.send)
        with self.lock:
            self.writes.append(("scheduler", list(msgs)))

    def reply(self, address, msgs):           # ReplyConnections.send
        with self.lock:
            self.writes.append((address, list(msgs)))
        return self.reply_ok


def _finishes(reply_ok=True):
    wire = _Wire(reply_ok)
    replies = type("Replies", (), {"send": staticmethod(wire.reply)})()
    return Finishes(type("Client", (), {"send": staticmethod(wire.send)})(), replies), wire


def _done(n):
    return m.TaskFinished(task_id=f"t{n}", results=[ObjectEntry(f"t{n}/0", inline=b"x")],
                          delivered=True)


def test_a_lone_report_tells_the_scheduler_then_the_owner():
    f, wire = _finishes()
    f.send(_done(1), "unix:drv")
    assert [(to, [type(x).__name__ for x in msgs]) for to, msgs in wire.writes] == [
        ("scheduler", ["TaskFinished"]), ("unix:drv", ["ObjectsReady"])]


def test_held_reports_go_out_with_the_next_lone_one_in_order():
    f, wire = _finishes()
    for n in range(3):
        f.send(_done(n), "unix:drv", hold=True)
    assert wire.writes == [] and f.holding
    f.send(_done(3), None)
    assert [to for to, _ in wire.writes] == ["scheduler", "unix:drv"]
    assert [x.task_id for x in wire.writes[0][1]] == ["t0", "t1", "t2", "t3"]
    assert [e.object_id for e in wire.writes[1][1][0].entries] == ["t0/0", "t1/0", "t2/0"]
    assert not f.holding


def test_at_most_hold_max_are_held():
    f, wire = _finishes()
    for n in range(finishes.HOLD_MAX):
        f.send(_done(n), None, hold=True)
    assert len(wire.writes) == 1 and len(wire.writes[0][1]) == finishes.HOLD_MAX


def test_a_held_report_goes_out_after_hold_delay_on_its_own():
    f, wire = _finishes()
    f.send(_done(1), "unix:drv", hold=True)
    deadline = time.monotonic() + 5
    while not wire.writes and time.monotonic() < deadline:
        time.sleep(0.001)
    assert [to for to, _ in wire.writes] == ["scheduler", "unix:drv"]


def test_a_failed_send_of_held_results_says_undelivered_for_each():
    f, wire = _finishes(reply_ok=False)
    f.send(_done(1), "unix:drv", hold=True)
    f.send(_done(2), "unix:drv", hold=True)
    f.flush()
    assert [x.task_id for x in wire.writes[-1][1] if isinstance(x, m.Undelivered)] == ["t1", "t2"]


def test_a_short_calls_value_is_not_held_behind_a_long_call():
    shoal.shutdown()
    shoal.init(num_cpus=2)
    try:
        @shoal.remote
        class Calls:
            def quick(self, wait_for_more=False):
                if wait_for_more:        # end only once the slow call waits in the inbox
                    from shoal.core import runtime
                    engine = runtime.current().client._on_message.__self__
                    deadline = time.monotonic() + 30
                    while engine.inbox.empty() and time.monotonic() < deadline:
                        time.sleep(0.001)
                    assert not engine.inbox.empty()
                return "quick"

            def slow(self):
                time.sleep(3)
                return "slow"

        calls = Calls.remote()
        shoal.get(calls.quick.remote(), timeout=60)
        quick = calls.quick.remote(True)
        slow = calls.slow.remote()
        started = time.monotonic()
        assert shoal.get(quick, timeout=60) == "quick"
        assert time.monotonic() - started < 2
        assert shoal.get(slow, timeout=60) == "slow"
        # A burst: every value arrives, in order.
        assert shoal.get([calls.quick.remote() for _ in range(500)], timeout=60) == \
            ["quick"] * 500
    finally:
        shoal.shutdown()


def test_the_timers_batch_and_the_next_one_never_cross():
    """The timer's flush is slow to write (preempted): the engine's next report
    waits for it, so the scheduler hears of the tasks in the order they ended."""
    f, wire = _finishes()
    writing, send = threading.Event(), wire.send

    def slow_send(*msgs):
        if not writing.is_set():
            writing.set()
            time.sleep(0.2)
        send(*msgs)

    f._client = type("Client", (), {"send": staticmethod(slow_send)})()
    f.send(_done(1), None, hold=True)            # the timer sends it, slowly
    assert writing.wait(5)
    f.send(_done(2), None)
    assert [[x.task_id for x in msgs] for to, msgs in wire.writes] == [["t1"], ["t2"]]
