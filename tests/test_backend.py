"""The backend interface (shoal.core.backend), without Ray: address schemes,
the error without Ray, no `import ray` on shoal's own backend, option mapping."""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import shoal
from shoal.core import backend
from shoal.backends.ray import backend as ray_backend

try:
    import ray  # noqa: F401
    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False


def protocol_methods() -> set:
    return {name for name, member in vars(backend.Backend).items()
            if callable(member) and not name.startswith("_")}


def test_both_backends_implement_the_whole_interface():
    wanted = protocol_methods()
    assert {"submit_task", "create_actor", "get", "put", "wait", "cancel", "kill", "get_actor",
            "nodes", "cluster_resources", "workers", "route_output", "output_route",
            "subscribe", "logs_dir", "close"} <= wanted
    for impl in (backend.NativeBackend, ray_backend.RayBackend):
        missing = sorted(n for n in wanted if not callable(getattr(impl, n, None)))
        assert not missing, f"{impl.__name__} lacks {missing}"
        for name in wanted:        # same parameters as the protocol (names, keyword-only)
            want = list(inspect.signature(getattr(backend.Backend, name)).parameters)
            have = list(inspect.signature(getattr(impl, name)).parameters)
            assert have[:len(want)] == want, (impl.__name__, name, have, want)
    assert isinstance(backend.NATIVE, backend.Backend)


@pytest.mark.parametrize("address, scheme", [
    ("ray", "ray"), ("ray:auto", "ray"), ("ray:local", "ray"), ("ray://head:10001", "ray"),
    ("ray:10.0.0.1:6379", "ray"), (None, None), ("auto", None), ("local", None),
    ("127.0.0.1:7000", None), ("unix:/tmp/s", None), ("rayhost:7000", None)])
def test_address_schemes(address, scheme):
    assert backend.scheme_of(address) == scheme


@pytest.mark.parametrize("address, target", [
    ("ray", None), ("ray:auto", "auto"), ("ray:local", "local"),
    ("ray://head:10001", "ray://head:10001"), ("ray:10.0.0.1:6379", "10.0.0.1:6379")])
def test_ray_addresses(address, target):
    assert ray_backend.ray_address(address) == target


@pytest.mark.parametrize("address", ["ray:", "ray:nowhere", "ray:host:port"])
def test_a_bad_ray_address_is_refused_before_ray_is_imported(address):
    with pytest.raises(ValueError, match="bad Ray address"):
        shoal.init(address=address)
    assert not shoal.is_initialized()


@pytest.mark.skipif(HAVE_RAY, reason="Ray is installed in this interpreter")
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_without_ray_the_error_names_the_extra(how, monkeypatch):
    if how == "environment":
        monkeypatch.setenv("SHOAL_ADDRESS", "ray")
    with pytest.raises(ImportError, match=r"pip install 'shoal\[ray\]'"):
        shoal.init(address="ray" if how == "argument" else None)
    assert not shoal.is_initialized() and backend.active is None


def test_shoal_only_init_arguments_are_refused_on_ray():
    with pytest.raises(ValueError, match="hosts=.*ray start"):
        shoal.init(address="ray", hosts=["h1"])


def test_a_foreign_backends_own_init_arguments_go_to_it_and_shoals_refuses_them(monkeypatch):
    """Ray's own ray.init arguments (an ingress's TLS `_credentials=`) reach the
    Ray backend; shoal's own cluster refuses what it does not know."""
    seen = {}
    monkeypatch.setattr(backend, "connect", lambda target, **kw: seen.update(kw, target=target))
    creds = object()
    shoal.init(address="ray://h:443", _credentials=creds)
    assert seen["target"] == "ray://h:443" and seen["_credentials"] is creds
    with pytest.raises(TypeError, match="unexpected keyword argument.*'_credentials'"):
        shoal.init(_credentials=creds)
    assert not shoal.is_initialized()


def test_shoals_own_backend_never_imports_ray():
    code = ("import sys, shoal\n"
            "shoal.init(num_cpus=1)\n"
            "@shoal.remote\ndef f(x):\n    return x + 1\n"
            "assert shoal.get(f.remote(1)) == 2\n"
            "assert shoal.get(shoal.put(3)) == 3\n"
            "import shoal.magics, shoal.kernel, shoal.widgets, shoal.util\n"
            "shoal.shutdown()\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_task_options_become_rays():
    from shoal.core.remote_function import TASK_DEFAULTS
    opts = {**TASK_DEFAULTS, "num_returns": 2, "resources": {"x": 1}, "max_retries": 0}
    assert ray_backend.task_options(opts) == {
        "num_cpus": 1, "num_gpus": 0, "resources": {"x": 1}, "num_returns": 2,
        "max_retries": 0, "retry_exceptions": False}
    with pytest.raises(NotImplementedError, match="_engine_id"):
        ray_backend.task_options({**opts, "_engine_id": "e1"})


def test_actor_options_become_rays():
    from shoal.core.actor import ACTOR_DEFAULTS
    opts = {**ACTOR_DEFAULTS, "name": "a", "namespace": "n", "get_if_exists": True}
    assert ray_backend.actor_options(opts) == {
        "name": "a", "namespace": "n", "get_if_exists": True, "max_restarts": 0,
        "max_task_retries": 0, "max_pending_calls": -1}
    assert "get_if_exists" not in ray_backend.actor_options(ACTOR_DEFAULTS)


def test_features_of_shoals_scheduler_say_so_on_a_foreign_backend(monkeypatch):
    class Foreign:
        name, address = "other", "other://x"
    monkeypatch.setattr(backend, "active", Foreign())
    from shoal.util import state
    with pytest.raises(NotImplementedError, match="other backend at other://x"):
        state.task_story("t1")


def test_the_first_call_that_needs_shoals_scheduler_says_so_when_init_chose_another(monkeypatch):
    """SHOAL_ADDRESS names another engine and nothing runs yet: the call that would
    start shoal's own cluster connects there instead and then says what is missing
    (it once returned None: AttributeError on `.client`)."""
    class Foreign:
        name, address = "other", "other://x"
    import shoal
    from shoal.core import api, runtime
    shoal.shutdown()
    monkeypatch.setattr(backend, "active", None)
    monkeypatch.setattr(api, "init", lambda **kw: backend.set_active(Foreign()))
    with pytest.raises(NotImplementedError, match="other backend at other://x"):
        runtime.current()
