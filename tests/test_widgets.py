"""Level 1 for the widgets: events in, widget state out.  No cluster, no kernel.

Batches of `messages.Events` are built by hand and fed to the pure models,
or to real widgets through a Feed whose subscription is a stub, so every
path from the event stream to what the frontend receives is checked in
milliseconds.  (Widgets made outside a kernel talk to a dummy comm.)
"""
import json
import math
import threading
import time
from array import array

import pytest

from shoal.protocol.messages import Events, TaskEvent
from shoal.widgets import html as h
from shoal.widgets import trace
from shoal.widgets.cluster import ClusterModel, ClusterWidget
from shoal.widgets.cluster import snapshot_html as cluster_html
from shoal.widgets.feed import Feed
from shoal.widgets.objects import ObjectStoreModel, ObjectsWidget
from shoal.widgets.objects import snapshot_html as objects_html
from shoal.widgets.progress import ProgressModel, ProgressWidget, summary_text
from shoal.widgets.progress import snapshot_html as progress_html
from shoal.widgets.timeline import TimelineModel, TimelineWidget
from shoal.widgets.timeline import snapshot_html as timeline_html

pytestmark = pytest.mark.timeout(30)
T = 1_700_000_000.0          # a wall-clock base for event times


def run(tid, status, start, end=None, name="f", engine="h1.e0", host="h1"):
    return TaskEvent(tid, name, status, engine, host, None if start is None else T + start,
                     None if end is None else T + end)


def batch(*tasks, snapshot=False, objects=False, cluster=False):
    return Events(tasks=list(tasks), objects_changed=objects, cluster_changed=cluster,
                  snapshot=snapshot)


def wait_until(cond, timeout=5.0, what="condition"):
    """Poll `cond` until it holds; fail after `timeout` seconds (the feed runs on its thread)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
    return True


# ---------------------------------------------------------------------- feed
class FakeClient:
    lost = None


class StubSubscription:
    def __init__(self, handler):
        self.handler = handler
        self.closed = False

    def close(self):
        self.closed = True


class Recorder:
    """A view that records the feed's calls (and which thread made them)."""

    def __init__(self, wake=None):
        self.batches, self.flushes, self.reasons, self.threads = [], [], [], set()
        self.wake = wake

    def apply(self, b):
        self.threads.add(threading.current_thread().name)
        self.batches.append(b)

    def flush(self, now):
        self.flushes.append(now)
        return self.wake(now) if self.wake else None

    def closed(self, reason):
        self.reasons.append(reason)


@pytest.fixture
def feed():
    subs = []
    client = FakeClient()
    f = Feed(client, subscribe=lambda handler: subs.append(StubSubscription(handler)) or subs[-1])
    f.push = lambda b: subs[0].handler(b)
    f.sub = subs[0]
    yield f
    f.close()
    assert not f.alive


def test_feed_replays_history_to_a_late_view_and_runs_views_on_its_thread(feed):
    feed.push(batch(run("t1", "running", 0), snapshot=True))
    feed.push(batch(run("t1", "finished", 0, 1)))
    wait_until(lambda: feed.task_history() is not None and len(feed.history) == 2)
    view = Recorder()
    feed.add(view)
    wait_until(lambda: view.batches and view.flushes, what="replay and flush")
    first = view.batches[0]
    assert first.snapshot and [e.status for e in first.tasks] == ["running", "finished"]
    assert view.threads == {"shoal-widgets-feed"}
    feed.push(batch(run("t2", "running", 2)))
    wait_until(lambda: len(view.batches) == 2)
    assert view.batches[1].tasks[0].task_id == "t2"


def test_feed_snapshot_replaces_its_history(feed):
    feed.push(batch(run("t1", "finished", 0, 1), snapshot=True))
    feed.push(batch(run("t2", "finished", 1, 2), snapshot=True))
    wait_until(lambda: [e.task_id for e in feed.history] == ["t2"])


