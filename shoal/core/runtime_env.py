"""runtime_env, client side: check it, and ship its folders to the cluster.

Supported, as Ray: `env_vars` (str -> str), `working_dir` (a local folder,
or a .zip of one) and `py_modules` (local package folders, .zip files or
imported modules).  Each folder is zipped with fixed timestamps, named by the
hash of its contents and `put` into the cluster once per driver; engines on
every host unpack it once into a per-host cache (see engine/runtime_env.py).

What travels in a task's spec is a plain dict: {"env_vars": {...},
"working_dir": [hash, object id], "py_modules": [[hash, object id], ...],
"sys_path": [the driver's script folder and working directory]} (the last
one set by init, as Ray puts the driver's folder on its workers' sys.path).
The driver holds the package refs for as long as it lives.
"""
from __future__ import annotations

import hashlib
import io
import os
import types
import zipfile
from typing import Optional

SUPPORTED = ("env_vars", "working_dir", "py_modules")
# Ray's other fields: refused with a message that says what to do instead.
PACKAGE_MANAGERS = ("pip", "uv", "conda", "container", "image_uri")
UNSUPPORTED = PACKAGE_MANAGERS + ("nsight", "java_jars", "mpi", "excludes", "config")
MAX_PACKAGE_BYTES = 100 * 1024 * 1024        # Ray's limit for working_dir
_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}


def validate(env) -> Optional[dict]:
    """A runtime_env as given by the user, checked; None for None or {}."""
    if env is None:
        return None
    if not isinstance(env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(env).__name__}")
    for key in env:
        if key in SUPPORTED:
            continue
        if key in UNSUPPORTED:
            advice = ("engines run this cluster's Python environment, so install packages on "
                      "every host (for example with pip in the environment `shoal start` runs "
                      "from)" if key in PACKAGE_MANAGERS else
                      "shoal does not implement it (working_dir leaves out __pycache__, .git "
                      "and .ipynb_checkpoints; ship a smaller folder to leave out more)")
            raise ValueError(f"runtime_env field {key!r} is not supported by shoal: {advice}. "
                             f"Supported fields: {', '.join(SUPPORTED)}.")
        raise ValueError(f"unknown runtime_env field {key!r}; supported fields: "
                         f"{', '.join(SUPPORTED)}")
    env_vars = env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str, got "
                            f"{env_vars!r}")
    if env.get("working_dir") is not None:
        _local_path(env["working_dir"], "working_dir")
    modules = env.get("py_modules")
    if modules is not None:
        if not isinstance(modules, (list, tuple)):
            raise TypeError(f"runtime_env['py_modules'] must be a list, got {modules!r}")
        for mod in modules:
            _module_path(mod)
    return dict(env) if env else None


def driver_code_path() -> list:
    """Where the driver's own modules live: its script's folder (if it runs a
    script) and its working directory (a notebook's folder)."""
    import sys
    paths = []
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        paths.append(os.path.dirname(os.path.abspath(main_file)))
    cwd = os.getcwd()
    if cwd not in paths:
        paths.append(cwd)
    return paths


def merge(parent: Optional[dict], child: Optional[dict]) -> Optional[dict]:
    """A task's env over its job's (or parent's): fields override, env_vars merge (Ray)."""
    if not parent:
        return child
    if not child:
        return parent
    merged = {**parent, **child}
    if "env_vars" in parent and "env_vars" in child:
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return merged


def _local_path(value, field: str, files: tuple = (".zip",)) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"runtime_env[{field!r}] must be a local path, got {value!r}")
    path = os.path.abspath(os.fspath(value))
    if "://" in os.fspath(value):
        raise ValueError(f"runtime_env[{field!r}] = {value!r}: shoal ships local folders and "
                         f".zip files only, not remote URIs")
    if not (os.path.isdir(path) or (os.path.isfile(path) and path.endswith(files))):
        raise ValueError(f"runtime_env[{field!r}] = {value!r} is not a local folder or "
                         f"{' or '.join(files)} file")
    return path


def _module_path(mod) -> str:
    if isinstance(mod, types.ModuleType):
        file = getattr(mod, "__file__", None)
        if not file:
            raise ValueError(f"py_modules: module {mod.__name__} has no files to ship")
        return os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
    return _local_path(mod, "py_modules", (".zip", ".py"))


def package(path: str, keep_name: bool) -> bytes:
    """A zip of a folder (under its own name if keep_name), byte-identical for
    identical contents.  A .zip file is shipped as it is."""
    if path.endswith(".zip") and os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    buf = io.BytesIO()
    total = 0
    base = os.path.dirname(path) if keep_name else path
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        files = [path] if os.path.isfile(path) else sorted(_walk(path))
        for file in files:
            info = zipfile.ZipInfo(os.path.relpath(file, base), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (os.stat(file).st_mode & 0o777) << 16
            with open(file, "rb") as f:
                data = f.read()
            total += len(data)
            if total > MAX_PACKAGE_BYTES:
                raise ValueError(f"runtime_env: {path} holds more than "
                                 f"{MAX_PACKAGE_BYTES // 2**20} MiB; ship less (large data "
                                 f"belongs in shoal.put or shared storage)")
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _walk(root: str):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            if not name.endswith(".pyc"):
                yield os.path.join(dirpath, name)


def resolve(client, env: Optional[dict]) -> Optional[dict]:
    """The wire form of a checked runtime_env: folders uploaded (once per content)."""
    if not env:
        return None
    out: dict = {}
    if env.get("env_vars"):
        out["env_vars"] = dict(env["env_vars"])
    if env.get("working_dir") is not None:
        out["working_dir"] = _upload(client, _local_path(env["working_dir"], "working_dir"),
                                     keep_name=False)
    if env.get("py_modules"):
        out["py_modules"] = [_upload(client, _module_path(mod), keep_name=True)
                             for mod in env["py_modules"]]
    return out or None


def _upload(client, path: str, keep_name: bool) -> list:
    from .api import put
    data = package(path, keep_name)
    digest = hashlib.sha1(data).hexdigest()[:20]
    packages = client.runtime_env_packages
    ref = packages.get(digest)
    if ref is None:
        ref = packages[digest] = put(data)      # held by this client while it lives
    return [digest, ref.id]
