"""The cluster: what `shoal.init()` returns shows as this in a notebook.

`ClusterModel` turns the scheduler's status (hosts, engines, resources,
memory, task counts) into rows and totals.  `ClusterWidget` re-queries when
tasks or the cluster change, at most every `MIN_INTERVAL` seconds (and never
spending more than a tenth of the time querying), and carries out the buttons: add or remove an engine on a
host (where the backend can scale: on Ray, through its autoscaler), stop the
cluster (or disconnect from one this process did not start).

The buttons arrive as comm messages, which the kernel handles on its shell
thread (ipykernel 7 with JupyterLab: on a subshell, so they work while a
cell runs too).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import traitlets

from . import html as h
from .base import QueryingWidget, source_of, static

log = logging.getLogger("shoal.widgets")
MIN_INTERVAL = 1.0          # seconds between two status queries, at least


class ClusterModel:
    def __init__(self, address: str = "", kind: str = "") -> None:
        self.address = address
        self.kind = kind
        self.hosts: list = []
        self.tasks = {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
        self.actors = 0
        self.engines = 0
        self.busy = 0
        self.updated: Optional[float] = None

    def update(self, status: dict, now: Optional[float] = None) -> None:
        memory = {m["host_id"]: m for m in status.get("memory") or []}
        engines = status.get("engines") or []
        busy_by_host: dict = {}
        for e in engines:
            if e.get("state") != "idle":
                busy_by_host[e.get("host_id")] = busy_by_host.get(e.get("host_id"), 0) + 1
        self.hosts = []
        for host in status.get("hosts") or []:
            res, avail = host.get("resources") or {}, host.get("available") or {}
            mem = memory.get(host["host_id"], {})
            self.hosts.append({
                "host_id": host["host_id"], "hostname": host.get("hostname", ""),
                "engines": len(host.get("engines") or []),
                "busy": busy_by_host.get(host["host_id"], 0),
                "cpus": res.get("CPU", 0), "cpus_free": avail.get("CPU", 0),
                "gpus": res.get("GPU", 0), "gpus_free": avail.get("GPU", 0),
                "mem_used": mem.get("used", 0), "mem_limit": mem.get("limit", 0),
                "spilled": mem.get("spilled", 0),
            })
        t = status.get("tasks") or {}
        # (scheduler/lifecycle.py: "queued"/"revoking" wait on a busy engine,
        # "cancelling" still runs)
        self.tasks = {"queued": sum(t.get(k, 0) for k in ("waiting", "ready", "queued",
                                                           "revoking")),
                      "running": t.get("running", 0) + t.get("cancelling", 0),
                      "done": t.get("finished", 0),
                      "failed": t.get("failed", 0), "cancelled": t.get("cancelled", 0)}
        self.actors = len(status.get("actors") or [])
        self.engines = len(engines)
        self.busy = sum(busy_by_host.values())
        self.updated = time.time() if now is None else now

    def totals(self) -> dict:
        keys = ("engines", "busy", "cpus", "cpus_free", "gpus", "gpus_free", "mem_used",
                "mem_limit", "spilled")
        return {k: sum(x[k] for x in self.hosts) for k in keys}

    def view(self) -> dict:
        return {"address": self.address, "kind": self.kind, "hosts": self.hosts,
                "totals": self.totals(), "tasks": self.tasks, "actors": self.actors,
                "updated": self.updated}


def _describe(source) -> dict:
    try:
        return dict(source.describe()) if hasattr(source, "describe") else {}
    except Exception:          # the cluster is going: closed() follows
        return {}


def snapshot_html(v: dict, live: bool = True, reason: str = "") -> str:
    t, tot = v["tasks"], v["totals"]
    state = "running" if live else f"stopped{': ' + reason if reason else ''}"

    def cell(text, right=False, bold=False):
        return (f'<td style="padding:2px 10px; text-align:{"right" if right else "left"};'
                f'{" font-weight:600;" if bold else ""}">{text}</td>')

    head = "".join(f'<th style="padding:2px 10px; text-align:{a}; border-bottom:1px solid #d0d7de">'
                   f'{n}</th>' for n, a in (("host", "left"), ("engines", "right"),
                                           ("CPUs", "right"), ("GPUs", "right"),
                                           ("object store", "left")))
    rows = "".join(
        "<tr>" + cell(f'<b>{h.esc(x["host_id"])}</b> <span style="color:#656d76">'
                      f'{h.esc(x["hostname"])}</span>')
        + cell(f'{x["engines"]} ({x["busy"]} busy)', True)
        + cell(f'{x["cpus"]:g}', True) + cell(f'{x["gpus"]:g}', True)
        + cell(f'{h.meter(x["mem_used"] / x["mem_limit"] if x["mem_limit"] else 0, "#4e79a7", 90, 8)} '
               f'{h.nbytes(x["mem_used"])} / {h.nbytes(x["mem_limit"])}') + "</tr>"
        for x in v["hosts"])
    tasks = " · ".join(f"{h.count(t[k])} {k}" for k in ("queued", "running", "done", "failed"))
    return (f'<div class="shoal-cluster-static" data-state="{"live" if live else "stopped"}" '
            f'style="{h.BOX}">'
            f'{h.title_bar("shoal cluster", h.esc(v["address"]) + " · " + h.esc(v["kind"]) + " · " + state)}'
            f'<div style="margin-bottom:4px">{len(v["hosts"])} host(s) · {tot["engines"]} engines · '
            f'{tot["cpus"]:g} CPUs · {tot["gpus"]:g} GPUs · {h.nbytes(tot["mem_limit"])} object store'
            f' · {v["actors"]} actors</div>'
            f'<table style="border-collapse:collapse; font-size:12px"><thead><tr>{head}</tr></thead>'
            f'<tbody>{rows}</tbody></table>'
            f'<div style="margin-top:6px">tasks: {tasks}</div></div>')


class ClusterWidget(QueryingWidget):
    """A live summary of the cluster with add / remove engine and stop buttons."""

    _esm = static("cluster.js")
    view = traitlets.Dict({}).tag(sync=True)
    owned = traitlets.Bool(True).tag(sync=True)       # stop (True) or disconnect (False)
    scalable = traitlets.Bool(True).tag(sync=True)    # the add / remove buttons show

    def __init__(self, rt=None, *, client=None, feed=None, status: Optional[Callable] = None,
                 commands: Optional[Callable] = None,
                 clock: Callable[[], float] = time.monotonic,
                 min_interval: float = MIN_INTERVAL, address: Optional[str] = None,
                 kind: Optional[str] = None) -> None:
        self._runtime = rt
        if rt is not None and client is None:
            client = rt.client
        self._source = source = source_of(client, feed)
        about = _describe(source)
        if rt is not None:
            owned = rt.cluster is not None
        else:                  # the dashboard (commands) stops what it shows itself
            owned = True if commands is not None else about.get("owned", True)
        kind = kind or about.get("kind") or ("embedded local cluster" if owned else "connected")
        self.model = ClusterModel(address or getattr(rt, "address", "") or about.get("address", ""),
                                  kind)
        self._status = status            # () -> status dict; default: the backend's status()
        self._commands = commands        # (content) -> None, for tests
        self._init_querying(clock, min_interval, budget=10)
        first = self._query()            # the first picture goes out with comm_open
        if first is not None:
            self.model.update(first)
            self._next_query = time.monotonic() + min_interval
        super().__init__(client, feed=feed, owned=owned, view=self.model.view(),
                         scalable=bool(about.get("scalable", True)))

    def _relevant(self, batch) -> bool:
        return bool(batch.tasks) or batch.cluster_changed or batch.objects_changed

    def _query(self) -> Optional[dict]:
        try:
            return self._status() if self._status is not None else self._source.status(timeout=5)
        except Exception:          # the cluster is going: closed() follows
            return None

    def refresh(self) -> bool:
        """Query the status now, on the calling thread; False if the cluster did not answer."""
        status = self._query()
        if status is None:
            return False
        with self._lock:
            self.model.update(status)
            view = self.model.view()
        self.view = view
        return True

    # ------------------------------------------------------------------ buttons
    def _handle(self, content: dict) -> None:
        kind = content.get("type")
        if kind not in ("scale", "stop"):
            return
        if self._commands is not None:
            self._commands(content)
        elif kind == "scale":
            if not self.scalable:
                return
            self.scale(content.get("host_id"), int(content.get("delta", 0)))
        else:
            self.stop_cluster()
        self._due = True
        self._next_query = 0.0
        self.poke()

    def scale(self, host_id: Optional[str], delta: int) -> None:
        """Add (delta > 0) or remove engines on a host; never below one."""
        with self._lock:
            host = next((x for x in self.model.hosts if x["host_id"] == host_id), None)
            if host is None and len(self.model.hosts) == 1:
                host = self.model.hosts[0]
        if host is None:
            return
        count = max(1, int(host["cpus"]) + delta)
        self._source.scale(count, host["host_id"])

    def stop_cluster(self) -> None:
        """Stop the cluster this process started, or disconnect from another."""
        from ..core import backend, runtime
        rt = self._runtime
        if rt is None:
            if backend.active is not None and backend.active is self._source:
                backend.disconnect()          # another engine's: shoal.shutdown()
            return
        if runtime.current_or_none() is rt:
            runtime.shutdown()
        else:
            rt.close()

    def _closed(self, reason: str) -> None:
        self.view = dict(self.model.view(), tasks=self.model.tasks)

    # ------------------------------------------------------------------ display
    def html(self) -> str:
        return snapshot_html(self.model.view(), self.live, self.closed_reason)

    def text(self) -> str:
        tot = self.model.totals()
        return (f"shoal cluster {self.model.address}: {len(self.model.hosts)} host(s), "
                f"{tot['engines']} engines, {tot['cpus']:g} CPUs, {tot['gpus']:g} GPUs")