def test_feed_throttles_flushes_to_its_interval(feed):
    view = Recorder()
    feed.add(view)
    wait_until(lambda: view.flushes)
    for i in range(40):                      # a burst of batches, faster than the interval
        feed.push(batch(run(f"t{i}", "running", i)))
    wait_until(lambda: sum(len(b.tasks) for b in view.batches) >= 40)
    gaps = [b - a for a, b in zip(view.flushes, view.flushes[1:])]
    assert gaps and min(gaps) >= feed.interval * 0.9


def test_feed_calls_a_view_again_when_it_asks_to(feed):
    view = Recorder(wake=lambda now: now + 0.05)      # e.g. a progress bar's time-left tick
    feed.add(view)
    wait_until(lambda: len(view.flushes) >= 3, what="three flushes with no events")


def test_feed_tells_views_when_the_client_is_lost_and_ends():
    subs = []
    client = FakeClient()
    f = Feed(client, subscribe=lambda handler: subs.append(StubSubscription(handler)) or subs[-1])
    view = Recorder()
    f.add(view)
    wait_until(lambda: view.flushes)
    client.lost = "the scheduler went away"
    wait_until(lambda: not f.alive, what="the pump thread to end")
    assert view.reasons == ["the scheduler went away"]
    late = Recorder()
    f.add(late)                               # a view added after the end is told at once
    assert late.reasons == ["the scheduler went away"]
    f.close()


def test_feed_close_is_idempotent_and_unsubscribes(feed):
    view = Recorder()
    feed.add(view)
    feed.close()
    feed.close()
    assert feed.sub.closed and not feed.alive
    assert view.reasons == ["the widgets were closed"]


def test_a_broken_view_does_not_stop_the_others(feed):
    class Broken(Recorder):
        def apply(self, b):
            raise RuntimeError("bug")
    good, bad = Recorder(), Broken()
    feed.add(bad)
    feed.add(good)
    feed.push(batch(run("t1", "running", 0)))
    wait_until(lambda: any(b.tasks for b in good.batches))


# ---------------------------------------------------------------------- progress
def test_progress_counts_done_failed_running_and_finishes():
    m = ProgressModel(["a.t1/0", "a.t2/0", "a.t3/0", "a.t4/0"], title="four", created=T)
    assert m.view(T)["status"] == "running" and m.total == 4
    m.apply([run("a.t1", "running", 0), run("a.t2", "running", 0)])
    v = m.view(T + 0.5)
    assert (v["done"], v["failed"], v["running"]) == (0, 0, 2)
    m.apply([run("a.t1", "finished", 0, 1), run("a.t2", "failed", 0, 1.5),
             run("other.t9", "finished", 0, 1)])             # not ours: ignored
    v = m.view(T + 2)
    assert (v["done"], v["failed"], v["running"]) == (1, 1, 0)
    assert v["rate"] == pytest.approx(2 / 2.0)
    assert v["eta"] == pytest.approx(2 / 1.0)
    m.apply([run("a.t3", "finished", 1, 3), run("a.t4", "cancelled", None, 3.5)])
    v = m.view(T + 10)
    assert v["status"] == "failed" and m.complete
    assert (v["done"], v["failed"], v["cancelled"]) == (2, 1, 1)
    assert v["elapsed"] == pytest.approx(3.5)                 # first start to last end, not now
    assert v["eta"] is None


def test_progress_retries_are_not_final_and_replays_do_not_double_count():
    m = ProgressModel(["a.t1/0"], created=T)
    m.apply([run("a.t1", "running", 0), run("a.t1", "retried", 0, 1), run("a.t1", "crashed", 1, 2)])
    assert m.view(T + 2)["status"] == "running" and m.settled == 0
    ev = run("a.t1", "finished", 2, 3)
    m.apply([ev])
    m.apply([ev])                                   # a snapshot replays history
    assert m.counts == {"done": 1, "failed": 0, "cancelled": 0}
    assert m.view(T + 5)["status"] == "done"


