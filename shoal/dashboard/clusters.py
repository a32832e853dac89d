"""The clusters a Jupyter server can show, and the one connection it keeps to each.

A cluster is visible when its connection file (in Jupyter's runtime dir, mode
0600) can be read by the server's user and its scheduler is alive: the file
holds the key, so whoever can read it could connect anyway; nobody else sees
it.  Connection files say whether a driver owns the cluster (`owned`: an
embedded cluster of a kernel or script, gone with it) or `shoal start` made
it (it runs until `shoal stop`).

`Connections` holds one dashboard client per cluster, shared by every page
that shows it, so that every view of a cluster runs on one event feed (as a
kernel's widgets do).  Its calls block (they talk to a scheduler): the
handlers run them on a worker thread, never on the server's event loop.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from typing import Optional

from .. import session
from ..core.client import Client
from ..protocol import messages as m

log = logging.getLogger("shoal.dashboard")
MAX_START_CPUS = 1024
CLI_TIMEOUT = 90.0


@dataclass(frozen=True)
class Cluster:
    cluster_id: str
    address: str
    kind: str                 # "embedded" (a driver's, e.g. a kernel's) or "started" (`shoal start`)
    pid: Optional[int]        # the scheduler's
    owner_pid: Optional[int]  # the process that started an embedded cluster (its parent)
    session_dir: str
    connection_file: str
    started: Optional[float]

    def public(self) -> dict:
        """What a page may see: everything but the key (never read into this object)."""
        return asdict(self)


def visible_clusters() -> list:
    """The live clusters whose connection files this process can read, newest first
    (an unreadable file, another user's say, is skipped as a malformed one is)."""
    out = []
    for info in session.running_clusters():
        path = info["path"]
        pid = _int(info.get("pid"))
        owned = info.get("owned", True)
        cluster_id = info.get("cluster_id") or os.path.basename(path)[
            len(session.CONNECTION_PREFIX):-len(".json")]
        out.append(Cluster(
            cluster_id=str(cluster_id), address=info["address"],
            kind="embedded" if owned else "started", pid=pid,
            owner_pid=_parent(pid) if owned else None,
            session_dir=info.get("session_dir") or "", connection_file=path,
            started=info.get("started")))
    return out


def find(cluster_id: str) -> Optional[Cluster]:
    return next((c for c in visible_clusters() if c.cluster_id == cluster_id), None)


def _int(x) -> Optional[int]:
    try:
        return int(x) if x else None
    except (TypeError, ValueError):
        return None


def _parent(pid: Optional[int]) -> Optional[int]:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def ancestors(pid: Optional[int], depth: int = 4) -> list:
    """pid, its parent, grandparent... (a kernel may start the cluster through a helper)."""
    out = []
    while pid and len(out) < depth:
        out.append(pid)
        pid = _parent(pid)
    return out


class Connections:
    """One dashboard client per cluster; `close()` ends them all (idempotent)."""

    def __init__(self) -> None:
        self._clients: dict = {}
        self._lock = threading.Lock()

    def client(self, cluster: Cluster) -> Client:
        with self._lock:
            c = self._clients.get(cluster.cluster_id)
            if c is not None and not c.lost:
                return c
        info = session.read_connection_file(cluster.connection_file)
        new = Client.connect(info["address"], bytes.fromhex(info["key"]), kind="dashboard",
                             timeout=5)
        with self._lock:
            old = self._clients.get(cluster.cluster_id)
            if old is not None and not old.lost:      # another thread won the race
                new.close()
                return old
            self._clients[cluster.cluster_id] = new
        if old is not None:
            old.close()
        return new

    def status(self, cluster: Cluster, timeout: float = 3.0) -> dict:
        return self.client(cluster).status(timeout=timeout)

    def scale(self, cluster: Cluster, delta: int, host_id: Optional[str] = None) -> dict:
        """Add (delta > 0) or remove engines on a host (default: the head's), never below one."""
        client = self.client(cluster)
        hosts = client.status(timeout=5)["hosts"]
        host = next((h for h in hosts if h["host_id"] == host_id), None) if host_id else \
            (hosts[0] if hosts else None)
        if host is None:
            raise ValueError(f"no host {host_id!r} in cluster {cluster.cluster_id}")
        count = max(1, int(host["resources"].get("CPU", len(host["engines"]))) + delta)
        return client.query("scale", count=count, host_id=host["host_id"])

    def stop(self, cluster: Cluster) -> str:
        """Stop a cluster: `shoal stop` for one it started, a shutdown message for a
        driver's (whose driver then sees its cluster gone, as after `shoal stop`)."""
        if cluster.kind == "started":
            return run_cli(["stop", "--address", cluster.address])
        self.client(cluster).send(m.Shutdown(reason="stopped from the dashboard"))
        return f"Stopped the shoal cluster at {cluster.address}."

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            try:
                c.close()
            except Exception:
                log.debug("closing a dashboard client failed", exc_info=True)


def start_cluster(num_cpus: Optional[int]) -> str:
    """`shoal start --head` (a cluster that outlives the server, as from a shell)."""
    args = ["start", "--head"]
    if num_cpus is not None:
        if not isinstance(num_cpus, int) or isinstance(num_cpus, bool) or \
                not 1 <= num_cpus <= MAX_START_CPUS:
            raise ValueError(f"num_cpus must be a whole number from 1 to {MAX_START_CPUS}")
        args += ["--num-cpus", str(num_cpus)]
    return run_cli(args)


def run_cli(args: list) -> str:
    """Run the `shoal` CLI with this interpreter; its output, or ValueError with its error."""
    # Output to a file, not a pipe: the cluster's processes outlive the CLI and must not
    # hold our end open.
    with tempfile.TemporaryFile("w+") as f:
        code = subprocess.run([sys.executable, "-m", "shoal", *args], stdin=subprocess.DEVNULL,
                              stdout=f, stderr=subprocess.STDOUT, timeout=CLI_TIMEOUT).returncode
        f.seek(0)
        text = f.read().strip()
    if code != 0:
        raise ValueError(text or f"shoal {args[0]} failed")
    return text
