"""The "shoal" joblib backend, with scikit-learn's n_jobs, on a real cluster."""
import importlib
import os
import sys

import cloudpickle
import pytest

import shoal

joblib = pytest.importorskip("joblib")
from shoal.util.joblib import ShoalBackend, register_shoal  # noqa: E402

# Engines cannot import this test module: its functions travel by value, as a notebook's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def pid_and_square(x):
    return os.getpid(), x * x


def picky(x):
    if x == 13:
        raise ValueError("unlucky")
    return x


@pytest.fixture(scope="module")
def backend(cluster):
    register_shoal()
    yield "shoal"


def test_parallel_runs_every_call_on_the_cluster_in_order(backend):
    with joblib.parallel_backend(backend):
        out = joblib.Parallel()(joblib.delayed(pid_and_square)(i) for i in range(300))
    assert [sq for _, sq in out] == [i * i for i in range(300)]
    assert os.getpid() not in {pid for pid, _ in out}


def test_lambdas_and_generators_of_results(backend):
    k = 7
    with joblib.parallel_backend(backend, n_jobs=2):
        gen = joblib.Parallel(return_as="generator")(joblib.delayed(lambda x: x + k)(i) for i in range(50))
        assert list(gen) == [i + 7 for i in range(50)]


def test_an_error_is_raised_as_its_original_class_and_stops_the_rest(backend):
    with joblib.parallel_backend(backend):
        with pytest.raises(ValueError, match="unlucky"):
            joblib.Parallel()(joblib.delayed(picky)(i) for i in range(100))
        # the backend is usable again afterwards
        assert joblib.Parallel()(joblib.delayed(picky)(i) for i in range(5)) == list(range(5))


def test_n_jobs_follows_the_cluster(backend):
    cpus = int(shoal.cluster_resources()["CPU"])
    b = ShoalBackend()
    assert b.effective_n_jobs(-1) == cpus
    assert b.effective_n_jobs(-2) == max(cpus - 1, 1)
    assert b.effective_n_jobs(5) == 5
    with pytest.raises(ValueError):
        b.effective_n_jobs(0)
    with joblib.parallel_backend(backend, n_jobs=1):      # sequential here, as loky does
        assert joblib.Parallel()(joblib.delayed(os.getpid)() for _ in range(2)) == [os.getpid()] * 2


@pytest.mark.slow
def test_grid_search_on_the_cluster_equals_the_local_run(backend):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    grid = {"C": [0.5, 1, 10], "gamma": [0.0005, 0.001, 0.01]}
    local = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    with joblib.parallel_backend(backend):
        remote = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(X, y)
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == local.best_score_
    for key in ("params", "mean_test_score", "rank_test_score", "split0_test_score"):
        assert list(remote.cv_results_[key]) == list(local.cv_results_[key])
    assert (remote.predict(X) == local.predict(X)).all()


def test_without_joblib_the_import_error_says_what_to_install(monkeypatch):
    for name in [n for n in sys.modules if n == "shoal.util.joblib" or n.startswith("shoal.util.joblib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "joblib", None)      # import joblib -> ImportError
    with pytest.raises(ImportError, match="needs joblib.*pip install joblib"):
        importlib.import_module("shoal.util.joblib")


def test_backend_keywords_are_task_options(backend):
    with joblib.parallel_backend(backend, n_jobs=2, max_retries=0):
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Invalid option keyword 'bogus'"):
        with joblib.parallel_backend(backend, bogus=1):
            joblib.Parallel()(joblib.delayed(abs)(1) for _ in range(2))
