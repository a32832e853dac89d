"""shoal's API and `%%remote` on a real Ray (the Ray backend, shoal.backends.ray).

They run in the Ray interpreter (tests/ray_env.py) against the session's
two-node Ray cluster (`ray.cluster_utils.Cluster`, owned by a helper process:
tests/remote_kernels.py): the API as a driver script (`import shoal as ray`),
Ray Client, and what only Ray's notebook has, in a real shoal kernel.  What
`%%remote` does on every backend is tested once, over all of them, in
test_kernel.py, test_kernel_output.py and test_remote_semantics.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from shoal.kernel.kernelspec import write_kernel_spec
from shoal.kernel.testing import KernelSession

from conftest import ok
from ray_env import CLIENT_PORT_TAKEN, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def python(ray_python):
    return ray_python


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The session's two-node Ray cluster (tests/remote_kernels.py)."""
    return ray_cluster


def run_driver(python, code: str, timeout: float = 240, **env) -> dict:
    """Run a driver script; it prints one JSON object last."""
    out = subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env=ray_env(**env))
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


API = """
import json, sys
import shoal as ray
assert "ray" not in sys.modules            # only shoal.init() with a Ray address imports it
ctx = ray.init()                           # SHOAL_ADDRESS=ray:HOST:PORT
import ray as real_ray
out = {"context": repr(ctx), "is_initialized": ray.is_initialized()}

@ray.remote
def square(x):
    return x * x

@ray.remote
def total(n):
    import shoal                           # shoal's API inside a Ray task: nested tasks
    return sum(shoal.get([square.remote(i) for i in range(n)]))

@ray.remote(num_returns=2, max_retries=0)
def pair():
    return 1, 2

@ray.remote
def slow(seconds):
    import time
    time.sleep(seconds)

@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()

@ray.remote
class Counter:
    def __init__(self, start):
        self.n = start
    def incr(self, k=1):
        self.n += k
        return self.n
    @ray.method(num_returns=2)
    def both(self):
        return self.n, -self.n

refs = [square.remote(i) for i in range(6)]
out["ref_type"] = type(refs[0]).__module__.split(".")[0]
out["squares"] = ray.get(refs)
out["nested"] = ray.get(total.remote(4))
out["pair"] = ray.get(list(pair.remote()))
out["put"] = ray.get(square.remote(ray.put(12)))
out["options"] = ray.get(square.options(num_cpus=0.5, name="sq").remote(3))
ready, rest = ray.wait(refs, num_returns=2, timeout=30)
out["wait"] = [len(ready), len(rest)]
s = slow.remote(3)           # Ray interrupts a running task after its sleep ends
ray.wait([s], timeout=1)
ray.cancel(s)
try:
    ray.get(s, timeout=60)
except ray.exceptions.TaskCancelledError as exc:    # shoal's class, and Ray's
    out["cancelled"] = isinstance(exc, real_ray.exceptions.TaskCancelledError)
c = Counter.options(name="counter", namespace="t").remote(10)
same = ray.get_actor("counter", namespace="t")
out["actor"] = [ray.get(c.incr.remote()), ray.get(same.incr.remote(5))]
out["method_returns"] = ray.get(list(c.both.remote()))
ray.kill(c)
for _ in range(100):                # ray.kill is asynchronous: calls fail once it is done
    try:
        ray.get(c.incr.remote(), timeout=30)
    except ray.exceptions.ActorDiedError as exc:
        out["killed"] = isinstance(exc, real_ray.exceptions.ActorDiedError)
        break
late = slow.remote(60)
try:
    ray.get(late, timeout=0.5)
except ray.exceptions.GetTimeoutError as exc:
    out["timeout"] = isinstance(exc, (TimeoutError, real_ray.exceptions.GetTimeoutError))
ray.cancel(late, force=True)
@ray.remote
def fails():
    raise KeyError("k")
try:
    ray.get(fails.remote())
except KeyError as exc:
    out["task_error"] = [isinstance(exc, ray.exceptions.RayTaskError),
                         isinstance(exc, real_ray.exceptions.RayTaskError)]
try:
    ray.get_actor("nobody")
except ValueError:
    out["no_actor"] = "ValueError"
out["nodes"] = len([n for n in ray.nodes() if n["Alive"]])
out["cpus"] = ray.cluster_resources().get("CPU")
import time                                 # Ray omits a resource while all of it is in use:
for _ in range(300):                        # the cancelled tasks' workers free theirs in time
    available = ray.available_resources()
    if "CPU" in available:
        break
    time.sleep(0.1)
out["available"] = 0 < available.get("CPU", 0) <= out["cpus"]
out["job"] = ray.get_runtime_context().get_job_id() == real_ray.get_runtime_context().get_job_id()
from shoal.util.scheduling_strategies import NodeAffinitySchedulingStrategy
alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
out["pinned"] = sorted(ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
    node, soft=False)).remote() for node in alive])) == alive
try:
    ray.init()
except RuntimeError as exc:
    out["reinit"] = "twice" in str(exc)
ray.shutdown()
out["after"] = [ray.is_initialized(), real_ray.is_initialized()]
print(json.dumps(out))
"""


