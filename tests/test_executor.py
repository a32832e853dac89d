"""shoal.util.Executor against a real cluster, compared with concurrent.futures."""
import concurrent.futures as cf
import os
import sys

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.util import Executor

# Engines cannot import this test module: its functions travel by value, as a notebook's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def pid_of(_=None):
    return os.getpid()


def slow_identity(x, seconds=0.0):
    import time
    time.sleep(seconds)
    return x


def test_submit_runs_on_the_cluster_and_accepts_lambdas_and_kwargs(cluster):
    with Executor() as ex:
        assert ex.submit(pid_of).result(timeout=10) != os.getpid()
        assert ex.submit(lambda a, b=1: a + b, 2, b=5).result(timeout=10) == 7
        with pytest.raises(ZeroDivisionError):
            ex.submit(lambda: 1 / 0).result(timeout=10)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xs=st.lists(st.integers(-1000, 1000), max_size=40), ys=st.lists(st.integers(0, 3), max_size=40),
       chunksize=st.integers(1, 7))
def test_map_matches_the_builtin_map(cluster, xs, ys, chunksize):
    with Executor() as ex:
        assert list(ex.map(pow, xs, ys, chunksize=chunksize)) == list(map(pow, xs, ys))


def test_map_raises_the_error_when_its_result_is_reached(cluster):
    with Executor(max_workers=2) as ex:
        results = ex.map(lambda x: 10 // x, [5, 2, 0, 1], chunksize=1)
        assert next(results) == 2 and next(results) == 5
        with pytest.raises(ZeroDivisionError):
            next(results)


def test_map_timeout_raises_timeout_error(cluster):
    with Executor(max_workers=1) as ex:
        with pytest.raises(cf.TimeoutError):
            list(ex.map(slow_identity, [1, 2], [2.0, 2.0], timeout=0.3))
        ex.shutdown(cancel_futures=True)


def test_max_workers_bounds_the_calls_on_the_cluster_and_queued_calls_cancel(cluster):
    ex = Executor(max_workers=1)
    first = ex.submit(slow_identity, "first", 0.5)
    queued = [ex.submit(slow_identity, i) for i in range(3)]
    assert first.running() and not queued[0].running()
    assert queued[1].cancel() and queued[1].cancelled()
    assert not first.cancel()              # already on the cluster, as a running process call
    ex.shutdown(wait=True)
    assert first.result() == "first"
    assert [queued[0].result(), queued[2].result()] == [0, 2]


def test_shutdown_cancel_futures_and_no_submit_after(cluster):
    ex = Executor(max_workers=1)
    running = ex.submit(slow_identity, 1, 0.3)
    waiting = [ex.submit(slow_identity, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 1
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pid_of)


def test_it_is_a_concurrent_futures_executor_usable_with_wait_and_as_completed(cluster):
    assert issubclass(Executor, cf.Executor)
    with Executor(num_cpus=1) as ex:
        futures = [ex.submit(slow_identity, i) for i in range(20)]
        done, _ = cf.wait(futures, timeout=20)
        assert len(done) == 20
        assert sorted(f.result() for f in cf.as_completed(futures)) == list(range(20))


def test_bad_arguments_are_clear_errors(cluster):
    with pytest.raises(ValueError, match="max_workers"):
        Executor(max_workers=0)
    with pytest.raises(ValueError, match="Invalid option"):
        Executor(bogus=1)
    with Executor() as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.submit(42)
        with pytest.raises(ValueError, match="chunksize"):
            ex.map(abs, [1], chunksize=0)


def test_same_code_runs_on_process_pool_executor_and_shoal(cluster):
    def work(make):
        with make(max_workers=2) as ex:
            return sorted(ex.map(abs, range(-10, 10), chunksize=3)), ex.submit(max, 3, 9).result()

    assert work(Executor) == work(cf.ProcessPoolExecutor)
