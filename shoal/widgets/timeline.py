"""The task timeline: a lane per engine (grouped by host), a bar per task run.

`TimelineModel` folds task events into runs, keyed by (task id, start): a
"running" event opens a bar, the event that ends that run closes it (a retry
is a new run, so a retried task shows each attempt).  Runs live in columns
(lists) indexed by row number; what changed since the last push is kept as
a set of rows, or as "reset" when everything must be sent again (a
snapshot, or the oldest half dropped past `max_runs`).

`TimelineWidget` sends rows to the frontend as binary columns in custom
messages (a reset, then only the rows that changed), because re-sending a
10,000-row trait ten times a second would cost more than the tasks.  Each
message carries a sequence number; a view that missed one (or a new view)
says "hello" and gets a reset.  Small, slowly changing facts (engines,
names, counts, the clock) travel as the `meta` trait.  The frontend draws
on a canvas, merging bars narrower than a pixel, so 10,000 tasks or more
stay smooth; hover, zoom, pan and the follow-the-present window are all
client-side.
"""
from __future__ import annotations

import math
import time
from array import array
from typing import Iterable, Optional

import traitlets

from . import html as h
from .base import LiveWidget, static

STATUSES = ("running", "finished", "failed", "cancelled", "retried", "crashed")
CODE = {s: i for i, s in enumerate(STATUSES)}
MAX_RUNS = 100_000