def test_ray_code_runs_on_the_ray_backend(python, cluster):
    out = run_driver(python, API, SHOAL_ADDRESS=f"ray:{cluster[0]}")
    assert out.pop("context").startswith(f"<shoal.RayContext ray:{cluster[0]} (Ray ")
    assert out == {
        "is_initialized": True, "ref_type": "ray", "squares": [0, 1, 4, 9, 16, 25],
        "nested": 14, "pair": [1, 2], "put": 144, "options": 9, "wait": [2, 4],
        "cancelled": True, "actor": [11, 16], "method_returns": [16, -16],
        "killed": True, "timeout": True, "task_error": [True, True], "no_actor": "ValueError",
        "nodes": 2, "cpus": 2.0,
        "available": True, "job": True, "pinned": True, "reinit": True, "after": [False, False]}


def test_the_first_call_connects_to_shoal_address_as_ray_auto_initializes(python, cluster):
    out = run_driver(python, """
        import json, shoal
        @shoal.remote
        def f():
            return 1
        value = shoal.get(f.remote())             # no init(): SHOAL_ADDRESS says where
        print(json.dumps([value, shoal.is_initialized(), len(shoal.nodes())]))
        """, SHOAL_ADDRESS=f"ray:{cluster[0]}")
    assert out == [1, True, 2]


def test_a_local_ray_started_for_this_driver(python):
    out = run_driver(python, """
        import json, shoal
        with shoal.init(address="ray:local", num_cpus=1, include_dashboard=False) as ctx:
            @shoal.remote
            def f():
                return 7
            value = shoal.get(f.remote())
            cpus = shoal.cluster_resources()["CPU"]
        import ray
        print(json.dumps([value, cpus, ray.is_initialized(), shoal.is_initialized()]))
        """)
    assert out == [7, 1.0, False, False]


# ------------------------------------------------------------------ the magics
@pytest.fixture(scope="module")
def k(python, cluster):
    session = KernelSession("shoal-ray",
                            extra_arguments=[f"--ShoalKernel.address=ray:{cluster[0]}"],
                            env=ray_env(), startup_timeout=90)
    write_kernel_spec(os.path.join(session.kernel_dirs[0], "shoal-ray"), python=python)
    session.start()
    try:
        ok(session.execute("%%remote\n1", timeout=120))
        yield session
    finally:
        session.shutdown()


def test_a_namespace_is_a_named_ray_actor(k):
    ok(k.execute("%%remote --on keep\ncount = 1\nimport os\npid = os.getpid()"))
    run = ok(k.execute("%%remote --on keep\ncount += 1\nimport os\n(count, os.getpid() == pid)"))
    assert run.result == "(2, True)"
    run = ok(k.execute("import ray\nh = ray.get_actor('keep', namespace='shoal.remote')\n"
                       "type(h).__name__"))
    assert run.result == "'ActorHandle'"


def client_port(cluster) -> int:
    if not cluster[1]:
        if os.environ.get("SHOAL_REQUIRE_RAY_TESTS"):
            pytest.fail("Ray Client needs ray[client]: run benchmarks/setup-peers.sh")
        pytest.skip("Ray Client needs ray[client] (grpcio), not installed here")
    return cluster[1]


# Ray's client proxy gives each client a server on the next port from 23000, machine-wide,
# and fails the connection when that port is taken (by another Ray on this machine); the
# next connection gets the next port.  Ray's flake, not shoal's: connect again.  Its server
# dies at once then, and the proxy says so one of two ways (ray_env.CLIENT_PORT_TAKEN).
CLIENT_RETRY = f"""
def connect(attempt):
    for tries in range(3):
        try:
            return attempt()
        except ConnectionAbortedError as exc:
            if not any(s in str(exc) for s in {CLIENT_PORT_TAKEN!r}) or tries == 2:
                raise
"""


