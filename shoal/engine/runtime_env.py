"""runtime_env, engine side: unpack shipped folders and apply the env to a call.

A package (see core/runtime_env.py) is fetched from the object store the
first time an engine on this host needs it, and unpacked into
<session dir>/runtime_env/<hash>, atomically, so engines of one host share
one copy and never see half of one.  `apply` sets the env for one task and
returns an undo: environment variables, the working directory, sys.path and
the modules imported from the shipped folders go back to what they were, so
a reused engine runs the next task in a clean process state.  An actor's
env is applied at its creation and kept for its life.  The driver's code
folders ("sys_path") go on sys.path too; modules from them stay imported.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import zipfile
from typing import Callable, Optional

NOTHING: Callable[[], None] = lambda: None  # noqa: E731
# The usual env, the driver's code folders alone, was found on sys.path: that
# answer stands while neither list changes (a task may change sys.path).  Every
# task of a burst asked again: ~5 us of an engine's ~37 per no-op task.
_FOUND: list = [None, None]          # [that env's sys_path, sys.path then]


class PackageCache:
    def __init__(self, root: str, fetch: Callable[[str], bytes]) -> None:
        self.root = root
        self.fetch = fetch          # a package's bytes, by object id, from the store

    def folder(self, digest: str, object_id: str) -> str:
        """The unpacked folder of a package, fetching it if this host lacks it."""
        target = os.path.join(self.root, digest)
        if os.path.isdir(target):
            return target
        data = self.fetch(object_id)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        tmp = f"{target}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)              # zipfile drops absolute and ".." parts
        try:
            os.rename(tmp, target)
        except OSError:                     # another engine of this host was first
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(target):
                raise
        return target


def apply(env: Optional[dict], cache: PackageCache) -> Callable[[], None]:
    """Set a task's runtime_env in this process; returns how to undo it."""
    if not env:
        return NOTHING
    paths_only = len(env) == 1 and "sys_path" in env
    if paths_only and env["sys_path"] == _FOUND[0] and sys.path == _FOUND[1]:
        return NOTHING
    folders = []
    working_dir = None
    if env.get("working_dir"):
        working_dir = cache.folder(*env["working_dir"])
        folders.append(working_dir)
    for digest, object_id in env.get("py_modules") or ():
        folders.append(cache.folder(digest, object_id))
    saved_env = {k: os.environ.get(k) for k in env.get("env_vars") or {}}
    os.environ.update(env.get("env_vars") or {})
    saved_cwd = os.getcwd() if working_dir else None
    if working_dir:
        os.chdir(working_dir)
    present = set(sys.path)
    added = []
    for folder in (*folders, *(env.get("sys_path") or ())):
        if folder not in present:
            present.add(folder)
            added.append(folder)
    if not (added or saved_env or working_dir or folders):
        if paths_only:
            _FOUND[:] = [list(env["sys_path"]), list(sys.path)]
        return NOTHING          # the common case (the driver's sys.path, here already)
    sys.path[:0] = added
    before = set(sys.modules) if folders else None   # ~1,000 names: only when needed

    def undo() -> None:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if saved_cwd is not None:
            os.chdir(saved_cwd)
        for folder in added:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass
        if folders:        # the next task may ship another version of these modules
            prefixes = tuple(os.path.join(f, "") for f in folders)
            for name in set(sys.modules) - before:
                file = getattr(sys.modules.get(name), "__file__", None) or ""
                if file.startswith(prefixes):
                    del sys.modules[name]
    return undo