class TimelineModel:
    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self.engines: list = []          # [engine_id, host_id], in order of first sight
        self._engine_index: dict = {}
        self.alive: Optional[set] = None  # engine ids the cluster has now (None: unknown)
        self.names: list = []
        self._name_index: dict = {}
        self.version = 0
        self.clear()

    def clear(self) -> None:
        """Forget every run (engines and names keep their indices)."""
        self.task_id: list = []
        self.name: list = []
        self.engine: list = []
        self.status: list = []
        self.start: list = []
        self.end: list = []
        self._key: dict = {}
        self._open_row: dict = {}        # task id -> the row of its open run
        self.counts = {"finished": 0, "failed": 0, "cancelled": 0, "retried": 0}
        self.dirty: set = set()
        self.reset = True
        self.t0: Optional[float] = None
        self.version += 1

    def __len__(self) -> int:
        return len(self.task_id)

    @property
    def open(self) -> int:
        """Runs started and not ended."""
        return len(self._open_row)

    # ------------------------------------------------------------------ events
    def apply(self, tasks: Iterable, snapshot: bool = False) -> None:
        if snapshot:
            self.clear()
        key_of, status, end, dirty, code_of = self._key, self.status, self.end, self.dirty, CODE.get
        open_row = self._open_row
        n = 0
        for ev in tasks:                      # the hot loop: ~1 µs an event
            code = code_of(ev.status)
            if code is None:
                continue
            n += 1
            if ev.start is None:               # ended without running (cancelled, failed deps)
                self._count(ev.status)
                continue
            key = (ev.task_id, ev.start)
            row = key_of.get(key)
            if row is None:
                # A task runs once at a time: an open run of it is this run, started
                # again elsewhere (its engine gave it back before it began).
                row = open_row.get(ev.task_id)
                if row is not None:
                    self._move(row, key, ev)
            if row is None:
                row = self._add(key, ev, code, None if code == 0 else ev.end)
                if code == 0:
                    open_row[ev.task_id] = row
                    continue
            elif code == 0:
                continue
            else:
                old = status[row]
                if old == code:
                    continue                    # the same end twice (a replay)
                if old == 0:
                    del open_row[ev.task_id]
                status[row] = code
                end[row] = ev.end
                dirty.add(row)
            self._count(ev.status)
        self.version += n
        if len(self.task_id) > self.max_runs:
            self._drop_oldest()

    def _count(self, status: str) -> None:
        key = "retried" if status == "crashed" else status
        if key in self.counts:
            self.counts[key] += 1

    def _move(self, row: int, key, ev) -> None:
        """Give an open run the start and engine of the task's newer start."""
        del self._key[(self.task_id[row], self.start[row])]
        self._key[key] = row
        self.start[row] = ev.start
        self.engine[row] = self.engine_of(ev.engine_id, ev.host_id)
        if self.t0 is not None and ev.start < self.t0:
            self.t0, self.reset = ev.start, True
        self.dirty.add(row)

    def _add(self, key, ev, code: int, end: Optional[float]) -> int:
        row = len(self.task_id)
        self._key[key] = row
        self.task_id.append(ev.task_id)
        name = self._name_index.get(ev.name)
        self.name.append(name if name is not None else self._name_of(ev.name))
        engine = self._engine_index.get(ev.engine_id)
        self.engine.append(engine if engine is not None else
                           self.engine_of(ev.engine_id, ev.host_id))
        self.status.append(code)
        self.start.append(ev.start)
        self.end.append(end)
        if self.t0 is None or ev.start < self.t0:
            if self.t0 is not None:
                self.reset = True            # times are sent relative to t0
            self.t0 = ev.start
        self.dirty.add(row)
        return row

    def _name_of(self, name: str) -> int:
        i = self._name_index.get(name)
        if i is None:
            i = self._name_index[name] = len(self.names)
            self.names.append(name)
        return i

    def engine_of(self, engine_id: Optional[str], host_id: Optional[str]) -> int:
        engine_id = engine_id or "?"
        i = self._engine_index.get(engine_id)
        if i is None:
            i = self._engine_index[engine_id] = len(self.engines)
            self.engines.append([engine_id, host_id or "?"])
            self.version += 1
        return i

    def set_engines(self, engines: Iterable) -> None:
        """The engines the cluster has now ((engine_id, host_id) pairs): each gets a lane."""
        alive = set()
        for engine_id, host_id in engines:
            self.engine_of(engine_id, host_id)
            alive.add(engine_id)
        if alive != self.alive:
            self.alive = alive
            self.version += 1

    def _drop_oldest(self) -> None:
        """Keep the newer half (and every open run); the frontend gets a reset."""
        cut = len(self.task_id) - self.max_runs // 2
        keep = [r for r in range(len(self.task_id)) if r >= cut or self.status[r] == 0]
        for col in ("task_id", "name", "engine", "status", "start", "end"):
            values = getattr(self, col)
            setattr(self, col, [values[r] for r in keep])
        self._key = {(t, s): i for i, (t, s) in enumerate(zip(self.task_id, self.start))}
        self._open_row = {t: i for i, (t, c) in enumerate(zip(self.task_id, self.status)) if c == 0}
        self.t0 = min(self.start) if self.start else None
        self.dirty = set()
        self.reset = True

    # ------------------------------------------------------------------ out
    def take(self) -> tuple[bool, list]:
        """(reset, rows changed since the last take); clears both."""
        reset, rows = self.reset, sorted(self.dirty)
        self.reset, self.dirty = False, set()
        return reset, (list(range(len(self.task_id))) if reset else rows)

    def columns(self, rows: list) -> tuple[dict, list]:
        """Rows as binary columns: (JSON part, buffers).  Times are seconds after t0;
        an open run's end is NaN."""
        t0 = self.t0 or 0.0
        nan = math.nan
        buffers = [
            array("i", rows),
            array("i", [self.engine[r] for r in rows]),
            array("i", [self.name[r] for r in rows]),
            array("i", [self.status[r] for r in rows]),
            array("d", [self.start[r] - t0 for r in rows]),
            array("d", [nan if self.end[r] is None else self.end[r] - t0 for r in rows]),
        ]
        return ({"n": len(rows), "t0": self.t0, "ids": [self.task_id[r] for r in rows],
                 "columns": ["row", "engine", "name", "status", "start", "end"]},
                [memoryview(b.tobytes()) for b in buffers])

    def runs(self, now: Optional[float] = None) -> list[dict]:
        """Every run as a dict (for export); an open run ends at `now`."""
        now = time.time() if now is None else now
        out = []
        for r in range(len(self.task_id)):
            engine_id, host_id = self.engines[self.engine[r]]
            end = self.end[r]
            out.append({"task_id": self.task_id[r], "name": self.names[self.name[r]],
                        "status": STATUSES[self.status[r]], "engine_id": engine_id,
                        "host_id": host_id, "start": self.start[r],
                        "end": end if end is not None else max(now, self.start[r])})
        return out

    def lane_order(self) -> list[int]:
        """Engine indices in display order: grouped by host, then by engine id."""
        return sorted(range(len(self.engines)),
                      key=lambda i: (_natural(self.engines[i][1]), _natural(self.engines[i][0])))

    def meta(self, now: float) -> dict:
        return {
            "engines": [[e, host, self.alive is None or e in self.alive] for e, host in self.engines],
            "names": self.names,
            "colors": [h.color_for(i) for i in range(len(self.names))],
            "counts": dict(self.counts, running=self.open, runs=len(self.task_id)),
            "t0": self.t0, "now": now,
        }


