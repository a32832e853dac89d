"""runtime_env against a real cluster: env_vars, working_dir and py_modules,
per task, per actor and per job, undone for the next task of a reused engine."""
import os
import sys
import zipfile

import pytest

import shoal
from shoal.core import runtime
from shoal.core import runtime_env as renv
from shoal.launch.launcher import HostProcess
from shoal.util.state import list_hosts

from conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def one_engine():
    """One engine, so every task reuses the same process."""
    shoal.shutdown()
    yield lambda **kw: shoal.init(num_cpus=1, **kw)
    shoal.shutdown()


def make_folder(root, files: dict) -> str:
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return str(root)


@shoal.remote
def look(name="FOO"):
    import sys
    return os.environ.get(name), os.getcwd(), [p for p in sys.path if "runtime_env" in p]


def test_env_vars_last_for_the_task_only(one_engine):
    one_engine()
    os.environ.pop("SHOAL_TEST_VAR", None)
    value, cwd, paths = shoal.get(look.options(
        runtime_env={"env_vars": {"SHOAL_TEST_VAR": "set"}}).remote("SHOAL_TEST_VAR"))
    assert value == "set"
    again, cwd_after, paths_after = shoal.get(look.remote("SHOAL_TEST_VAR"))
    assert again is None and cwd_after == cwd and paths_after == []
    home = shoal.get(look.options(runtime_env={"env_vars": {"HOME": "/elsewhere"}}).remote("HOME"))
    assert home[0] == "/elsewhere" and shoal.get(look.remote("HOME"))[0] == os.environ["HOME"]


def test_working_dir_is_the_cwd_and_importable_and_new_versions_ship(one_engine, tmp_path):
    one_engine()
    wd = make_folder(tmp_path / "wd", {"data.txt": "hello", "helper.py": "VERSION = 1\n",
                                       "__pycache__/junk.pyc": "x"})

    @shoal.remote
    def use():
        import helper
        return open("data.txt").read(), helper.VERSION, os.listdir(".")

    data, version, listing = shoal.get(use.options(runtime_env={"working_dir": wd}).remote())
    assert (data, version) == ("hello", 1) and "__pycache__" not in listing
    cwd = shoal.get(look.remote())[1]
    assert "runtime_env" not in cwd                         # back where it was
    make_folder(tmp_path / "wd", {"helper.py": "VERSION = 2\n"})
    assert shoal.get(use.options(runtime_env={"working_dir": wd}).remote())[1] == 2


def test_py_modules_folders_and_module_objects(one_engine, tmp_path):
    one_engine()
    pkg = make_folder(tmp_path / "mods", {"mypkg/__init__.py": "from .inner import Y\n",
                                          "mypkg/inner.py": "Y = 42\n"})

    @shoal.remote
    def use():
        import mypkg
        import shoal_test_single
        return mypkg.Y, shoal_test_single.Z

    single = make_folder(tmp_path / "single", {"shoal_test_single.py": "Z = 'one file'\n"})
    env = {"py_modules": [os.path.join(pkg, "mypkg"),
                          os.path.join(single, "shoal_test_single.py")]}
    assert shoal.get(use.options(runtime_env=env).remote()) == (42, "one file")
    import json
    assert renv.validate({"py_modules": [json]})        # an imported package ships its folder


def test_an_actor_keeps_its_env_and_its_tasks_inherit_it(one_engine, tmp_path):
    one_engine()
    wd = make_folder(tmp_path / "wd", {"state.txt": "from the working dir"})

    @shoal.remote
    class Reader:
        def read(self):
            return os.environ.get("ACTOR_VAR"), open("state.txt").read()

        def child(self):
            return shoal.get(look.remote("ACTOR_VAR"))[0]

    actor = Reader.options(runtime_env={"env_vars": {"ACTOR_VAR": "a"},
                                        "working_dir": wd}).remote()
    assert shoal.get([actor.read.remote() for _ in range(3)]) == [("a", "from the working dir")] * 3
    assert shoal.get(actor.child.remote()) == "a"


def test_the_jobs_env_merges_with_each_tasks(one_engine):
    one_engine(runtime_env={"env_vars": {"JOB_VAR": "job", "BOTH": "job"}})

    @shoal.remote
    def both():
        return os.environ.get("JOB_VAR"), os.environ.get("BOTH"), shoal.get(
            look.remote("BOTH"))[0]

    assert shoal.get(both.options(runtime_env={"env_vars": {"BOTH": "task"}}).remote()) == (
        "job", "task", "task")                  # a nested task inherits its parent's env
    assert shoal.get(both.remote()) == ("job", "job", "job")


