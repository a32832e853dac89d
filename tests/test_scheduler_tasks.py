"""Level 1: the scheduler's task table (scheduler/tasks.py), alone."""
import logging

import pytest

from shoal.protocol import messages as m
from shoal.scheduler import tasks
from shoal.scheduler.lifecycle import IllegalTransition
from shoal.scheduler.outbox import Outbox
from shoal.scheduler.tasks import TaskTable


def table(strict=True):
    return TaskTable(Outbox(), clock=lambda: 5.0, strict=strict)


def spec(tid, resources=None, placement=None, parent=None, engine_id=None):
    return m.SubmitTask(task_id=tid, func_id="f", name="f", args=b"", deps=[], nested=[],
                        return_ids=[f"{tid}/0"], resources=resources or {"CPU": 1.0},
                        placement=placement, parent_task_id=parent, engine_id=engine_id)


def test_a_task_is_waiting_when_made_and_each_transition_is_one_story_record():
    tt = table()
    tt.stimulate("SubmitTask", now=1.0)
    t = tt.new(spec("t1"), owner="drv")
    tt.to(t, "ready", "its arguments are ready")
    assert tt.live == {"t1": t} and t.state == "ready"
    assert tt.story("t1") == [
        {"time": 1.0, "stimulus": "SubmitTask-1", "from": None, "to": "waiting",
         "why": "submitted", "engine_id": None},
        {"time": 1.0, "stimulus": "SubmitTask-1", "from": "waiting", "to": "ready",
         "why": "its arguments are ready", "engine_id": None}]


def test_an_illegal_transition_raises_when_strict_and_is_logged_otherwise(caplog):
    tt = table()
    t = tt.new(spec("t1"), owner="drv")
    with pytest.raises(IllegalTransition, match="waiting -> running"):
        tt.to(t, "running", "a bug")
    tt.strict = False
    with caplog.at_level(logging.ERROR, logger="shoal.scheduler"):
        tt.to(t, "finished", "another bug")
    # (the raise left it waiting; lenient, the move happens and is logged)
    assert "BUG: illegal transition task t1 (f): waiting -> finished" in caplog.text
    assert t.state == "finished"


def test_an_ended_task_leaves_the_table_its_parent_and_is_counted_and_recorded():
    tt = table()
    parent = tt.new(spec("p"), owner="drv")
    child = tt.new(spec("c", parent="p"), owner="drv")
    parent.children.add("c")
    tt.to(child, "ready", "")
    tt.end(child, "cancelled", "cancelled")
    assert "c" not in tt.live and parent.children == set()
    assert tt.counts() == {"waiting": 1, "finished": 0, "failed": 0, "cancelled": 1}
    assert [(e.task_id, e.status, e.start) for e in tt.history] == [("c", "cancelled", None)]
    assert tt.story("c")[-1]["to"] == "cancelled" and isinstance(tt.ended_stories["c"], tuple)
    assert tt.out.take_events() == ([], set())        # nobody listens: nothing kept


def test_runs_are_told_to_listeners_and_a_revoked_run_is_not_history():
    tt = table()
    tt.out.subscribers.add("widget")
    t = tt.new(spec("t1"), owner="drv")
    t.engine_id, t.host_id, t.started_at = "e0", "h1", 2.0
    tt.running(t)
    tt.revoked(t)
    events, _ = tt.out.take_events()
    assert [(e.status, e.start, e.end) for e in events] == [("running", 2.0, None),
                                                            ("revoked", 2.0, 5.0)]
    assert list(tt.history) == []


def test_waiters_are_listed_per_object_and_handed_back_once():
    tt = table()
    a, b = tt.new(spec("a"), owner="drv"), tt.new(spec("b"), owner="drv")
    tt.wait_for(a, "x/0")
    tt.wait_for(b, "x/0")
    tt.wait_for(b, "y/0")
    assert b.missing == {"x/0", "y/0"}
    tt.end(a, "cancelled", "")
    assert tt.waiting_on("x/0") == [b]               # an ended waiter is not handed back
    assert tt.waiting_on("x/0") == []


def test_ready_tasks_queue_by_shape_with_a_queue_per_placement_and_pins_apart():
    tt = table()
    ts = [tt.new(spec(f"t{i}", resources={"CPU": 1.0}), owner="drv") for i in range(3)]
    gpu = tt.new(spec("g", resources={"GPU": 1.0}), owner="drv")
    placed = tt.new(spec("p", placement={"kind": "spread"}), owner="drv")
    pinned = tt.new(spec("e", engine_id="h1.e0"), owner="drv")
    for t in (*ts, gpu, placed, pinned):
        tt.to(t, "ready", "")
    for t in (ts[0], ts[1], gpu, placed):
        tt.enqueue(t)
    tt.enqueue(ts[2], front=True)
    tt.pin(pinned)
    assert {k: list(q) for k, q in tt.ready.items()} == {
        (("CPU", 1.0),): ["t2", "t0", "t1"], (("GPU", 1.0),): ["g"],
        (("CPU", 1.0), ("@placement", (("kind", "spread"),))): ["p"]}
    assert list(tt.pinned["h1.e0"]) == ["e"]
    tt.end(ts[0], "cancelled", "")
    assert [t.spec.task_id for t in tt.all_ready()] == ["t2", "t1", "g", "p"]


def test_stories_are_bounded_and_one_run_again_continues_its_story(monkeypatch):
    monkeypatch.setattr(tasks, "FINISHED_STORIES", 2)
    monkeypatch.setattr(tasks, "STORY_PER_TASK", 3)
    tt = table()
    for i in range(3):
        t = tt.new(spec(f"t{i}"), owner="drv")
        tt.end(t, "failed", "")
    assert list(tt.ended_stories) == ["t1", "t2"] and tt.story("t0") is None
    t = tt.new(spec("t2"), owner="drv", again="run again from its lineage")
    assert [r["to"] for r in tt.story("t2")] == ["waiting", "failed", "waiting"]
    tt.to(t, "ready", "")
    assert [r["to"] for r in tt.story("t2")] == ["waiting", "waiting", "ready"]   # first kept