def test_ray_client_from_outside_the_cluster(python, cluster):
    port = client_port(cluster)
    out = run_driver(python, CLIENT_RETRY + textwrap.dedent(f"""
        import json, shoal
        connect(lambda: shoal.init(address="ray://127.0.0.1:{port}"))
        @shoal.remote
        def twice(x):
            import shoal
            return shoal.get(shoal.put(x)) * 2
        @shoal.remote
        class Box:
            def __init__(self, v):
                self.v = v
            def get(self):
                return self.v
        print(json.dumps([shoal.get(twice.remote(21)), shoal.get(Box.remote(3).get.remote()),
                          shoal.cluster_resources()["CPU"]]))
        shoal.shutdown()
        """))
    assert out == [42, 3, 2.0]


def test_cluster_connect_to_ray_client_in_a_kernel(python, cluster):
    port = client_port(cluster)
    session = KernelSession("shoal-ray", env=ray_env(), startup_timeout=90)
    write_kernel_spec(os.path.join(session.kernel_dirs[0], "shoal-ray"), python=python)
    session.start()
    try:
        ok(session.execute(CLIENT_RETRY))
        run = ok(session.execute(f"connect(lambda: get_ipython().run_line_magic("
                                 f"'cluster', 'connect ray://127.0.0.1:{port}'))", timeout=120))
        assert f"RayContext ray://127.0.0.1:{port}" in run.stdout
        run = ok(session.execute("%%remote\nprint('through the client')\nanswer = 6 * 7",
                                 timeout=60))
        assert run.stdout == "through the client\n"
        assert ok(session.execute("answer")).result == "42"
    finally:
        session.shutdown()


def test_cell_resources_become_ray_task_options(k):
    run = ok(k.execute("%%remote --num-cpus 0.5 --retries 1\nimport ray\n"
                       "ray.get_runtime_context().get_assigned_resources()"))
    assert run.result == "{'CPU': 0.5}"


def widget_opens(run, kind: str) -> list:
    """The comm_open messages of a shoal widget class in a cell's output."""
    return [m for m in run.messages if m["msg_type"] == "comm_open" and
            m["content"]["data"]["state"].get("_anywidget_id", "").endswith("." + kind)]


def test_a_long_cell_shows_progress_and_the_timeline_and_cluster_widgets_show_ray(k):
    run = ok(k.execute("%%remote --all --name naps\nimport time\ntime.sleep(3)\n'slept'",
                       timeout=120))
    bars = widget_opens(run, "ProgressWidget")
    assert bars, "a cell waiting 3 s on two nodes shows a progress bar"
    state = bars[0]["content"]["data"]["state"]
    assert state["view"]["title"] == "shoal.wait: 2 refs" and state["view"]["total"] == 2
    comm = bars[0]["content"]["comm_id"]

    def views():
        return [m["content"]["data"]["state"]["view"] for m in k.iopub[run.msg_id]
                if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm
                and "view" in m["content"]["data"].get("state", {})]
    k.pump_until(lambda: any(v["done"] == 2 and v["status"] == "done" for v in views()), 30,
                 "the bar to reach 2 / 2")
    run = ok(k.execute(textwrap.dedent("""\
        import shoal, time
        tl = shoal.widgets.timeline()
        display(tl)
        deadline = time.monotonic() + 30
        while tl.meta.get("counts", {}).get("finished", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        cw = shoal.widgets.cluster()
        hosts = {host for _, host, _ in tl.meta["engines"]}
        (tl.meta["counts"]["finished"] >= 2, len(hosts), len(cw.view["hosts"]),
         cw.view["totals"]["cpus"], cw.scalable, cw.view["kind"].startswith("Ray "))"""),
        timeout=60))
    assert run.result == "(True, 2, 2, 2.0, False, True)"
    assert widget_opens(run, "TimelineWidget") and widget_opens(run, "ClusterWidget")
    names = ok(k.execute("sorted({e['name'] for e in shoal.timeline() if e.get('ph') == 'X'})"))
    assert "'naps'" in names.result, names.result       # the cell's tasks, in the export
    run = ok(k.execute(textwrap.dedent("""\
        @shoal.remote
        def nap(seconds):
            time.sleep(seconds)
        @shoal.remote
        def boom():
            raise KeyError("k")
        slow = nap.options(num_cpus=0)               # takes no CPU from the others
        began = time.monotonic()
        first, _ = shoal.wait([nap.remote(0), slow.remote(8)], num_returns=1)
        fast_wait = time.monotonic() - began < 1.5   # the bar's watch delays neither
        began = time.monotonic()
        try:
            shoal.get([boom.remote(), slow.remote(8)])
        except KeyError:
            pass
        fast_wait, time.monotonic() - began < 1.5"""), timeout=60))
    assert run.result == "(True, True)" and not widget_opens(run, "ProgressWidget")


