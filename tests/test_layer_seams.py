"""Where shoal's layers meet without importing upward: core's hooks (filled
by the widgets) and the engine's services (given by core's worker)."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

import shoal
from shoal.core import hooks
from shoal.core.client import Client
from shoal.core.worker import EngineServices
from shoal.engine.services import EngineClient, Services


def _members(protocol: type) -> set:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("protocol, given", [(Services, EngineServices),
                                             (EngineClient, Client)])
def test_core_gives_the_engine_every_service_it_declares(protocol, given):
    for name in _members(protocol):
        if name in vars(protocol) and inspect.isfunction(vars(protocol)[name]):
            assert callable(getattr(given, name, None)), f"{given.__name__} lacks {name}()"
            wanted = inspect.signature(vars(protocol)[name]).parameters
            got = inspect.signature(getattr(given, name)).parameters
            assert list(wanted) == list(got)[:len(wanted)], name
        elif given is EngineServices:
            assert name == "client" or hasattr(given, name), f"{given.__name__} lacks {name}"


@pytest.fixture
def fresh_hooks(monkeypatch):
    monkeypatch.setattr(hooks, "_hooks", {})
    monkeypatch.setattr(hooks, "_loader", None)


def test_a_hook_point_must_exist_and_a_hook_be_callable(fresh_hooks):
    with pytest.raises(ValueError, match="no hook point 'cluster_dispaly'"):
        hooks.register("cluster_dispaly", print)
    with pytest.raises(TypeError, match="must be callable"):
        hooks.register(hooks.CLUSTER_DISPLAY, "widget")
    assert hooks.get(hooks.CLUSTER_DISPLAY) is None        # nobody registered, no loader


def test_the_loader_runs_once_on_first_need_and_again_after_failing(fresh_hooks):
    calls = []

    def loader():
        calls.append(1)
        if len(calls) == 1:
            raise ImportError("no ipywidgets")
        hooks.register(hooks.WAIT_PROGRESS, show)

    def show(client, ids, what):
        return None

    hooks.set_loader(loader)
    with pytest.raises(ImportError):
        hooks.get(hooks.WAIT_PROGRESS)
    assert hooks.get(hooks.WAIT_PROGRESS) is show
    assert hooks.get(hooks.CLUSTER_DISPLAY) is None        # loaded already: not again
    assert len(calls) == 2
    hooks.unregister(hooks.WAIT_PROGRESS, print)            # not what it holds: kept
    assert hooks.get(hooks.WAIT_PROGRESS) is show
    hooks.unregister(hooks.WAIT_PROGRESS, show)
    assert hooks.get(hooks.WAIT_PROGRESS) is None


def test_importing_the_widgets_registers_their_hooks(tmp_path):
    """In a fresh process: plain `import shoal` loads no widgets (no ipywidgets
    either) and registers nothing; importing shoal.widgets registers both."""
    code = ("import sys, shoal\nfrom shoal.core import hooks\n"
            "assert 'shoal.widgets' not in sys.modules and not hooks._hooks\n"
            "import shoal.widgets as w\n"
            "assert hooks.get(hooks.CLUSTER_DISPLAY) is w.cluster_bundle\n"
            "assert hooks.get(hooks.WAIT_PROGRESS) is w.auto_progress\n")
    _python(code, tmp_path)


def test_the_first_need_brings_the_widgets(tmp_path):
    code = ("import sys, shoal\nfrom shoal.core import hooks\n"
            "show = hooks.get(hooks.CLUSTER_DISPLAY)\n"
            "assert 'shoal.widgets' in sys.modules\n"
            "assert show is sys.modules['shoal.widgets'].cluster_bundle\n")
    _python(code, tmp_path)


def _python(code: str, cwd) -> None:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=cwd, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
