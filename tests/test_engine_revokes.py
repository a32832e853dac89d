"""An engine gives back tasks queued in its inbox (RevokeTask), by copies: the
scheduler can send a task it took back to the same engine again while the copy
given back still waits there, and then exactly the copies it did not take back
run (once each), whatever order the engine meets them in."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.engine.engine import Engine
from shoal.protocol import messages as m

pytestmark = pytest.mark.timeout(60)


class _Client:
    def __init__(self):
        self.sent = []

    def send(self, *msgs):
        self.sent.extend(msgs)


def _engine():
    engine = Engine({"engine_id": "h.e0", "host_id": "h"})
    engine.client = _Client()
    engine.ran = []
    engine.run_sync = engine.ran.append          # what would run, in order
    return engine


def _execute(task_id):
    return m.ExecuteTask(task_id=task_id, func_id="f", func_blob=None, name="f", args=b"",
                         dep_values=[], return_ids=[f"{task_id}/0"], gpu_ids=[])


def _drain(engine):
    while not engine.inbox.empty():
        engine.dispatch(engine.inbox.get())
    return [msg.task_id for msg in engine.ran]


def test_a_task_sent_again_after_it_was_given_back_runs_once():
    engine = _engine()
    engine.on_message(_execute("x"))
    engine.on_message(m.RevokeTask(task_id="x"))        # taken back, still in the inbox
    engine.on_message(_execute("x"))                   # and sent here again
    assert _drain(engine) == ["x"]
    assert engine.client.sent == [m.TaskRevoked(task_id="x", ok=True)]


def test_a_second_copy_given_back_too_never_runs():
    engine = _engine()
    engine.on_message(_execute("x"))
    engine.on_message(m.RevokeTask(task_id="x"))
    engine.on_message(_execute("x"))
    engine.on_message(m.RevokeTask(task_id="x"))       # the copy sent again: taken back too
    assert _drain(engine) == []
    assert [r.ok for r in engine.client.sent] == [True, True]


def test_a_task_that_started_is_not_given_back():
    engine = _engine()
    engine.on_message(_execute("x"))
    engine.dispatch(engine.inbox.get())
    engine.on_message(m.RevokeTask(task_id="x"))
    assert engine.client.sent == [m.TaskRevoked(task_id="x", ok=False)] and engine.ran


# One task id: sent, given back, dispatched, in any order the protocol allows.
EVENTS = st.lists(st.sampled_from(["send", "revoke", "dispatch"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(events=EVENTS)
def test_every_copy_not_given_back_runs_exactly_once(events):
    engine = _engine()
    sent = granted = 0
    for event in events:
        if event == "send":
            engine.on_message(_execute("x"))
            sent += 1
        elif event == "revoke":
            engine.on_message(m.RevokeTask(task_id="x"))
            granted += engine.client.sent[-1].ok
        elif not engine.inbox.empty():
            engine.dispatch(engine.inbox.get())
    _drain(engine)
    assert len(engine.ran) == sent - granted
    assert not engine.waiting and not engine.revoked
