"""Level 2 for the widgets: a real embedded cluster feeds them through the event stream.

No kernel here: widgets talk to a dummy comm, and the tests read their
synced traits (what the frontend would receive).
"""
import json
import threading

import pytest

import shoal
from conftest import wait_for
from shoal import widgets
from shoal.widgets.feed import existing_feed

pytestmark = pytest.mark.timeout(90)


@shoal.remote
def square(x):
    return x * x


@shoal.remote
def fails():
    raise ValueError("on purpose")


@pytest.fixture(autouse=True)
def no_feeds_left():
    yield
    widgets.close_all()
    assert not [t for t in threading.enumerate() if t.name == "shoal-widgets-feed"]


def test_progress_timeline_objects_and_cluster_follow_real_tasks(cluster):
    tl = widgets.timeline()
    refs = [square.remote(i) for i in range(20)] + [fails.remote()]
    bar = shoal.progress(refs, title="squares")
    assert bar.view["total"] == 21
    big = shoal.put(b"x" * 300_000)
    small = shoal.put(7)
    store = shoal.objects()
    cw = widgets.cluster(cluster)
    with pytest.raises(ValueError):
        shoal.get(refs)
    wait_for(lambda: bar.view.get("status") == "failed", what="the bar's final state")
    assert (bar.view["done"], bar.view["failed"]) == (20, 1)
    wait_for(lambda: tl.meta.get("counts", {}).get("finished", 0) >= 20, what="timeline bars")
    ours = [r for r in tl.runs() if r["task_id"] in {ref.task_id() for ref in refs}]
    assert len(ours) == 21
    assert sorted(r["status"] for r in ours).count("failed") == 1
    assert {r["engine_id"] for r in ours} <= {e[0] for e in tl.meta["engines"]}
    wait_for(lambda: {big.id, small.id} <= {r["object_id"] for r in store.view.get("rows", [])},
             what="the puts in the object table")
    row = next(r for r in store.view["rows"] if r["object_id"] == big.id)
    assert row["size"] >= 300_000 and row["where"] == "shared memory"
    assert store.view["hosts"][0]["used"] >= 300_000
    wait_for(lambda: cw.view.get("tasks", {}).get("done", 0) >= 20, what="cluster task counts")
    assert cw.view["totals"]["engines"] == 2 and cw.view["totals"]["cpus"] == 2


def test_one_feed_per_client_shared_by_widgets(cluster):
    a, b = widgets.timeline(), widgets.timeline()
    assert a._feed is b._feed is existing_feed(cluster._runtime.client)
    shoal.get([square.remote(i) for i in range(5)])
    wait_for(lambda: a.meta["counts"]["runs"] == b.meta["counts"]["runs"] >= 5)


def test_cluster_widget_adds_and_removes_an_engine(cluster):
    cw = widgets.cluster(cluster)
    assert cw.view["totals"]["engines"] == 2
    cw._handle({"type": "scale", "delta": 1})          # as the "+" button sends it
    wait_for(lambda: cw.view["totals"]["engines"] == 3, timeout=30, what="a third engine")
    cw._handle({"type": "scale", "delta": -1})
    wait_for(lambda: cw.view["totals"]["engines"] == 2, timeout=30, what="back to two")


def test_timeline_export_with_and_without_a_live_widget(cluster, tmp_path):
    refs = [square.remote(i) for i in range(6)]
    shoal.get(refs)
    ids = {r.task_id() for r in refs}
    path = widgets.timeline(tmp_path / "run.json")    # no feed yet: a snapshot is asked for
    xs = [e for e in json.load(open(path))["traceEvents"] if e["ph"] == "X"]
    assert ids <= {e["args"]["task_id"] for e in xs}
    widgets.timeline()                                 # now a feed runs: its history is used
    wait_for(lambda: existing_feed(cluster._runtime.client).task_history() is not None)
    import pyarrow.parquet as pq
    table = pq.read_table(widgets.timeline(str(tmp_path / "run.parquet")))
    assert ids <= set(table.column("task_id").to_pylist())


def test_cluster_context_outside_a_notebook_shows_text_and_html(cluster):
    data = cluster._repr_mimebundle_()
    assert data["text/plain"] == repr(cluster)
    assert "shoal cluster" in data["text/html"] and "application/vnd.jupyter.widget-view+json" \
        not in data


def test_progress_rejects_what_is_not_a_ref(cluster):
    with pytest.raises(TypeError, match="ObjectRef"):
        shoal.progress([1, 2])


def test_widgets_go_quiet_when_the_cluster_stops(fresh_cluster):
    ctx = fresh_cluster()
    cw = widgets.cluster(ctx)
    ref = square.remote(3)
    bar = shoal.progress([ref])
    shoal.get(ref)
    wait_for(lambda: bar.view.get("status") == "done")
    shoal.shutdown()
    wait_for(lambda: not cw.live and not bar.live, what="widgets to notice the stop")
    assert bar.view["status"] == "done" and cw.closed_reason
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "shoal-widgets-feed"],
             what="the feed thread to end")
    assert "closed" in ctx._repr_mimebundle_()["text/plain"]


def test_timeline_and_objects_magics(tmp_path, ipython):
    from IPython.core.error import UsageError
    ip = ipython
    ip.run_line_magic("load_ext", "shoal")
    try:
        assert type(ip.run_line_magic("timeline", "")).__name__.startswith("Timeline")
        assert type(ip.run_line_magic("objects", "")).__name__.startswith("Object")
        path = tmp_path / "trace.json"
        ip.run_line_magic("timeline", str(path))
        assert path.exists()
        with pytest.raises(UsageError, match="usage: %timeline"):
            ip.run_line_magic("timeline", "a.json b.json")
        with pytest.raises(UsageError, match="usage: %objects"):
            ip.run_line_magic("objects", "extra")
    finally:
        ip.run_line_magic("unload_ext", "shoal")
