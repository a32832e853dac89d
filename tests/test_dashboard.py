"""The dashboard server extension (shoal/dashboard), through the Jupyter server's own test
fixtures (pytest-jupyter): a real server in this process, real clusters (`shoal start` and
embedded), its REST API and page websockets as a browser would use them."""
import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import pytest
import tornado.httpclient
import tornado.websocket

# pytest-jupyter's fixtures, for this module only (as a plugin its autouse fixtures would
# wrap every test of the suite in an event loop of their own).  jp_serverapp needs them all.
from pytest_jupyter.jupyter_server import (
    echo_kernel_spec, http_server, http_server_client, http_server_port, io_loop, jp_argv,
    jp_asyncio_loop, jp_auth_header, jp_base_url, jp_config_dir, jp_configurable_serverapp,
    jp_data_dir, jp_env_config_path, jp_env_jupyter_path, jp_environ, jp_extension_environ,
    jp_fetch, jp_home_dir, jp_http_port, jp_kernel_dir, jp_logging_stream,
    jp_nbconvert_templates, jp_root_dir, jp_runtime_dir, jp_server_auth_core_resources,
    jp_server_auth_resources, jp_server_authorizer, jp_server_cleanup, jp_serverapp,
    jp_system_config_path, jp_system_jupyter_path, jp_template_dir, jp_web_app, jp_ws_fetch)
JUPYTER_FIXTURES = (
    echo_kernel_spec, http_server, http_server_client, http_server_port, io_loop, jp_argv,
    jp_asyncio_loop, jp_auth_header, jp_base_url, jp_config_dir, jp_configurable_serverapp,
    jp_data_dir, jp_env_config_path, jp_env_jupyter_path, jp_environ, jp_extension_environ,
    jp_fetch, jp_home_dir, jp_http_port, jp_kernel_dir, jp_logging_stream,
    jp_nbconvert_templates, jp_root_dir, jp_runtime_dir, jp_server_auth_core_resources,
    jp_server_auth_resources, jp_server_authorizer, jp_server_cleanup, jp_serverapp,
    jp_system_config_path, jp_system_jupyter_path, jp_template_dir, jp_web_app, jp_ws_fetch)

import shoal
from shoal.dashboard import bridge, clusters
from shoal.dashboard.views import LogTail, TaskListModel
from shoal.protocol import messages as m

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"shoal.dashboard": True}}}


def run(loop, coro, timeout=90):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def frames_of(raw):
    n = struct.unpack("<I", raw[:4])[0]
    head = json.loads(raw[4:4 + n])
    out, at = [], 4 + n
    for length in head["lengths"]:
        out.append(raw[at:at + length])
        at += length
    return head["msg_type"], head["data"], out


