"""The notebook's cluster: started on first use, shown and steered by `%cluster`.

`ClusterControl.ensure()` is what every magic calls first: it returns the
process's runtime, starting one if there is none (connecting to `address` —
from the shoal kernel's config, else SHOAL_ADDRESS — or else starting the
embedded local cluster), and
routes its task output to the notebook.  A cluster that was lost (killed,
crashed) is replaced by a new one on the next use.

`ClusterView` is what `%cluster` shows: a snapshot of hosts, engines and
actors as text and as an HTML table (widgets come in a later version).
"""
from __future__ import annotations

import html
import os
import sys
import time
from typing import Optional


from ..core import api, backend, runtime
from ..core.context import implicit_resource
from ..util import state


class ClusterControl:
    def __init__(self, router) -> None:
        self.router = router
        self.address: Optional[str] = None      # defaults for clusters started here
        self.num_cpus: Optional[int] = None
        self.on_stop = []                       # called when the cluster goes
        self.shared_by: Optional[str] = None    # the shoal kernel: plain init() gets its cluster

    def ensure(self) -> runtime.Runtime:
        """The runtime, started if needed, its output routed to the notebook
        (or the foreign backend, e.g. Ray's, that this process is connected to)."""
        if backend.active is not None:
            self.attach()
            return backend.active
        rt = runtime.current_or_none()
        if rt is not None and rt.client.lost:
            print(f"shoal: the cluster at {rt.address} was lost ({rt.client.lost}); "
                  f"starting a new one", file=sys.stderr)
            self.stop()
            rt = None
        if rt is None:
            address = self.address or os.environ.get("SHOAL_ADDRESS") or None
            if address not in (None, "local"):
                self.connect(address)
            else:
                self.start()
            if backend.active is not None:
                return backend.active
            rt = runtime.current()
        self.attach()
        return rt

    def attach(self) -> None:
        """Route the current runtime's output here, if there is one."""
        backend.current().route_output(self.router)
        owner = backend.active or runtime.current_or_none()     # the Ray backend, or shoal's runtime
        if owner is not None and self.shared_by is not None:
            owner.shared_by = self.shared_by

    def start(self, num_cpus: Optional[int] = None, hosts: Optional[list] = None
              ) -> api.ClusterContext:
        """Start an embedded local cluster (num_cpus engines; default: the
        kernel's setting, else one per CPU), and hosts over SSH if given."""
        ctx = api.init(address="local", hosts=hosts or None,
                         num_cpus=num_cpus if num_cpus is not None else self.num_cpus)
        _wait_for_engines(num_cpus or self.num_cpus)
        self.attach()
        return ctx

    def connect(self, address: str) -> api.ClusterContext:
        if api.is_initialized():
            self.stop()
        # An address that always starts a cluster of its own (a local Ray) takes
        # the kernel's CPU count, as the embedded cluster does.
        own = address == "ray:local" and self.num_cpus is not None
        ctx = api.init(address=address, **({"num_cpus": self.num_cpus} if own else {}))
        self.attach()
        return ctx

    def stop(self) -> None:
        """Disconnect; stop the cluster if this process started it."""
        backend.current().unroute_output(self.router)
        api.shutdown()
        for callback in self.on_stop:
            callback()


def _wait_for_engines(expected: Optional[int], timeout: float = 15.0) -> None:
    """Show the cluster once its local engines have joined (they start in parallel)."""
    from ..launch.agent import available_cpus
    expected = expected or available_cpus()
    deadline = time.monotonic() + timeout
    while len(state.list_engines()) < expected and time.monotonic() < deadline:
        time.sleep(0.02)


class ClusterView:
    """A snapshot of the cluster, shown as text or an HTML table."""

    def __init__(self) -> None:
        self.foreign = backend.active
        if self.foreign is not None:
            self.running = True
            return
        rt = runtime.current_or_none()
        self.running = rt is not None and not rt.client.lost
        if not self.running:
            return
        self.address = rt.address
        self.embedded = rt.cluster is not None
        self.hosts = state.list_hosts()
        self.engines = sorted(state.list_engines(), key=lambda e: e["engine_id"])
        self.actors = state.list_actors()

    def _summary(self) -> str:
        kind = "embedded local cluster" if self.embedded else "connected"
        total: dict = {}
        free: dict = {}
        for h in self.hosts:
            for k, v in h["resources"].items():
                total[k] = total.get(k, 0) + v
                free[k] = free.get(k, 0) + h["available"].get(k, 0)
        res = ", ".join(f"{k} {free.get(k, 0):g}/{v:g} free" for k, v in sorted(total.items())
                        if not implicit_resource(k))
        actors = sum(1 for e in self.engines if e.get("actor_id"))
        hosting = f" (+{actors} hosting actors)" if actors else ""
        return (f"shoal cluster at {self.address} ({kind}): {len(self.hosts)} host(s), "
                f"{len(self.engines) - actors} engine(s){hosting}; {res}")

    def _engine_rows(self) -> list:
        rows = []
        for e in self.engines:
            doing = (f"actor {e['actor_id']}" if e.get("actor_id") else
                     f"running {e['task_id']}" if e.get("task_id") else e.get("state", ""))
            rows.append((e["engine_id"], e["host_id"], str(e["pid"]), doing))
        return rows

    def _actor_rows(self) -> list:
        return [(a.get("name") or a["actor_id"], a["class_name"], a["state"], a.get("engine_id") or "-")
                for a in self.actors]

    def _foreign_summary(self) -> list:
        """A foreign backend's cluster: its address, nodes and resources."""
        bk = self.foreign
        nodes = [n for n in bk.nodes() if n.get("Alive", True)]
        total, free = bk.cluster_resources(), bk.available_resources()
        res = ", ".join(f"{k} {free.get(k, 0):g}/{v:g} free" for k, v in sorted(total.items())
                        if not implicit_resource(k))
        lines = [f"{bk.name} cluster at {bk.address}: {len(nodes)} node(s); {res}", "Nodes:"]
        lines += [f"  {n['NodeID'][:16]:<18} {n.get('NodeManagerAddress', ''):<16} "
                  + ", ".join(f"{k} {v:g}" for k, v in sorted(n.get("Resources", {}).items())
                              if not implicit_resource(k))
                  for n in nodes]
        return lines

    def __repr__(self) -> str:
        if self.foreign is not None:
            return "\n".join(self._foreign_summary())
        if not self.running:
            return "No shoal cluster yet: one starts on first use (or `%cluster start [-n N]`)."
        lines = [self._summary(), "Engines:"]
        lines += [f"  {eid:<18} host {host:<10} pid {pid:<8} {doing}"
                  for eid, host, pid, doing in self._engine_rows()]
        if self.actors:
            lines.append("Actors:")
            lines += [f"  {name:<18} {cls:<18} {st:<10} on {eng}"
                      for name, cls, st, eng in self._actor_rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if self.foreign is not None:
            return f"<pre class='shoal-cluster-view'>{html.escape(repr(self))}</pre>"
        if not self.running:
            return f"<p>{html.escape(repr(self))}</p>"

        def table(head, rows):
            th = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in head)
            body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>"
                                            for c in row) + "</tr>" for row in rows)
            return f"<table class='shoal-cluster'><tr>{th}</tr>{body}</table>"

        parts = [f"<p><b>{html.escape(self._summary())}</b></p>",
                 table(("engine", "host", "pid", "doing"), self._engine_rows())]
        if self.actors:
            parts.append(table(("actor", "class", "state", "engine"), self._actor_rows()))
        return "<div class='shoal-cluster-view'>" + "".join(parts) + "</div>"