def test_progress_multiple_returns_and_puts():
    m = ProgressModel(["a.t1/0", "a.t1/1", "a.p7"], created=T)
    assert m.total == 3
    m.apply([run("a.t1", "finished", 0, 1)])
    assert m.counts["done"] == 2
    m.reconcile(["a.p7"], now=T + 1)                # a put is ready at once: no event ever
    assert m.complete and m.view(T + 2)["status"] == "done"


def test_progress_reconcile_guess_is_corrected_by_a_failure_event():
    m = ProgressModel(["a.t1/0", "a.t2/0"], created=T)
    m.reconcile(["a.t1/0", "a.t2/0"], now=T + 1)
    assert m.counts["done"] == 2
    m.apply([run("a.t2", "failed", 0, 0.5)])
    assert m.counts == {"done": 1, "failed": 1, "cancelled": 0}
    m.apply([run("a.t1", "finished", 0, 0.5)])       # confirms the guess: unchanged
    assert m.counts == {"done": 1, "failed": 1, "cancelled": 0}


def test_progress_lost_cluster_and_texts():
    m = ProgressModel(["a.t1/0", "a.t2/0"], title="t", created=T)
    m.apply([run("a.t1", "finished", 0, 1)])
    m.mark_lost("the scheduler died")
    v = m.view(T + 2)
    assert v["status"] == "lost"
    assert "cluster lost: the scheduler died" in summary_text(v)
    page = progress_html(v)
    assert 'data-status="lost"' in page and 'data-done="1"' in page


def test_progress_widget_updates_its_view_from_the_feed(feed):
    ready_calls = []
    w = ProgressWidget(["a.t1/0", "a.t2/0", "a.p3"], title="demo", feed=feed,
                       wait=lambda ids: ready_calls.append(list(ids)) or ["a.p3"])
    feed.push(batch(run("a.t1", "running", 0), snapshot=True))
    wait_until(lambda: w.view.get("running") == 1 and w.view.get("done") == 1,
               what="running and the put settled")
    assert ready_calls[0] == ["a.t1/0", "a.t2/0", "a.p3"]
    feed.push(batch(run("a.t1", "finished", 0, 1), run("a.t2", "finished", 0, 1.2)))
    wait_until(lambda: w.view.get("status") == "done")
    assert w.view["done"] == 3 and w.view["total"] == 3
    data, _ = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert 'data-done="3"' in data["text/html"] and "3 / 3 done" in data["text/plain"]
    feed.close()
    wait_until(lambda: not w.live)
    assert w.view["status"] == "done"              # the final state stays


# ---------------------------------------------------------------------- timeline
def decode(content, buffers):
    kinds = ["i", "i", "i", "i", "d", "d"]
    cols = []
    for kind, buf in zip(kinds, buffers):
        a = array(kind)
        a.frombytes(bytes(buf))
        cols.append(list(a))
    return dict(zip(content["columns"], cols))


def test_timeline_a_bar_per_run_retries_included():
    m = TimelineModel()
    m.apply([run("t1", "running", 0), run("t2", "running", 0, engine="h1.e1")])
    assert len(m) == 2 and m.open == 2
    m.apply([run("t1", "retried", 0, 1), run("t1", "running", 1.5),
             run("t1", "finished", 1.5, 2), run("t2", "failed", 0, 3, engine="h1.e1"),
             run("t3", "cancelled", None, 3)])        # never ran: counted, no bar
    assert len(m) == 3 and m.open == 0
    assert m.counts == {"finished": 1, "failed": 1, "cancelled": 1, "retried": 1}
    runs = m.runs()
    assert [(r["task_id"], r["status"]) for r in runs] == [
        ("t1", "retried"), ("t2", "failed"), ("t1", "finished")]
    assert runs[2]["start"] == T + 1.5 and runs[2]["end"] == T + 2


