"""shoal.util.multiprocessing.Pool against a real cluster, compared with
multiprocessing.Pool on the same calls."""
import multiprocessing
import os
import sys
import threading

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal.util.multiprocessing import Pool, RemoteTraceback

from conftest import wait_for

# Engines cannot import this test module: its functions travel by value, as a notebook's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inverse(x):
    return 100 // x


def power(x, y):
    return x ** y


def set_offset(value):
    global OFFSET
    OFFSET = value


def add_offset(x):
    return x + OFFSET


def count_calls(x):
    global CALLS
    CALLS = globals().get("CALLS", 0) + 1
    return os.getpid(), CALLS


@pytest.fixture(scope="module")
def pools(cluster):
    with multiprocessing.get_context("fork").Pool(2) as local, Pool(2) as remote:
        yield local, remote


def outcome(call):
    """What a call returns, or the type and text of what it raises."""
    try:
        return "ok", call()
    except Exception as exc:
        return "error", type(exc), str(exc)


items = st.lists(st.integers(-5, 20), max_size=60)
chunks = st.one_of(st.none(), st.integers(1, 9))
settings_ = settings(max_examples=12, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_
@given(xs=items, chunksize=chunks)
def test_map_and_map_async_match_multiprocessing(pools, xs, chunksize):
    local, remote = pools
    for p in (local, remote):
        assert isinstance(p.map_async(inverse, xs, chunksize).wait(30), type(None))
    assert outcome(lambda: remote.map(inverse, xs, chunksize)) == \
        outcome(lambda: local.map(inverse, xs, chunksize))


@settings_
@given(xs=items, chunksize=st.integers(1, 9))
def test_imap_and_imap_unordered_match_multiprocessing(pools, xs, chunksize):
    local, remote = pools
    xs = [x for x in xs if x != 0]
    assert list(remote.imap(inverse, xs, chunksize)) == list(local.imap(inverse, xs, chunksize))
    assert sorted(remote.imap_unordered(inverse, xs, chunksize)) == \
        sorted(local.imap_unordered(inverse, xs, chunksize))


@settings_
@given(pairs=st.lists(st.tuples(st.integers(-3, 9), st.integers(0, 4)), max_size=30), chunksize=chunks)
def test_starmap_matches_multiprocessing(pools, pairs, chunksize):
    local, remote = pools
    assert remote.starmap(power, pairs, chunksize) == local.starmap(power, pairs, chunksize)
    assert remote.starmap_async(power, pairs, chunksize).get(30) == \
        local.starmap_async(power, pairs, chunksize).get(30)


def test_apply_and_apply_async_with_callbacks(pools):
    _, pool = pools
    assert pool.apply(divmod, (17, 5)) == (3, 2)
    assert pool.apply(sorted, ([3, 1, 2],), {"reverse": True}) == [3, 2, 1]
    got, errors, done = [], [], threading.Event()
    ok = pool.apply_async(power, (2, 10), callback=got.append)
    bad = pool.apply_async(inverse, (0,), error_callback=lambda e: (errors.append(e), done.set()))
    assert ok.get(timeout=30) == 1024 and got == [1024]
    assert done.wait(30) and isinstance(errors[0], ZeroDivisionError)
    assert ok.successful() and not bad.successful()


def test_errors_come_back_as_the_original_exception_with_the_remote_traceback(pools):
    _, pool = pools
    with pytest.raises(ZeroDivisionError) as info:
        pool.map(inverse, [1, 0, 2])
    assert type(info.value) is ZeroDivisionError
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in inverse" in str(info.value.__cause__)
    it = pool.imap(inverse, [1, 0, 4])
    assert next(it) == 100
    with pytest.raises(ZeroDivisionError):
        next(it)
    assert next(it) == 25          # as in multiprocessing, the iterator goes on


def test_lambdas_and_closures_work(pools):
    _, pool = pools
    k = 3
    assert pool.map(lambda x: x * k, range(5)) == [0, 3, 6, 9, 12]


def test_workers_are_cluster_processes_and_the_timeout_of_get(pools):
    _, pool = pools
    pids = set(pool.map(lambda _: os.getpid(), range(40), chunksize=1))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    slow = pool.apply_async(__import__("time").sleep, (1.0,))
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(timeout=0.05)
    assert slow.get(timeout=30) is None


def test_initializer_state_lives_on_in_the_workers(cluster):
    with Pool(2, initializer=set_offset, initargs=(1000,)) as pool:
        assert pool.map(add_offset, range(6)) == list(range(1000, 1006))
        assert pool.map(add_offset, [7]) == [1007]


def test_maxtasksperchild_replaces_workers(cluster):
    with Pool(1, maxtasksperchild=2) as pool:
        results = pool.map(count_calls, range(6), chunksize=1)
    pids = [pid for pid, _ in results]
    assert [n for _, n in results] == [1, 2, 1, 2, 1, 2]     # each worker did 2 chunks
    assert len(set(pids)) == 3


def test_close_join_finishes_queued_work_and_terminate_fails_the_rest(cluster):
    pool = Pool(2)
    pending = pool.map_async(lambda x: x + 1, range(100), chunksize=5)
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(abs, [1])
    pool.join()
    assert pending.get(timeout=1) == list(range(1, 101))
    threads = [t for t in threading.enumerate() if t is pool._thread]
    assert not threads

    pool = Pool(1)
    sleeping = pool.apply_async(__import__("time").sleep, (30,))
    pool.terminate()
    with pytest.raises(ValueError, match="terminated"):
        sleeping.get(timeout=10)
    with pytest.raises(ValueError, match="still running"):
        Pool(1).join()


def test_workers_end_with_the_pool(cluster):
    with Pool(2) as pool:
        pids = set(pool.map(lambda _: os.getpid(), range(20), chunksize=1))
    from conftest import alive
    assert wait_for(lambda: not any(alive(p) for p in pids), what="pool workers gone")


def test_bad_arguments_are_clear_errors(cluster):
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(TypeError, match="initializer"):
        Pool(1, initializer=3)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=0)
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="Chunksize"):
            pool.imap(abs, [1], chunksize=0)
        with pytest.raises(TypeError, match="not callable"):
            pool.map(None, [1])


def test_the_same_code_runs_on_both_pools(cluster):
    def work(pool_class):
        with pool_class(2) as pool:
            return (pool.map(inverse, range(1, 30)), sorted(pool.imap_unordered(abs, range(-9, 9), 4)),
                    pool.starmap(power, [(2, 5), (3, 3)]), pool.apply(max, (1, 8)))

    assert work(Pool) == work(multiprocessing.get_context("fork").Pool)


def test_a_generator_that_raises_fails_the_imap(pools):
    _, pool = pools

    def gen():
        yield 1
        raise RuntimeError("input broke")

    it = pool.imap(abs, gen())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="input broke"):
        next(it)
    shoal.get(shoal.put(0))     # the cluster is fine


def test_rays_signature_works_too(cluster):
    with Pool(1, initargs=None, ray_remote_args={"num_cpus": 1}) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
    with pytest.raises(ValueError, match="not both"):
        Pool(1, actor_options={}, ray_remote_args={})
    with pytest.raises(ValueError, match="Invalid option"):
        Pool(1, actor_options={"bogus": 1})
