"""Level 2: several hosts on this machine (each agent with a store of its own):
transfers between hosts, and objects lost with a host."""
import os
import signal

import numpy as np
import pytest

import shoal
from shoal.core import runtime
from shoal.launch.launcher import HostProcess
from shoal.exceptions import ObjectLostError
from shoal.util.state import list_hosts, list_objects

from conftest import wait_for

MB = 1 << 20


@pytest.fixture
def hosts(fresh_cluster):
    """The driver's host (1 CPU) plus a way to join more hosts with resource "B"
    (whose agents nobody restarts: killing one is losing that host)."""
    fresh_cluster(num_cpus=1)
    rt = runtime.current()
    started = []

    def join(**kw):
        before = len(list_hosts())
        host = HostProcess(rt.address, rt.cluster.key, rt.client.cluster_id,
                           rt.client.session_dir, num_cpus=1, resources={"B": 1}, restart=False,
                           **kw)
        started.append(host)
        wait_for(lambda: len(list_hosts()) > before, what="the new host to join")
        return host

    yield join
    for host in started:
        host.stop()


@shoal.remote(resources={"B": 1})
def make_on_b(n):
    return np.arange(n, dtype=np.float64)


@shoal.remote(resources={"B": 1})
def put_on_b(n):
    return [shoal.put(np.ones(n))]


def test_objects_move_host_to_host_into_the_readers_store(hosts):
    b = hosts()
    ref = make_on_b.remote(25 * MB // 8)                     # 200 MB, made on host b
    shoal.wait([ref])
    assert next(r for r in list_objects() if r["object_id"] == ref.id)["hosts"] == [b.host_id]
    arr = shoal.get(ref)
    assert arr[-1] == 25 * MB // 8 - 1 and not arr.flags.writeable
    local = runtime.current().client.host_id
    oid = ref.id
    wait_for(lambda: next(r for r in list_objects() if r["object_id"] == oid)["hosts"]
             == [b.host_id, local], what="the copy to be recorded")
    assert os.path.exists(runtime.current().client.store.existing_path(ref.id))

    @shoal.remote
    def total(a):
        return float(a.sum())

    assert shoal.get(total.remote(ref)) == float(arr.sum())
    del arr, ref
    wait_for(lambda: not b.store.object_files(), what="both copies to be freed")


def test_results_lost_with_their_host_are_rebuilt_from_lineage(hosts):
    b = hosts()
    ref = make_on_b.remote(MB)
    shoal.wait([ref])
    os.kill(b.process.pid, signal.SIGKILL)                 # the host and its store are gone
    wait_for(lambda: len(list_hosts()) == 1, what="the scheduler to notice")
    hosts()                                                # a host that can run it again
    assert shoal.get(ref, timeout=60)[-1] == MB - 1


def test_put_objects_lost_with_their_host_raise_object_lost(hosts):
    b = hosts()
    inner = shoal.get(put_on_b.remote(MB))[0]
    os.kill(b.process.pid, signal.SIGKILL)
    with pytest.raises(ObjectLostError, match=f"{inner.id}.*put by engine"):
        shoal.get(inner, timeout=60)


def test_no_retries_left_means_lost(hosts):
    b = hosts()
    ref = make_on_b.options(max_retries=0).remote(MB)
    shoal.wait([ref])
    os.kill(b.process.pid, signal.SIGKILL)
    with pytest.raises(ObjectLostError, match="no retries left"):
        shoal.get(ref, timeout=60)