def test_timeline_a_task_started_again_before_it_ran_keeps_one_bar():
    """The scheduler promoted t1 on e0 (a "running" event), but e0 had given it back:
    t1 starts again on e1.  Its one run moves there; nothing stays open.  An end whose
    start was never announced closes the task's open run too."""
    m = TimelineModel()
    m.apply([run("t1", "running", 0), run("t1", "running", 0.5, engine="h1.e1")])
    assert len(m) == 1 and m.open == 1
    m.apply([run("t1", "finished", 0.5, 1, engine="h1.e1")])
    assert len(m) == 1 and m.open == 0 and m.counts["finished"] == 1
    assert [(r["engine_id"], r["start"], r["end"]) for r in m.runs()] == [("h1.e1", T + 0.5, T + 1)]
    m.apply([run("t2", "running", 2), run("t2", "finished", 2.5, 3)])
    assert len(m) == 2 and m.open == 0 and m.runs()[1]["start"] == T + 2.5
    m.apply([run("t2", "running", 2.5)])              # a replay of an ended run opens nothing
    assert m.open == 0


def test_a_revoked_run_is_no_run_for_the_timeline_or_the_progress_bar():
    """The scheduler now says "revoked" when it undoes a promotion (the engine had
    given the task back): neither view counts it; the run that follows is the one."""
    events = [run("a.t1", "running", 0), run("a.t1", "revoked", 0, 0.2),
              run("a.t1", "running", 0.5, engine="h1.e1"),
              run("a.t1", "finished", 0.5, 1, engine="h1.e1")]
    tl = TimelineModel()
    tl.apply(events[:2])
    tl.apply(events[2:])
    assert len(tl) == 1 and tl.open == 0 and tl.counts["finished"] == 1
    assert [(r["engine_id"], r["start"]) for r in tl.runs()] == [("h1.e1", T + 0.5)]
    pm = ProgressModel(["a.t1/0"], created=T)
    pm.apply(events[:2])
    assert pm.view(T + 0.3)["running"] == 0 and pm.settled == 0
    pm.apply(events[2:])
    assert pm.counts == {"done": 1, "failed": 0, "cancelled": 0}


def test_timeline_delta_then_reset_columns_round_trip():
    m = TimelineModel()
    m.apply([run("t1", "running", 1, name="load"), run("t2", "running", 2, name="fit")])
    reset, rows = m.take()
    assert reset and rows == [0, 1]
    content, buffers = m.columns(rows)
    cols = decode(content, buffers)
    assert content["t0"] == T + 1 and content["ids"] == ["t1", "t2"]
    assert cols["start"] == [0.0, 1.0] and all(math.isnan(e) for e in cols["end"])
    assert [m.names[i] for i in cols["name"]] == ["load", "fit"]
    m.apply([run("t2", "finished", 2, 4, name="fit")])
    reset, rows = m.take()
    assert not reset and rows == [1]                 # only the row that changed
    cols = decode(*m.columns(rows))
    assert cols["row"] == [1] and cols["end"] == [3.0] and cols["status"] == [1]
    m.apply([run("t0", "finished", 0, 0.5)])         # earlier than t0: everything again
    reset, rows = m.take()
    assert reset and rows == [0, 1, 2] and m.t0 == T


def test_timeline_snapshot_rebuilds_and_the_oldest_half_goes_past_the_cap():
    m = TimelineModel(max_runs=10)
    m.apply([run(f"t{i}", "finished", i, i + 0.5) for i in range(8)])
    m.take()
    m.apply([run("t1", "finished", 1, 1.5)], snapshot=True)
    assert len(m) == 1 and m.counts["finished"] == 1 and m.take()[0]
    m.apply([run("long", "running", 1.7)] + [run(f"u{i}", "finished", 2 + i, 2.5 + i)
                                            for i in range(12)])
    assert len(m) <= 10
    assert "long" in m.task_id                        # an open run is never dropped
    assert m.take()[0]                                # the frontend gets a reset


def test_timeline_lanes_grouped_by_host_in_natural_order():
    m = TimelineModel()
    m.set_engines([("h2.e0", "h2"), ("h1.e10", "h1"), ("h1.e9", "h1")])
    m.apply([run("t1", "finished", 0, 1, engine="h1.e2", host="h1")])
    order = [m.engines[i][0] for i in m.lane_order()]
    assert order == ["h1.e2", "h1.e9", "h1.e10", "h2.e0"]
    meta = m.meta(T)
    alive = {e: a for e, _, a in meta["engines"]}
    assert alive == {"h2.e0": True, "h1.e10": True, "h1.e9": True, "h1.e2": False}