async def recv(ws, until, timeout=30):
    """Frames from the page socket until `until(type, data, buffers)` is truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        assert raw is not None, "the server closed the page socket"
        got = until(*frames_of(raw))
        if got:
            return got


async def blocking(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---------------------------------------------------------------------- pure parts
def test_bridge_frames_round_trip_and_bad_messages_are_refused():
    raw = bridge.encode("comm_msg", {"method": "custom", "content": {"a": 1}}, [b"xy", b"", b"123"])
    assert frames_of(raw) == ("comm_msg", {"method": "custom", "content": {"a": 1}},
                              [b"xy", b"", b"123"])
    msg = bridge.decode_incoming('{"method": "custom", "content": {"type": "hello"}}')
    assert msg["content"]["data"] == {"method": "custom", "content": {"type": "hello"}}
    for bad in ("nope", "[1]", '{"method": "update", "state": {"live": false}}',
                '{"method": "custom", "content": 3}', b"\x00\x01", "x" * 70000):
        with pytest.raises(ValueError):
            bridge.decode_incoming(bad)


def test_task_list_keeps_each_tasks_latest_state_newest_first():
    ev = m.TaskEvent
    model = TaskListModel(max_tasks=3)
    model.apply([ev("t1", "f", "running", "e1", "h", 1.0, None),
                 ev("t2", "g", "running", "e2", "h", 1.5, None),
                 ev("t1", "f", "retried", "e1", "h", 1.0, 2.0),
                 ev("t1", "f", "running", "e2", "h", 2.5, None),
                 ev("t1", "f", "finished", "e2", "h", 2.5, 3.0),
                 ev("t3", "h", "cancelled", None, None, None, 4.0)])
    v = model.view()
    assert [r["task_id"] for r in v["rows"]] == ["t3", "t1", "t2"]
    assert v["rows"][1] == {"task_id": "t1", "runs": 2, "name": "f", "status": "finished",
                            "engine_id": "e2", "host_id": "h", "start": 2.5, "end": 3.0}
    assert v["counts"] == {"cancelled": 1, "finished": 1, "running": 1}
    model.apply([ev("t4", "k", "running", "e1", "h", 5.0, None)])
    assert [r["task_id"] for r in model.view()["rows"]] == ["t4", "t3", "t1"]   # t2 dropped
    model.apply([ev("t9", "z", "finished", "e1", "h", 1.0, 2.0)], snapshot=True)
    assert model.view()["total"] == 1


def test_log_tail_follows_growth_new_files_and_truncation(tmp_path):
    (tmp_path / "a.log").write_text("x" * 100 + "last line\n")
    tail = LogTail(str(tmp_path), backlog=20)
    assert tail.read() == [("a.log", ("x" * 100 + "last line\n")[-20:])]
    assert tail.read() == []
    with open(tmp_path / "a.log", "a") as f:
        f.write("more\n")
    (tmp_path / "b.log").write_text("b1\n")
    (tmp_path / "notes.txt").write_text("not a log")
    assert tail.read() == [("a.log", "more\n"), ("b.log", "b1\n")]
    (tmp_path / "b.log").write_text("")                      # truncated, then written again
    tail.read()
    (tmp_path / "b.log").write_text("again\n")
    assert tail.read() == [("b.log", "again\n")]


@pytest.mark.slow
def test_config_file_enables_the_extension_for_jupyter_server(tmp_path):
    """The file pip installs into etc/jupyter/jupyter_server_config.d/ enables the
    extension: `jupyter server extension list` says so (and that it loads)."""
    conf_d = tmp_path / "cfg" / "jupyter_server_config.d"
    conf_d.mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "jupyter-config", "jupyter_server_config.d", "shoal.json"),
                conf_d)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), PYTHONPATH=ROOT,
               NO_COLOR="1")
    out = subprocess.run([sys.executable, "-m", "jupyter_server.extension.serverextension",
                          "list"], env=env, capture_output=True, text=True, timeout=60)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert "shoal.dashboard enabled" in text, text
    assert "shoal.dashboard  OK" in text or "shoal.dashboard OK" in text, text


def _visible_as(uid):
    """visible_clusters() in a forked child running as `uid` (None: as we are)."""
    if uid is None:
        return sorted(c.cluster_id for c in clusters.visible_clusters())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: no exec, no new imports
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(w, json.dumps(sorted(c.cluster_id for c in
                                          clusters.visible_clusters())).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    assert os.waitpid(pid, 0)[1] == 0, data
    return json.loads(data)


def test_only_clusters_whose_connection_files_the_user_can_read_are_visible(monkeypatch):
    """Another user's connection file (0600) is not listed; a dead scheduler's is not either."""
    import tempfile
    from shoal import session
    runtime = tempfile.mkdtemp(prefix="shoal-dash-acl-")
    try:
        os.chmod(runtime, 0o755)
        monkeypatch.setenv("JUPYTER_RUNTIME_DIR", runtime)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        for cid, pid in (("ours", os.getpid()), ("theirs", os.getpid()), ("dead", dead.pid)):
            session.write_connection_file(session.connection_file_path(cid), {
                "address": "127.0.0.1:9", "key": "ab" * 16, "cluster_id": cid, "pid": pid,
                "owned": False, "session_dir": runtime})
        with open(os.path.join(runtime, "shoal-cluster-bad.json"), "w") as f:
            f.write("{not json")
        other = 65534                                     # nobody
        if os.geteuid() == 0:
            os.chown(session.connection_file_path("theirs"), other, other)
            assert _visible_as(None) == ["ours", "theirs"]
            assert _visible_as(other) == ["theirs"]       # root's 0600 file is not theirs to see
        else:
            os.chmod(session.connection_file_path("theirs"), 0)
            assert _visible_as(None) == ["ours"]
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# ---------------------------------------------------------------------- through the server
def test_every_endpoint_needs_the_servers_user(jp_serverapp, jp_fetch, jp_ws_fetch,
                                               jp_asyncio_loop):
    async def body():
        for path in (("shoal",), ("shoal", "api", "clusters"), ("shoal", "static", "page.js"),
                     ("shoal", "cluster", "abc", "timeline")):
            with pytest.raises(tornado.httpclient.HTTPClientError) as e:
                await jp_fetch(*path, headers={"Authorization": ""}, follow_redirects=False)
            assert e.value.code in (302, 403), (path, e.value.code)
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_fetch("shoal", "api", "clusters", method="POST", body="{}",
                           headers={"Authorization": ""})
        assert e.value.code == 403
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_ws_fetch("shoal", "cluster", "abc", "timeline", "ws",
                              headers={"Authorization": ""})
        assert e.value.code == 403
        r = await jp_fetch("shoal", "api", "clusters")
        assert json.loads(r.body) == {"clusters": []}
        r = await jp_fetch("shoal")
        assert b"mountIndex" in r.body
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_fetch("shoal", "cluster", "nosuchcluster", "timeline")
        assert e.value.code == 404
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_fetch("shoal", "static", "..", "handlers.py")
        assert e.value.code == 404
    run(jp_asyncio_loop, body())


def _square_on(address, n):
    """A driver in this process runs n tasks on the cluster at `address`, then leaves."""
    shoal.init(address=address)
    try:
        @shoal.remote
        def square(x):
            return x * x

        @shoal.remote
        class Counter:
            def __init__(self):
                self.n = 0

            def add(self):
                self.n += 1
                return self.n

        counter = Counter.options(name="tally").remote()
        assert shoal.get(counter.add.remote()) == 1
        return shoal.get([square.remote(i) for i in range(n)])
    finally:
        shoal.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dashboard_lists_drives_and_streams_a_cluster(jp_serverapp, jp_fetch, jp_ws_fetch,
                                                      jp_asyncio_loop):
    """`shoal start` from the API; listed (never its key); scaled; the timeline page's socket
    gets the widget's state and then its rows as tasks run; the tasks, actors and logs pages
    stream too; the cluster page's button scales; a malformed message closes a socket; an embedded cluster is listed as its owner's;
    stopped from the API, it is gone."""
    async def listed(pred, what):
        deadline = time.monotonic() + 30
        while True:
            got = json.loads((await jp_fetch("shoal", "api", "clusters")).body)["clusters"]
            if pred(got):
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}"
            await asyncio.sleep(0.1)

    async def body():
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_fetch("shoal", "api", "clusters", method="POST",
                           body=json.dumps({"num_cpus": 0}))
        assert e.value.code == 400
        r = await jp_fetch("shoal", "api", "clusters", method="POST",
                           body=json.dumps({"num_cpus": 1}))
        assert r.code == 201 and "Started a shoal cluster" in json.loads(r.body)["message"]
        [c] = await listed(lambda cs: len(cs) == 1 and cs[0].get("engines") == 1, "1 engine")
        try:
            await story(c)
        finally:
            if clusters.find(c["cluster_id"]):
                await blocking(clusters.run_cli, ["stop", "--address", c["address"]])

    async def story(c):
        assert c["kind"] == "started" and c["kernel"] is None and c["hosts"] == 1
        raw = (await jp_fetch("shoal", "api", "clusters")).body.decode()
        with open(c["connection_file"]) as f:
            assert json.load(f)["key"] not in raw                      # the key stays on disk
        cid = c["cluster_id"]

        r = await jp_fetch("shoal", "api", "clusters", cid, "scale", method="POST",
                           body=json.dumps({"delta": 1}))
        assert r.code == 200
        await listed(lambda cs: cs and cs[0].get("engines") == 2, "2 engines")
        for bad in ({"delta": "1"}, {"delta": 1000}, {"delta": 1, "host_id": 3}):
            with pytest.raises(tornado.httpclient.HTTPClientError) as e:
                await jp_fetch("shoal", "api", "clusters", cid, "scale", method="POST",
                               body=json.dumps(bad))
            assert e.value.code == 400, bad

        page = (await jp_fetch("shoal", "cluster", cid, "timeline")).body.decode()
        assert "mountView" in page and "/shoal/static/widgets/timeline.js" in page
        js = (await jp_fetch("shoal", "static", "widgets", "timeline.js")).body.decode()
        from shoal.widgets.timeline import TimelineWidget
        assert js == TimelineWidget._esm                  # the notebook widget's own module

        ws = await jp_ws_fetch("shoal", "cluster", cid, "timeline", "ws")
        state = await recv(ws, lambda t, d, b: t == "comm_open" and d["state"])
        assert state.get("uid") and state["live"] and "meta" in state, state
        await ws.write_message(json.dumps({"method": "custom",
                                           "content": {"type": "hello", "seq": 0}}))
        actors = await jp_ws_fetch("shoal", "cluster", cid, "actors", "ws")
        await recv(actors, lambda t, d, b: t == "comm_open")
        tasks = await jp_ws_fetch("shoal", "cluster", cid, "tasks", "ws")
        await recv(tasks, lambda t, d, b: t == "comm_open")
        logs = await jp_ws_fetch("shoal", "cluster", cid, "logs", "ws")
        files = await recv(logs, lambda t, d, b: t == "comm_open" and d["state"]["files"])
        assert "scheduler.log" in files, files
        await logs.write_message(json.dumps({"method": "custom", "content": {"type": "hello"}}))

        assert await blocking(_square_on, c["address"], 30) == [i * i for i in range(30)]

        rows = {}

        def got_rows(t, d, b):                # the binary columns the widget sends a notebook
            if t == "comm_msg" and d["method"] == "custom" and d["content"]["type"] in (
                    "reset", "rows"):
                content = d["content"]
                assert len(b) == 6 and len(b[0]) == 4 * content["n"] and len(b[4]) == 8 * content["n"]
                statuses = struct.unpack(f"<{content['n']}i", b[3])
                if content["type"] == "reset":
                    rows.clear()
                rows.update(zip(content["ids"], statuses))
            return sum(1 for s in rows.values() if s == 1) >= 30
        await recv(ws, got_rows)

        def squares_done(t, d, b):
            if t == "comm_msg" and d["method"] == "update" and "view" in d["state"]:
                return 30 == sum(1 for r in d["state"]["view"]["rows"]
                                 if r["name"] == "square" and r["status"] == "finished")
        await recv(tasks, squares_done)
        view = await recv(actors, lambda t, d, b: t == "comm_msg" and d["method"] == "update"
                          and d["state"].get("view", {}).get("actors") and d["state"]["view"])
        [actor] = view["actors"]
        assert actor["class_name"] == "Counter" and actor["name"] == "tally", actor

        # the cluster page: the notebook's cluster widget; its + button scales the head host
        page = await jp_ws_fetch("shoal", "cluster", cid, "cluster", "ws")
        state = await recv(page, lambda t, d, b: t == "comm_open" and d["state"])
        assert state["view"]["address"] == c["address"], state["view"]
        assert state["view"]["kind"] == "started with shoal start"
        [host] = state["view"]["hosts"]
        await page.write_message(json.dumps({"method": "custom", "content": {
            "type": "scale", "host_id": host["host_id"], "delta": 1}}))
        await recv(page, lambda t, d, b: t == "comm_msg" and d["method"] == "update"
                   and d["state"].get("view", {}).get("totals", {}).get("engines") == 3)
        page.close()
        text = await recv(logs, lambda t, d, b: t == "comm_msg" and d["method"] == "custom"
                          and d["content"]["file"] == "scheduler.log" and d["content"]["text"])
        assert text.strip()

        await tasks.write_message("not json")                   # malformed: closed, no crash
        assert await asyncio.wait_for(tasks.read_message(), 10) is None
        assert tasks.close_code == 1003

        # an embedded cluster: its owner (this process) is known; no kernel owns it
        await blocking(lambda: shoal.init(num_cpus=1))
        try:
            got = await listed(lambda cs: any(x["kind"] == "embedded" for x in cs), "embedded")
            [e] = [x for x in got if x["kind"] == "embedded"]
            assert e["owner_pid"] == os.getpid() and e["kernel"] is None
        finally:
            await blocking(shoal.shutdown)

        r = await jp_fetch("shoal", "api", "clusters", cid, "stop", method="POST", body="{}")
        assert "Stopped" in json.loads(r.body)["message"]
        await listed(lambda cs: not cs, "no cluster")
        # the open pages learn that their cluster is gone
        await recv(ws, lambda t, d, b: t == "comm_msg" and d["method"] == "update"
                   and d["state"].get("live") is False)
        ws.close()
        logs.close()

    run(jp_asyncio_loop, body(), timeout=150)


def test_task_list_does_not_count_a_revoked_run():
    """The scheduler promoted t1 (a "running" event) but its engine had given it
    back: a "revoked" event takes that run back, and t1 waits to run again."""
    ev = m.TaskEvent
    model = TaskListModel()
    model.apply([ev("t1", "f", "running", "e1", "h", 1.0, None),
                 ev("t1", "f", "revoked", "e1", "h", 1.0, 1.2)])
    [row] = model.view()["rows"]
    assert row["runs"] == 0 and row["status"] == "queued" and row["engine_id"] is None
    model.apply([ev("t1", "f", "running", "e2", "h", 1.5, None),
                 ev("t1", "f", "finished", "e2", "h", 1.5, 2.0),
                 ev("t1", "f", "revoked", "e1", "h", 1.0, 1.2)])     # a late one: ignored
    [row] = model.view()["rows"]
    assert row["runs"] == 1 and row["status"] == "finished" and row["engine_id"] == "e2"