def _natural(s: str) -> tuple:
    """'e10' after 'e9'."""
    import re
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s or ""))


# ---------------------------------------------------------------------- snapshot
def snapshot_html(model: TimelineModel, now: Optional[float] = None, width: int = 860) -> str:
    """The timeline as an inline SVG: bars merged per pixel, failures in red."""
    now = time.time() if now is None else now
    c = model.counts
    n = len(model)
    gutter, lane_h, head_h, axis_h = 150, 14, 16, 18
    plot_w = width - gutter - 10
    order = model.lane_order()
    summary = (f"{h.count(n)} runs on {len(model.engines)} engine(s) · "
               f"{h.count(c['finished'])} finished · {h.count(c['failed'])} failed"
               + (f" · {h.count(c['cancelled'])} cancelled" if c["cancelled"] else "")
               + (f" · {h.count(model.open)} running" if model.open else ""))
    if not n:
        return (f'<div class="shoal-timeline-static" data-runs="0" style="{h.BOX}">'
                f'{h.title_bar("shoal timeline", summary)}'
                f'<div style="color:#656d76">No tasks have run yet.</div></div>')
    ends = [e if e is not None else now for e in model.end]
    t_min, t_max = min(model.start), max(max(ends), min(model.start) + 1e-3)
    scale = plot_w / (t_max - t_min)
    rows_by_lane: dict = {}
    for r in range(n):
        rows_by_lane.setdefault(model.engine[r], []).append(r)
    parts, y = [], axis_h
    last_host = None
    lane_y = {}
    for lane in order:
        host = model.engines[lane][1]
        if host != last_host:
            parts.append(f'<text x="4" y="{y + 12}" font-size="11" font-weight="600" '
                         f'fill="#57606a">host {h.esc(host)}</text>')
            y += head_h
            last_host = host
        lane_y[lane] = y
        parts.append(f'<text x="14" y="{y + 11}" font-size="10" fill="#57606a">'
                     f'{h.esc(model.engines[lane][0])}</text>')
        y += lane_h
    for lane, rows in rows_by_lane.items():
        ly = lane_y.get(lane)
        if ly is None:
            continue
        pixels: dict = {}
        for r in rows:
            x0 = int((model.start[r] - t_min) * scale)
            x1 = max(x0, int((ends[r] - t_min) * scale))
            failed = model.status[r] in (2, 5)
            for x in range(x0, min(x1, plot_w - 1) + 1):
                prev = pixels.get(x)
                if prev is None or failed:
                    pixels[x] = (h.FAILED if failed else h.CANCELLED if model.status[r] == 3
                                 else h.color_for(model.name[r]))
        x, xs = None, sorted(pixels)
        for i, px in enumerate(xs):
            if x is None:
                x, color = px, pixels[px]
            nxt = xs[i + 1] if i + 1 < len(xs) else None
            if nxt != px + 1 or pixels[nxt] != color:
                parts.append(f'<rect x="{gutter + x}" y="{ly + 2}" width="{px - x + 1}" '
                             f'height="{lane_h - 4}" fill="{color}"/>')
                x = None
    step = _tick_step(t_max - t_min)
    t = 0.0
    while t <= t_max - t_min + 1e-9:
        tx = gutter + t * scale
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{axis_h - 4}" y2="{y}" '
                     f'stroke="#d0d7de" stroke-width="0.5"/>'
                     f'<text x="{tx + 2:.1f}" y="{axis_h - 6}" font-size="10" '
                     f'fill="#57606a">{h.esc(_tick_label(t, step))}</text>')
        t += step
    legend = " ".join(
        f'<span style="white-space:nowrap; margin-right:10px"><span style="display:inline-block; '
        f'width:10px; height:10px; border-radius:2px; background:{h.color_for(i)}; '
        f'vertical-align:middle"></span> {h.esc(name)}</span>'
        for i, name in enumerate(model.names[:24]))
    if c["failed"]:
        legend += (f' <span style="white-space:nowrap"><span style="display:inline-block; '
                   f'width:10px; height:10px; border-radius:2px; background:{h.FAILED}; '
                   f'vertical-align:middle"></span> failed</span>')
    return (f'<div class="shoal-timeline-static" data-runs="{n}" style="{h.BOX}">'
            f'{h.title_bar("shoal timeline", summary)}'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 4}" '
            f'style="font-family:sans-serif">{"".join(parts)}</svg>'
            f'<div style="margin-top:4px">{legend}</div></div>')


