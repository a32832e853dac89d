"""Where a cluster keeps its files: session directory, logs, connection files.

A session directory (under the temp dir) holds the logs of every process of
one cluster.  The connection file (in Jupyter's runtime dir, mode 0600) holds
the address and the key; it is how `shoal status`, `shoal stop` and
`shoal.init(address=...)` find a running cluster.  Keys never go on command
lines or into logs: child processes get their configuration on stdin.
"""
from __future__ import annotations

import faulthandler
import glob
import json
import logging
import os
import sys
import tempfile
import time

CONNECTION_PREFIX = "shoal-cluster-"


def runtime_dir() -> str:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        path = jupyter_runtime_dir()
    except ImportError:   # jupyter_core is a dependency, but stay usable without it
        path = os.environ.get("JUPYTER_RUNTIME_DIR") or os.path.expanduser(
            "~/.local/share/jupyter/runtime")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def sessions_root() -> str:
    return os.path.join(tempfile.gettempdir(), "shoal-sessions")


def new_session_dir(cluster_id: str) -> str:
    root = sessions_root()
    os.makedirs(root, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path = os.path.join(root, f"session_{stamp}_{cluster_id}")
    os.makedirs(os.path.join(path, "logs"), mode=0o700, exist_ok=True)
    return path


def connection_file_path(cluster_id: str) -> str:
    return os.path.join(runtime_dir(), f"{CONNECTION_PREFIX}{cluster_id}.json")


def write_connection_file(path: str, info: dict) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    os.replace(path + ".tmp", path)


def read_connection_file(path: str) -> dict:
    try:
        with open(path) as f:
            info = json.load(f)
        key = bytes.fromhex(info["key"])
        if not info["address"] or not key:
            raise ValueError("empty address or key")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"bad shoal connection file {path}: {exc}") from None
    return info


def find_connection_files() -> list[str]:
    """Connection files of clusters started here, newest first."""
    files = glob.glob(os.path.join(runtime_dir(), CONNECTION_PREFIX + "*.json"))
    return sorted(files, key=os.path.getmtime, reverse=True)


def running_clusters() -> list[dict]:
    """Connection info (with "path") of every live cluster started on this
    machine, newest first; unreadable or stale files are skipped."""
    found = []
    for path in find_connection_files():
        try:
            info = read_connection_file(path)
        except ValueError:
            continue
        if _alive(info.get("pid")):
            found.append({**info, "path": path})
    return found


def describe(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"{info['address']} (started {started}, scheduler pid {info.get('pid')})"


def find_cluster(address: str | None = None) -> dict | None:
    """The running cluster at `address`; with no address (or "auto"), the one
    cluster started here with `shoal start`.  A process's embedded cluster is
    never picked unless its address is given.  None if there is none; a
    ValueError naming them all if there are several (we never guess)."""
    clusters = running_clusters()
    if address not in (None, "auto"):
        return next((c for c in clusters if address in (c["address"], c.get("local_address"))),
                    None)
    started = [c for c in clusters if not c.get("owned")]
    if len(started) > 1:
        raise ValueError(
            f"{len(started)} shoal clusters started with `shoal start` are running on this "
            f"machine: {'; '.join(describe(c) for c in started)}. Say which one with its "
            f"address (--address HOST:PORT, or address=\"HOST:PORT\").")
    return started[0] if started else None


def _alive(pid) -> bool:
    if not pid:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def wait_until_closed(fd: int) -> None:
    """Block until the other end of a pipe is closed: how a process learns
    that its owner is gone (even killed with SIGKILL)."""
    while True:
        try:
            if not os.read(fd, 64):
                return
        except InterruptedError:
            continue
        except OSError:
            return


def read_config_from_stdin() -> dict:
    return json.loads(sys.stdin.readline())


def setup_process_logging(session_dir: str, name: str) -> str:
    """Send this process's logging and stray output to its log file."""
    path = os.path.join(session_dir, "logs", f"{name}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # C-level writes and crash tracebacks land in the log too.
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    faulthandler.enable(file=sys.stderr, all_threads=True)   # a segfault leaves its traceback
    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr, force=True)
    return path
