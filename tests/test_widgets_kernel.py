"""Level 3 for the widgets: a real IPython kernel driven through jupyter_client.

What a frontend would receive is checked on iopub: the widgets' comm_open,
and comm_msg updates that arrive while a cell runs (the timeline's rows, the
automatic progress bar of a long `shoal.get`) and after it ended (a
`shoal.progress` bar reaching its total while the kernel is idle).

The kernel is plain ipykernel on this interpreter, from a kernelspec in a
temporary directory, with its own runtime and IPython dirs.
"""
import json
import os
import sys
import time
from queue import Empty

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
jupyter_client = pytest.importorskip("jupyter_client")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Kernel:
    """A kernel and every iopub message it sent, in arrival order."""

    def __init__(self, tmp):
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager
        spec_dir = tmp / "kernels" / "shoal-widgets-test"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "shoal widgets test", "language": "python"}))
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                   IPYTHONDIR=str(tmp / "ipython"), PYTHONPATH=ROOT, MPLBACKEND="Agg")
        self.km = KernelManager(kernel_name="shoal-widgets-test",
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp / "kernels")]))
        self.km.start_kernel(env=env, cwd=str(tmp))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.log = []

    def pump(self, until, timeout, what):
        """Read iopub until `until()` holds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                self.log.append(self.kc.get_iopub_msg(timeout=min(left, 0.5)))
            except Empty:
                pass

    def execute(self, code, timeout=60):
        """Run a cell; returns (index of its busy message, index of its idle message) in the log."""
        msg_id = self.kc.execute(code)
        mine = lambda m, state: (m["parent_header"].get("msg_id") == msg_id  # noqa: E731
                                 and m["msg_type"] == "status"
                                 and m["content"]["execution_state"] == state)
        self.pump(lambda: any(mine(m, "idle") for m in self.log), timeout, f"cell {code!r}")
        busy = next(i for i, m in enumerate(self.log) if mine(m, "busy"))
        idle = next(i for i, m in enumerate(self.log) if mine(m, "idle"))
        reply = self.kc.get_shell_msg(timeout=10)
        assert reply["content"]["status"] == "ok", (code, reply["content"], self.errors(busy))
        return busy, idle

    def errors(self, start=0):
        return [m["content"] for m in self.log[start:] if m["msg_type"] in ("error", "stream")]

    def comm_of(self, kind, start=0):
        """The comm_open of a shoal widget class ("ProgressWidget", ...) after `start`."""
        for m in self.log[start:]:
            if m["msg_type"] == "comm_open" and \
                    m["content"]["data"]["state"].get("_anywidget_id", "").endswith("." + kind):
                return m
        return None

    def comm_msgs(self, comm_id, start=0, end=None):
        return [(i, m) for i, m in enumerate(self.log[start:end], start)
                if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]

    def views(self, comm_id, start=0, end=None):
        """The `view` trait of a widget as the frontend saw it: comm_open, then each update."""
        out = []
        for m in self.log[start:end]:
            if m["msg_type"] in ("comm_open", "comm_msg") and \
                    m["content"]["comm_id"] == comm_id and \
                    "view" in m["content"]["data"].get("state", {}):
                out.append(m["content"]["data"]["state"]["view"])
        return out

    def close(self):
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernel(tmp_path):
    k = Kernel(tmp_path)
    try:
        yield k
    finally:
        try:
            k.execute("import shoal; shoal.shutdown()", timeout=30)
        finally:
            k.close()


def test_widgets_talk_over_comms_while_cells_run_and_after(kernel):
    busy, idle = kernel.execute("import shoal, time\nctx = shoal.init(num_cpus=2)\nctx")
    result = next(m for m in kernel.log[busy:idle] if m["msg_type"] == "execute_result")
    assert WIDGET_VIEW in result["content"]["data"]
    assert "shoal cluster" in result["content"]["data"]["text/html"]        # static snapshot
    cluster = kernel.comm_of("ClusterWidget", busy)
    assert cluster["content"]["data"]["state"]["_esm"]                      # no build step
    assert "totals" in cluster["content"]["data"]["state"]["view"]          # a first picture
    kernel.pump(lambda: kernel.views(cluster["content"]["comm_id"])[-1]["totals"]["engines"] == 2,
                30, "the cluster widget to show both engines (the kernel is idle)")

    # A long blocking get: the timeline (displayed first) streams rows, and an automatic
    # progress bar appears after ~2 s and moves, all while the cell is still running.
    busy, idle = kernel.execute(
        "@shoal.remote\n"
        "def nap(i):\n"
        "    time.sleep(0.3)\n"
        "    return i\n"
        "tl = shoal.timeline()\n"
        "display(tl)\n"
        "print(sum(shoal.get([nap.remote(i) for i in range(16)])))")
    assert any("120" in c.get("text", "") for c in kernel.errors(busy))
    tl = kernel.comm_of("TimelineWidget", busy)["content"]["comm_id"]
    rows = [m for _, m in kernel.comm_msgs(tl, busy, idle)
            if m["content"]["data"]["method"] == "custom"]
    assert len(rows) >= 2, "timeline rows should stream while the cell runs"
    assert rows[0]["content"]["data"]["content"]["type"] == "reset"
    assert all(len(m["buffers"]) == 6 for m in rows)
    progress = kernel.comm_of("ProgressWidget", busy)
    assert progress is not None, "a get of 16 refs lasting 2.4 s shows a progress bar"
    state = progress["content"]["data"]["state"]
    assert state["view"]["title"] == "shoal.get: 16 refs"
    shown = [m for m in kernel.log[busy:idle] if m["msg_type"] == "display_data"
             and m["content"]["data"].get(WIDGET_VIEW, {}).get("model_id") ==
             progress["content"]["comm_id"]]
    snapshots = [m["content"]["data"]["text/html"] for m in kernel.log[busy:idle]
                 if m["msg_type"] == "display_data" and m["content"].get("transient")]
    assert shown and any("shoal.get: 16 refs" in html for html in snapshots)
    done = [v["done"] for v in kernel.views(progress["content"]["comm_id"], busy, idle)]
    assert any(0 < d < 16 for d in done), f"the bar should move during the get: {done}"

    # shoal.progress returns at once; the bar reaches its total while the kernel is idle.
    busy, idle = kernel.execute("p = shoal.progress([nap.remote(i) for i in range(8)], "
                                "title='background')\np")
    bar = kernel.comm_of("ProgressWidget", busy)["content"]["comm_id"]

    def final():
        views = kernel.views(bar, idle)
        return views and views[-1]["status"] == "done" and views[-1]["done"] == 8
    kernel.pump(final, 30, "the background bar to reach 8 / 8 after the cell ended")
