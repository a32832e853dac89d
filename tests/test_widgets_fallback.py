"""Level 3: the static snapshot saved with a notebook follows its widget.

A widget shown in a kernel is display data with a display id; when what it
shows changes, the kernel sends update_display_data for that id with the new
text/html and text/plain (throttled, and at once when it is final), so a
saved notebook shows the last state.  Checked on iopub, through a real
shoal kernel."""
import pytest

from shoal.kernel.testing import KernelSession

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def k():
    session = KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=2"])
    try:
        session.start()
        run = session.execute("import shoal, time\n%cluster start -n 2\n@shoal.remote\n"
                              "def nap(i):\n    time.sleep(0.3)\n    return i", timeout=60)
        assert run.reply["status"] == "ok", run
        yield session
    finally:
        session.shutdown()


def shown(run) -> tuple:
    """(display id, first bundle) of the widget the cell displayed."""
    first = next(m for m in run.messages if m["msg_type"] == "display_data")
    assert WIDGET_VIEW in first["content"]["data"], first
    return first["content"]["transient"]["display_id"], first["content"]["data"]


def updates(run, display_id) -> list:
    return [m["content"]["data"] for m in run.messages if m["msg_type"] == "update_display_data"
            and m["content"]["transient"]["display_id"] == display_id]


def test_a_finished_progress_bar_is_saved_finished(k):
    run = k.execute("refs = [nap.remote(i) for i in range(3)]\nbar = shoal.progress(refs)\nbar")
    assert run.reply["status"] == "ok" and not run.of_type("execute_result"), run
    display_id, first = shown(run)
    assert "/ 3 done" in first["text/plain"]
    k.pump_until(lambda: any("3 / 3 done" in u["text/plain"] for u in updates(run, display_id)),
                 20, "the final snapshot")
    last = updates(run, display_id)[-1]
    assert "3 / 3 done · in " in last["text/plain"]                    # with its time
    assert 'data-done="3" data-total="3"' in last["text/html"]
    assert WIDGET_VIEW in last                                          # still the live widget
    assert k.execute("print(repr(bar))").stdout.startswith("3 tasks: 3 / 3 done")


def test_the_timeline_and_object_store_are_saved_as_last_seen(k):
    tl = k.execute("timeline = shoal.timeline()\ndisplay(timeline)\nstore = shoal.objects()\n"
                   "display(store)\nshoal.get([nap.remote(i) for i in range(4)])")
    assert tl.reply["status"] == "ok", tl
    timeline_id, store_id = [m["content"]["transient"]["display_id"]
                             for m in tl.of_type("display_data")]
    k.pump_until(lambda: any("0 running" in u["text/plain"] and "No tasks" not in u["text/html"]
                             for u in updates(tl, timeline_id)), 30, "the timeline's runs saved")
    runs = updates(tl, timeline_id)[-1]
    assert "shoal-timeline-static" in runs["text/html"] and "<svg" in runs["text/html"]
    # a later cell changes the store: the snapshot under the earlier cell follows
    assert k.execute("kept = [shoal.put(b'x' * 300_000) for _ in range(3)]").reply["status"] == "ok"

    def store_shows_them():
        texts = [u["text/plain"] for u in updates(tl, store_id)]
        return texts and int(texts[-1].split(": ")[1].split(" ")[0].replace(",", "")) >= 3
    k.pump_until(store_shows_them, 30, "the object store snapshot to show the puts")