def test_timeline_ten_thousand_runs():
    m = TimelineModel()
    names = ["load", "parse", "fit", "score"]
    evs = []
    for i in range(10_000):
        e = f"h{i % 3}.e{i % 8}"
        evs += [run(f"t{i}", "running", i * 0.001, name=names[i % 4], engine=e, host=e[:2]),
                run(f"t{i}", "failed" if i % 997 == 0 else "finished", i * 0.001,
                    i * 0.001 + 0.004, name=names[i % 4], engine=e, host=e[:2])]
    m.apply(evs)
    assert len(m) == 10_000 and m.open == 0 and m.counts["failed"] == 11
    reset, rows = m.take()
    content, buffers = m.columns(rows)
    assert content["n"] == 10_000 and all(len(b) == 10_000 * (4 if i < 4 else 8)
                                          for i, b in enumerate(buffers))
    page = timeline_html(m)
    assert page.count("<rect") < 8 * 860              # merged per pixel, not one per run
    assert 'data-runs="10000"' in page and "11 failed" in page


def test_timeline_snapshot_html_escapes_names():
    m = TimelineModel()
    m.apply([run("t1", "finished", 0, 1, name="<script>alert(1)</script>")])
    page = timeline_html(m)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "No tasks have run yet" in timeline_html(TimelineModel())


def test_timeline_widget_sends_nothing_until_displayed_then_reset_then_deltas(feed):
    sent = []
    w = TimelineWidget(feed=feed, list_engines=lambda: [("h1.e0", "h1"), ("h1.e1", "h1")])
    w.send = lambda content, buffers=None: sent.append((content, buffers))
    feed.push(batch(run("t1", "running", 0), snapshot=True, cluster=True))
    wait_until(lambda: w.meta.get("counts", {}).get("running") == 1)
    assert sent == []                                  # nobody is looking yet
    assert len(w.meta["engines"]) == 2
    data, _ = w._repr_mimebundle_()                    # displayed: a reset with everything
    assert 'data-runs="1"' in data["text/html"]
    wait_until(lambda: sent)
    assert sent[0][0]["type"] == "reset" and sent[0][0]["n"] == 1 and sent[0][0]["base"] == -1
    feed.push(batch(run("t1", "finished", 0, 1), run("t2", "running", 1)))
    wait_until(lambda: len(sent) == 2)
    delta = sent[1][0]
    assert delta["type"] == "rows" and delta["base"] == sent[0][0]["seq"] and delta["n"] == 2
    w._handle({"type": "hello", "seq": 0})             # a new view: everything again
    wait_until(lambda: len(sent) == 3)
    assert sent[2][0]["type"] == "reset" and sent[2][0]["n"] == 2


# ---------------------------------------------------------------------- export
RUNS = [
    {"task_id": "a.t1", "name": "load", "status": "finished", "engine_id": "h1.e0",
     "host_id": "h1", "start": T + 1.0, "end": T + 1.5},
    {"task_id": "a.t2", "name": "fit", "status": "failed", "engine_id": "h2.e0",
     "host_id": "h2", "start": T + 1.2, "end": T + 2.0},
]


def test_chrome_trace(tmp_path):
    path = trace.write(RUNS, tmp_path / "run.json")
    data = json.loads(open(path).read())
    ev = data["traceEvents"]
    xs = [e for e in ev if e["ph"] == "X"]
    assert [e["name"] for e in xs] == ["load", "fit"]
    assert [(e["ts"], e["dur"]) for e in xs] == [(0.0, pytest.approx(500_000, abs=1)),
                                                 (pytest.approx(200_000, abs=1),
                                                  pytest.approx(800_000, abs=1))]
    assert xs[1]["cname"] == "terrible" and xs[1]["args"]["task_id"] == "a.t2"
    names = {(e["name"], e["args"]["name"]) for e in ev if e["ph"] == "M"}
    assert ("process_name", "host h1") in names and ("thread_name", "engine h2.e0") in names
    assert xs[0]["pid"] != xs[1]["pid"]