def test_the_widgets_view_of_the_cluster_through_ray_client(python, cluster):
    """A Ray Client driver is not connected to the GCS: the widgets' state comes
    through a probe actor on the cluster (shoal.backends.ray.state)."""
    port = client_port(cluster)
    out = run_driver(python, CLIENT_RETRY + textwrap.dedent(f"""
        import json, time, shoal
        import shoal.util.state
        from shoal import widgets
        from shoal.core import backend
        connect(lambda: shoal.init(address="ray://127.0.0.1:{port}"))
        @shoal.remote
        def sq(x):
            return x * x
        refs = [sq.remote(i) for i in range(6)]
        bar = shoal.progress(refs)
        big = shoal.put(b"x" * 300_000)
        shoal.get(refs)
        source = backend.current().bind()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = [r for r in widgets.task_runs() if r["name"] == "sq"]
            if sum(r["status"] == "finished" for r in runs) >= 6 and bar.view["done"] == 6:
                break
            time.sleep(0.2)
        print(json.dumps([len(runs), bar.view["done"], len(source.status()["hosts"]),
                          any(o["object_id"] == big.hex() and o["size"] >= 300_000
                              for o in source.list_objects()),
                          len(source.memory()), source.describe()["scalable"],
                          len(shoal.util.state.list_hosts()),
                          any(o["object_id"] == big.hex()
                              for o in shoal.util.state.list_objects())]))
        bar.stop()
        shoal.shutdown()
        """))
    assert out == [6, 6, 2, True, 2, False, 2, True]


def test_placement_groups_and_util_helpers_are_rays_own(python, cluster):
    """`import shoal as ray` code using ray.util on the Ray backend gets Ray's
    placement groups and multiprocessing Pool; shoal's Queue, ActorPool,
    Executor and joblib backend run on Ray's tasks and actors."""
    out = run_driver(python, """
        import json, joblib
        import shoal as ray
        from shoal.util import ActorPool, Executor
        from shoal.util.joblib import register_shoal
        from shoal.util.multiprocessing import Pool
        from shoal.util.queue import Queue
        from shoal.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        ray.init()
        out = {}
        g = ray.util.placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        ray.get(g.ready(), timeout=60)
        @ray.remote
        def where():
            return (ray.util.get_current_placement_group() is not None,
                    ray.get_runtime_context().get_node_id())
        placed = ray.get([where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            g, i)).remote() for i in range(2)] + [where.options(placement_group=g).remote()])
        out["pg"] = [type(g).__module__, [p[0] for p in placed], len({p[1] for p in placed[:2]}),
                     ray.util.placement_group_table(g)["state"]]
        ray.util.remove_placement_group(g)
        q = Queue()
        @ray.remote
        def produce(q):
            for i in range(3):
                q.put(i)
        done = produce.remote(q)
        out["queue"] = [q.get(timeout=30) for _ in range(3)]
        ray.get(done)
        @ray.remote
        class Twice:
            def of(self, v):
                return 2 * v
        twins = [Twice.remote(), Twice.remote()]     # held: alive for list_actors below
        out["actor_pool"] = list(ActorPool(twins).map(lambda a, v: a.of.remote(v), range(4)))
        from shoal.util.state import list_actors
        twice = [a for a in list_actors() if a["class_name"] == "Twice"]
        out["list_actors"] = sorted((a["state"], bool(a["pid"] and a["host_id"] and a["engine_id"]))
                                    for a in twice)
        with Pool(2) as pool:
            out["pool"] = [type(pool).__module__, pool.map(abs, [-1, -2]), pool.apply(pow, (2, 5))]
        with Executor(max_workers=2) as ex:
            out["executor"] = list(ex.map(abs, [-3, 4]))
        register_shoal()
        with joblib.parallel_backend("shoal"):
            out["joblib"] = joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3))
        ray.shutdown()
        print(json.dumps(out))
        """, SHOAL_ADDRESS=f"ray:{cluster[0]}")
    assert out == {"pg": ["ray.util.placement_group", [True, True, True], 2, "CREATED"],
                   "queue": [0, 1, 2], "actor_pool": [0, 2, 4, 6], "list_actors": [["ALIVE", True]] * 2,
                   "pool": ["ray.util.multiprocessing.pool", [1, 2], 32],
                   "executor": [3, 4], "joblib": [0, 1, 2]}