def test_unsupported_and_malformed_envs_are_refused_at_the_call(tmp_path):
    for field in ("pip", "conda", "container"):
        with pytest.raises(ValueError, match=f"{field!r} is not supported.*env_vars, "
                                             f"working_dir, py_modules"):
            look.options(runtime_env={field: ["numpy"]})
    with pytest.raises(ValueError, match="'excludes' is not supported.*does not implement"):
        look.options(runtime_env={"excludes": ["*.csv"]})
    with pytest.raises(ValueError, match="unknown runtime_env field"):
        look.options(runtime_env={"evn_vars": {}})
    with pytest.raises(TypeError, match="dict of str to str"):
        look.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="not a local folder"):
        look.options(runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="remote URIs"):
        look.options(runtime_env={"working_dir": "s3://bucket/x.zip"})
    with pytest.raises(TypeError, match=r"'runtime_env' must be one of \(dict, None\)"):
        look.options(runtime_env=["env_vars"])
    with pytest.raises(ValueError, match="not supported"):
        shoal.remote(runtime_env={"pip": ["x"]})(type("C", (), {}))


def test_packages_are_named_by_content(tmp_path):
    a = make_folder(tmp_path / "a", {"x.py": "1", "sub/y.txt": "2"})
    first = renv.package(a, keep_name=False)
    os.utime(os.path.join(a, "x.py"), (0, 0))
    assert renv.package(a, keep_name=False) == first            # times do not count
    names = zipfile.ZipFile(__import__("io").BytesIO(renv.package(
        os.path.join(a, "sub"), keep_name=True))).namelist()
    assert names == ["sub/y.txt"]
    assert renv.merge({"env_vars": {"A": "1"}, "working_dir": "p"},
                      {"env_vars": {"B": "2"}}) == {"env_vars": {"A": "1", "B": "2"},
                                                   "working_dir": "p"}


def test_working_dir_reaches_an_engine_on_another_host(fresh_cluster, tmp_path):
    fresh_cluster(num_cpus=1)
    rt = runtime.current()
    host = HostProcess(rt.address, rt.cluster.key, rt.client.cluster_id,
                       str(tmp_path / "other-host-session"), num_cpus=1, resources={"B": 1})
    try:
        wait_for(lambda: len(list_hosts()) == 2, what="the second host")
        wd = make_folder(tmp_path / "wd", {"data.txt": "shipped"})

        @shoal.remote(resources={"B": 1})
        def read():
            return open("data.txt").read(), os.getcwd()

        data, cwd = shoal.get(read.options(runtime_env={"working_dir": wd}).remote(), timeout=60)
        assert data == "shipped" and cwd.startswith(str(tmp_path / "other-host-session"))
    finally:
        host.stop()


def test_the_drivers_folders_go_back_on_sys_path_whatever_a_task_did(tmp_path, monkeypatch):
    """In-process: the usual env (the driver's code folders) found on sys.path
    once is not looked for again while sys.path is unchanged; a task that
    took a folder off sys.path does not leave the next task without it."""
    from shoal.engine import runtime_env as engine_env
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = str(tmp_path / "driver_code")
    env = {"sys_path": [folder]}
    undo = engine_env.apply(env, cache=None)
    assert sys.path[0] == folder
    undo()
    assert folder not in sys.path
    sys.path.insert(0, folder)                  # as an engine's first task leaves it
    assert engine_env.apply(env, None) is engine_env.NOTHING
    assert engine_env.apply({"sys_path": [folder]}, None) is engine_env.NOTHING
    sys.path.remove(folder)                     # a task took it away
    undo = engine_env.apply(env, None)
    assert folder in sys.path and undo is not engine_env.NOTHING
    sys.path.insert(0, "/elsewhere")            # a task added its own
    assert engine_env.apply(env, None) is engine_env.NOTHING and sys.path.count(folder) == 1
    other = str(tmp_path / "other")
    undo = engine_env.apply({"sys_path": [other]}, None)
    assert sys.path[0] == other
    undo()
    assert other not in sys.path