def test_parquet(tmp_path):
    import pyarrow.parquet as pq
    path = trace.write(RUNS, tmp_path / "run.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["task_id", "name", "status", "engine_id", "host_id", "start",
                                  "end", "duration_s"]
    assert table.column("duration_s").to_pylist() == pytest.approx([0.5, 0.8])
    assert str(table.schema.field("start").type) == "timestamp[us, tz=UTC]"


def test_export_needs_a_known_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.json"):
        trace.write(RUNS, tmp_path / "run.csv")


# ---------------------------------------------------------------------- objects
OBJECTS = [
    {"object_id": "a.p1", "state": "ready", "size": 10, "type": "int", "where": "inline",
     "hosts": [], "spilled": False, "reference_count": 1, "held_by": ["driver"],
     "created_by": "put"},
    {"object_id": "a.t2/0", "state": "ready", "size": 5_000_000, "type": "ndarray",
     "where": "spilled", "hosts": ["h1"], "spilled": True, "reference_count": 2,
     "held_by": [], "created_by": "task f (a.t2)"},
    {"object_id": "a.p3", "state": "ready", "size": 300_000, "type": "bytes",
     "where": "shared memory", "hosts": ["h1", "h2"], "spilled": False,
     "reference_count": 1, "held_by": [], "created_by": "x" * 300},
]
MEMORY = [{"host_id": "h1", "hostname": "node-1", "used": 300_000, "limit": 1_000_000,
           "spilled": 5_000_000, "objects": 2}]


def test_object_store_model_largest_first_capped():
    m = ObjectStoreModel(max_rows=2)
    m.update(OBJECTS, MEMORY, now=T)
    v = m.view()
    assert [r["object_id"] for r in v["rows"]] == ["a.t2/0", "a.p3"]
    assert v["count"] == 3 and v["shown"] == 2 and v["bytes"] == 5_300_010
    assert v["rows"][1]["hosts"] == "h1, h2" and v["rows"][0]["spilled"] is True
    assert len(v["rows"][1]["created_by"]) == 120
    assert v["hosts"][0]["limit"] == 1_000_000
    page = objects_html(v)
    assert "a.t2/0" in page and "4.8 MiB" in page and "node-1" in page


def test_objects_widget_shows_the_store_at_once_and_requeries_when_objects_change(feed):
    queries = []
    w = ObjectsWidget(feed=feed, query=lambda: queries.append(1) or (OBJECTS, MEMORY),
                      min_interval=0.05)
    assert w.view["count"] == 3 and w.view["rows"][0]["object_id"] == "a.t2/0"   # in comm_open
    first = len(queries)
    feed.push(batch(objects=True))
    wait_until(lambda: len(queries) > first, what="a query after objects changed")


def test_objects_widget_waits_out_its_interval_unless_asked(feed):
    queries = []
    w = ObjectsWidget(feed=feed, query=lambda: queries.append(1) or (OBJECTS, MEMORY),
                      min_interval=3600)
    feed.push(batch(objects=True))
    feed.push(batch(objects=True))
    view = Recorder()                         # a later view's first flush: the feed has run
    feed.add(view)
    wait_until(lambda: view.flushes)
    assert len(queries) == 1                  # the interval holds the news back
    w._handle({"type": "refresh"})            # the frontend asks: now
    wait_until(lambda: len(queries) == 2)


