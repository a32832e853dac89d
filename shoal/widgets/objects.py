"""The object store: memory per host, and the objects themselves.

`ObjectStoreModel` turns the backend's two listings (`list_objects`,
`memory`: shoal.core.cluster_info's ObjectInfo and StoreMemory) into what the widget shows: a used / limit / spilled bar
per host, and a table of the largest objects (at most `max_rows`; the
frontend sorts them by any column).

`ObjectsWidget` re-queries when the event stream says objects changed, at
most every `MIN_INTERVAL` seconds and never spending more than a twentieth of
the time listing (the interval stretches to BUDGET times the last listing's
time), so a store with many objects does not slow the scheduler down.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import traitlets

from . import html as h
from .base import QueryingWidget, source_of, static

MAX_ROWS = 1000
MIN_INTERVAL = 0.5          # seconds between two listings, at least
BUDGET = 20                 # ... and at least BUDGET times as long as the last one took
COLUMNS = ("object_id", "type", "size", "reference_count", "hosts", "spilled", "where",
           "created_by")


class ObjectStoreModel:
    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.hosts: list = []
        self.rows: list = []
        self.count = 0
        self.total_bytes = 0
        self.updated: Optional[float] = None

    def update(self, objects: list, memory: list, now: Optional[float] = None) -> None:
        self.count = len(objects)
        self.total_bytes = sum(o.get("size") or 0 for o in objects)
        biggest = sorted(objects, key=lambda o: (-(o.get("size") or 0), o.get("object_id", "")))
        self.rows = [_row(o) for o in biggest[: self.max_rows]]
        self.hosts = [{
            "host_id": m.get("host_id", "?"), "hostname": m.get("hostname", ""),
            "used": m.get("used") or 0, "limit": m.get("limit") or 0,
            "spilled": m.get("spilled") or 0, "objects": m.get("objects") or 0,
        } for m in memory]
        self.updated = time.time() if now is None else now

    def view(self) -> dict:
        return {"hosts": self.hosts, "rows": self.rows, "count": self.count,
                "bytes": self.total_bytes, "shown": len(self.rows), "updated": self.updated}


def _row(o: dict) -> dict:
    created = o.get("created_by") or ""
    return {
        "object_id": o.get("object_id", ""), "type": o.get("type") or "",
        "size": o.get("size") or 0, "reference_count": o.get("reference_count") or 0,
        "hosts": ", ".join(o.get("hosts") or []), "spilled": bool(o.get("spilled")),
        "where": o.get("where") or "", "state": o.get("state") or "",
        "created_by": created if len(created) <= 120 else created[:119] + "…",
    }


def snapshot_html(v: dict, max_rows: int = 25) -> str:
    bars = "".join(
        f'<div style="margin:2px 0; white-space:nowrap">'
        f'<span style="display:inline-block; width:190px; overflow:hidden; text-overflow:ellipsis; '
        f'vertical-align:middle">host <b>{h.esc(x["host_id"])}</b> {h.esc(x["hostname"])}</span> '
        f'{h.meter(x["used"] / x["limit"] if x["limit"] else 0, "#4e79a7", 240, 10, x["spilled"] / x["limit"] if x["limit"] else 0, "#f28e2b")} '
        f'<span style="color:#57606a">{h.nbytes(x["used"])} / {h.nbytes(x["limit"])} used'
        f' · {h.nbytes(x["spilled"])} spilled · {h.count(x["objects"])} objects</span></div>'
        for x in v["hosts"])
    th = "".join(f'<th style="text-align:{"right" if c in ("size", "reference_count") else "left"};'
                 f' padding:2px 8px; border-bottom:1px solid #d0d7de">{c.replace("_", " ")}</th>'
                 for c in ("object_id", "type", "size", "reference_count", "hosts", "spilled",
                           "created_by"))
    body = "".join(
        "<tr>" + "".join(
            f'<td style="padding:1px 8px; text-align:{"right" if c in ("size", "reference_count") else "left"};'
            f' font-family:var(--jp-code-font-family, monospace)">'
            f'{h.esc(h.nbytes(r[c]) if c == "size" else ("yes" if r[c] else "") if c == "spilled" else r[c])}</td>'
            for c in ("object_id", "type", "size", "reference_count", "hosts", "spilled",
                      "created_by")) + "</tr>"
        for r in v["rows"][:max_rows])
    more = v["count"] - min(len(v["rows"]), max_rows)
    note = f"{h.count(v['count'])} objects · {h.nbytes(v['bytes'])}"
    return (f'<div class="shoal-objects-static" data-objects="{v["count"]}" style="{h.BOX}">'
            f'{h.title_bar("shoal object store", note)}{bars}'
            f'<table style="border-collapse:collapse; margin-top:6px; font-size:11px">'
            f'<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'
            + (f'<div style="color:#656d76; margin-top:4px">… and {h.count(more)} more</div>'
               if more > 0 else "") + "</div>")


class ObjectsWidget(QueryingWidget):
    """The live object store view (see shoal.objects)."""

    _esm = static("objects.js")
    view = traitlets.Dict({}).tag(sync=True)

    def __init__(self, client=None, *, feed=None, query: Optional[Callable] = None,
                 max_rows: int = MAX_ROWS, clock: Callable[[], float] = time.monotonic,
                 min_interval: float = MIN_INTERVAL, prefetch: bool = True) -> None:
        self.model = ObjectStoreModel(max_rows)
        self._query = query           # () -> (objects, memory); default: ask the scheduler
        self._init_querying(clock, min_interval, BUDGET)
        first = None
        self._source = source_of(client, feed)
        if prefetch:
            try:
                first = self._fetch()
            except Exception:          # the cluster is going: closed() follows
                first = None
        if first is not None:
            self.model.update(*first)
            self._next_query = time.monotonic() + min_interval
        super().__init__(client, feed=feed, view=self.model.view())

    def _relevant(self, batch) -> bool:
        return batch.objects_changed or batch.cluster_changed

    def refresh(self) -> bool:
        """Query now, on the calling thread; False if the cluster did not answer."""
        try:
            objects, memory = self._fetch()
        except Exception:              # the cluster is going: closed() follows
            return False
        with self._lock:
            self.model.update(objects, memory)
            view = self.model.view()
        self.view = view
        return True

    def _fetch(self):
        if self._query is not None:
            return self._query()
        return self._source.list_objects(), self._source.memory()

    def _handle(self, content: dict) -> None:
        if content.get("type") == "refresh":
            self._due = True
            self._next_query = 0.0
            self.poke()

    def html(self) -> str:
        return snapshot_html(self.model.view())

    def text(self) -> str:
        return (f"shoal object store: {self.model.count:,} objects, "
                f"{h.nbytes(self.model.total_bytes)}")