def _tick_step(span: float) -> float:
    raw = max(span, 1e-6) / 7
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag  # pragma: no cover


def _tick_label(t: float, step: float) -> str:
    if step >= 1:
        return f"{t:.0f} s"
    if step >= 1e-3:
        return f"{t * 1e3:.0f} ms"
    return f"{t * 1e6:.0f} µs"


# ---------------------------------------------------------------------- widget
class TimelineWidget(LiveWidget):
    """The live task timeline (see shoal.timeline)."""

    _esm = static("timeline.js")
    meta = traitlets.Dict({}).tag(sync=True)
    title = traitlets.Unicode("shoal timeline").tag(sync=True)

    def __init__(self, client=None, *, feed=None, list_engines=None, max_runs: int = MAX_RUNS) -> None:
        self.model = TimelineModel(max_runs)
        self._list_engines = list_engines
        self._engines_due = True
        self._sending = False          # True once displayed or a view said hello
        self._want_reset = True
        self._seq = 0
        self._meta_version = -1
        super().__init__(client, feed=feed, meta=self.model.meta(time.time()))

    def _apply(self, batch) -> None:
        self.model.apply(batch.tasks, snapshot=batch.snapshot)
        if batch.cluster_changed:
            self._engines_due = True

    def _flush(self, now: float) -> Optional[float]:
        if self._engines_due:
            self._engines_due = False
            try:
                engines = self._engines()
            except Exception:           # the cluster is going; closed() follows
                engines = None
            if engines is not None:
                with self._lock:
                    self.model.set_engines(engines)
        with self._lock:
            m = self.model
            msg = None
            if self._sending:
                if self._want_reset:
                    m.reset = True
                    self._want_reset = False
                reset, rows = m.take()
                if reset or rows:
                    content, buffers = m.columns(rows)
                    base = -1 if reset else self._seq
                    self._seq += 1
                    content.update(type="reset" if reset else "rows", seq=self._seq, base=base)
                    msg = (content, buffers)
            meta = None
            if m.version != self._meta_version or msg is not None:
                self._meta_version = m.version
                meta = m.meta(time.time())
        if meta is not None:
            with self.hold_sync():
                self.meta = meta
        if msg is not None:
            self.send(msg[0], msg[1])
        return None

    def _engines(self):
        if self._list_engines is not None:
            return self._list_engines()
        return [(e["engine_id"], e["host_id"]) for e in self._source.status()["engines"]]

    def _handle(self, content: dict) -> None:
        if content.get("type") == "hello":
            with self._lock:
                self._sending = True
                self._want_reset = True
            self.poke()

    def _displayed(self) -> None:
        with self._lock:
            if not self._sending:
                self._sending = True
                self._want_reset = True
        self.poke()

    def _closed(self, reason: str) -> None:
        self.model.set_engines([])
        self.meta = self.model.meta(time.time())

    def finished(self) -> bool:
        return not self.model.open

    def html(self) -> str:
        return snapshot_html(self.model)

    def text(self) -> str:
        c = self.model.counts
        return (f"shoal timeline: {len(self.model):,} runs on {len(self.model.engines)} engine(s), "
                f"{c['finished']:,} finished, {c['failed']:,} failed, {self.model.open:,} running")

    def runs(self) -> list[dict]:
        with self._lock:
            return self.model.runs()