# ---------------------------------------------------------------------- cluster
STATUS = {
    "hosts": [{"host_id": "h1", "hostname": "node-1", "resources": {"CPU": 4.0, "GPU": 1.0},
               "available": {"CPU": 1.0, "GPU": 1.0}, "engines": ["h1.e0", "h1.e1", "h1.e2",
                                                                  "h1.e3"]},
              {"host_id": "h2", "hostname": "node-2", "resources": {"CPU": 2.0},
               "available": {"CPU": 2.0}, "engines": ["h2.e0", "h2.e1"]}],
    "engines": [{"engine_id": f"h1.e{i}", "host_id": "h1", "state": "busy" if i < 3 else "idle"}
                for i in range(4)] + [{"engine_id": f"h2.e{i}", "host_id": "h2", "state": "idle"}
                                      for i in range(2)],
    "actors": [{"actor_id": "x"}],
    "tasks": {"waiting": 5, "ready": 7, "queued": 2, "revoking": 1, "running": 3,
              "cancelling": 1, "finished": 100, "failed": 2, "cancelled": 1},
    "memory": [{"host_id": "h1", "used": 10, "limit": 100, "spilled": 0},
               {"host_id": "h2", "used": 20, "limit": 100, "spilled": 5}],
}


def test_cluster_model_totals_and_tasks():
    m = ClusterModel("127.0.0.1:1", "embedded local cluster")
    m.update(STATUS, now=T)
    v = m.view()
    assert v["tasks"] == {"queued": 15, "running": 4, "done": 100, "failed": 2, "cancelled": 1}
    assert v["totals"]["engines"] == 6 and v["totals"]["busy"] == 3
    assert v["totals"]["cpus"] == 6 and v["totals"]["gpus"] == 1 and v["totals"]["mem_limit"] == 200
    assert v["hosts"][0]["busy"] == 3 and v["hosts"][1]["spilled"] == 5
    assert v["actors"] == 1
    page = cluster_html(v)
    assert "15 queued" in page and "node-2" in page and 'data-state="live"' in page
    assert 'data-state="stopped"' in cluster_html(v, live=False, reason="gone")


def test_cluster_widget_buttons_become_commands(feed):
    commands = []
    w = ClusterWidget(feed=feed, status=lambda: STATUS, commands=commands.append)
    wait_until(lambda: w.view.get("totals", {}).get("engines") == 6)
    w._handle({"type": "scale", "host_id": "h2", "delta": 1})
    w._handle({"type": "stop"})
    w._handle({"type": "rm -rf"})                       # unknown: ignored
    assert [c["type"] for c in commands] == ["scale", "stop"]


def test_cluster_widget_scale_never_goes_below_one_engine(feed):
    class Client(FakeClient):
        def __init__(self):
            self.calls = []

        def query(self, kind, **args):
            self.calls.append((kind, args))
    client = Client()
    w = ClusterWidget(client=client, feed=feed, status=lambda: STATUS)
    w.refresh()
    w.scale("h2", +1)
    w.scale("h2", -5)
    assert client.calls == [("scale", {"count": 3, "host_id": "h2"}),
                            ("scale", {"count": 1, "host_id": "h2"})]


# ---------------------------------------------------------------------- formatting
def test_formatting():
    assert h.nbytes(0) == "0 B" and h.nbytes(1536) == "1.5 KiB" and h.nbytes(3 * 2 ** 30) == "3.0 GiB"
    assert h.duration(0.0004) == "400 µs" and h.duration(0.25) == "250 ms"
    assert h.duration(3.456) == "3.46 s" and h.duration(125) == "2:05" and h.duration(3723) == "1:02:03"
    assert h.duration(None) == "—" and h.rate(None) == "—" and h.rate(250.4) == "250/s"
    assert h.rate(0.5) == "30.0/min"


@pytest.mark.slow        # importing nbconvert's exporters takes seconds
def test_nbconvert_shows_the_static_snapshot_where_no_widget_state_was_saved(feed):
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    tl = TimelineWidget(feed=feed, list_engines=lambda: [])
    tl.send = lambda content, buffers=None: None
    tl.apply(batch(run("t1", "finished", 0, 1, name="load"), snapshot=True))
    data, metadata = tl._repr_mimebundle_()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("shoal.timeline()", outputs=[
        nbformat.v4.new_output("display_data", data=data, metadata=metadata)])]
    page, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert "shoal-timeline-static" in page and 'data-runs="1"' in page
