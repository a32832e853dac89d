"""The dashboard's tornado handlers, under `<base_url>shoal/`.

    shoal/                               the index: every visible cluster, links, start
    shoal/cluster/<id>/<view>            a full-page live view (views.VIEWS)
    shoal/cluster/<id>/<view>/ws         its websocket (bridge.py's frames)
    shoal/api/clusters                   GET: the clusters, as JSON; POST {"num_cpus"}: start one
    shoal/api/clusters/<id>/stop|scale   POST; scale takes {"delta", "host_id"?}
    shoal/static/<file>                  page.js and the views' modules; widgets/<name>.js
                                         are the notebook widgets' own modules, as anywidget
                                         loads them

Every handler requires the server's authenticated user and its authorization
for the resource "shoal"; nothing listens besides the server itself.  Calls
that talk to a scheduler or spawn the CLI run on the dashboard's worker
threads, never on the event loop.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from html import escape

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import ensure_async, url_path_join
from tornado import web
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from . import bridge, clusters
from .views import STATIC, VIEWS

log = logging.getLogger("shoal.dashboard")
AUTH_RESOURCE = "shoal"
ID = r"[A-Za-z0-9_.-]{1,64}"
WIDGET_MODULES = {"timeline": "timeline.js", "objects": "objects.js", "cluster": "cluster.js",
                  "progress": "progress.js"}
PAGE_FILES = {"page.js": "text/javascript", "page.css": "text/css", "index.js": "text/javascript"}
VIEW_MODULES = ("tasks.js", "actors.js", "logs.js")      # like the widgets': common.js in front


class Base(JupyterHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def dash(self):
        return self.settings["shoal_dashboard"]

    def cluster_or_404(self, cluster_id: str) -> clusters.Cluster:
        cluster = clusters.find(cluster_id)
        if cluster is None:
            raise web.HTTPError(404, f"no running shoal cluster {cluster_id!r} visible here")
        return cluster

    async def blocking(self, fn, *args):
        return await IOLoop.current().run_in_executor(self.dash.executor, fn, *args)


class ApiBase(Base, APIHandler):
    async def call(self, fn, *args):
        try:
            return await self.blocking(fn, *args)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except (OSError, TimeoutError) as exc:
            raise web.HTTPError(502, f"the cluster did not answer: {exc}") from None

    def body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return body


class ClustersHandler(ApiBase):
    @web.authenticated
    @authorized
    async def get(self):
        found = await self.blocking(clusters.visible_clusters)
        kernels = await self._kernels()
        out = await asyncio.gather(*(self._describe(c, kernels) for c in found))
        self.finish(json.dumps({"clusters": out}))

    async def _describe(self, cluster, kernels: dict) -> dict:
        d = cluster.public()
        d["kernel"] = next((kernels[p] for p in clusters.ancestors(cluster.owner_pid)
                            if p in kernels), None)
        try:
            status = await self.blocking(self.dash.connections.status, cluster)
        except Exception as exc:             # listed, but says why it has no numbers
            d["error"] = str(exc) or type(exc).__name__
            return d
        d["hosts"] = len(status["hosts"])
        d["engines"] = len(status["engines"])
        d["cpus"] = sum(h["resources"].get("CPU", 0) for h in status["hosts"])
        d["tasks"] = status["tasks"]
        d["actors"] = len(status.get("actors") or [])
        d["objects"] = status["objects"]
        return d

    async def _kernels(self) -> dict:
        """pid -> {"id", "name", "path"} for this server's kernels (which owns which cluster)."""
        km = self.kernel_manager
        paths = {}
        try:
            for s in await ensure_async(self.session_manager.list_sessions()):
                paths[s["kernel"]["id"]] = s.get("path")
        except Exception:
            log.debug("listing sessions failed", exc_info=True)
        out = {}
        for kid in km.list_kernel_ids():
            try:
                kernel = km.get_kernel(kid)
                pid = getattr(kernel.provisioner, "pid", None)
            except Exception:
                continue
            if pid:
                out[pid] = {"id": kid, "name": kernel.kernel_name, "path": paths.get(kid)}
        return out

    @web.authenticated
    @authorized
    async def post(self):
        num_cpus = self.body().get("num_cpus")
        text = await self.call(clusters.start_cluster, num_cpus)
        self.set_status(201)
        self.finish(json.dumps({"message": text}))


class ClusterActionHandler(ApiBase):
    @web.authenticated
    @authorized
    async def post(self, cluster_id: str, action: str):
        cluster = self.cluster_or_404(cluster_id)
        if action == "stop":
            text = await self.call(self.dash.connections.stop, cluster)
            self.finish(json.dumps({"message": text}))
            return
        body = self.body()
        delta, host_id = body.get("delta"), body.get("host_id")
        if not isinstance(delta, int) or isinstance(delta, bool) or not -64 <= delta <= 64:
            raise web.HTTPError(400, "delta must be a whole number from -64 to 64")
        if host_id is not None and not isinstance(host_id, str):
            raise web.HTTPError(400, "host_id must be a string")
        result = await self.call(self.dash.connections.scale, cluster, delta, host_id)
        self.finish(json.dumps({"result": result}, default=str))


class StaticHandler(Base):
    @web.authenticated
    @authorized
    def get(self, path: str):
        from ..widgets.base import static
        if path.startswith("widgets/") and path[8:-3] in WIDGET_MODULES and path.endswith(".js"):
            text, kind = static(WIDGET_MODULES[path[8:-3]]), "text/javascript"
        elif path == "shoal.css":
            text, kind = static("shoal.css"), "text/css"
        elif path in VIEW_MODULES:
            text, kind = static(path, folder=STATIC), "text/javascript"
        elif path in PAGE_FILES:
            with open(os.path.join(STATIC, path), encoding="utf-8") as f:
                text, kind = f.read(), PAGE_FILES[path]
        else:
            raise web.HTTPError(404)
        self.set_header("Content-Type", f"{kind}; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(text)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{base}shoal/static/shoal.css">
<link rel="stylesheet" href="{base}shoal/static/page.css">
</head><body class="shoal-page" data-view="{view}" data-cluster="{cluster}">
<nav class="shoal-nav">{nav}</nav>
<main id="shoal-main"></main>
<script type="module">
import {{ {entry} }} from "{base}shoal/static/page.js";
{entry}(document.getElementById("shoal-main"), {config});
</script>
</body></html>
"""


class IndexHandler(Base):
    @web.authenticated
    @authorized
    def get(self):
        base = self.base_url
        self.finish(PAGE.format(title="shoal dashboard", base=base, view="index", cluster="",
                                nav='<b>shoal</b> <span class="sub">dashboard</span>',
                                entry="mountIndex", config=json.dumps({"base": base})))


class ViewHandler(Base):
    @web.authenticated
    @authorized
    def get(self, cluster_id: str, view: str):
        cluster = self.cluster_or_404(cluster_id)
        base = self.base_url
        root = url_path_join(base, "shoal/cluster", cluster_id)
        links = " ".join(
            f'<a href="{escape(url_path_join(root, v))}" class="{"on" if v == view else ""}" '
            f'data-view="{v}">{v}</a>' for v in VIEWS)
        nav = (f'<a href="{escape(url_path_join(base, "shoal/"))}"><b>shoal</b></a> '
               f'<span class="sub">{escape(cluster.cluster_id)} · {escape(cluster.address)}'
               f'</span> {links}')
        module = (url_path_join(base, "shoal/static/widgets", WIDGET_MODULES[view])
                  if view in WIDGET_MODULES else url_path_join(base, "shoal/static", view + ".js"))
        config = {"base": base, "module": module, "view": view, "cluster": cluster_id,
                  "ws": url_path_join(root, view, "ws")}
        self.finish(PAGE.format(title=f"shoal {view} · {escape(cluster.cluster_id)}", base=base,
                                view=view, cluster=escape(cluster_id), nav=nav,
                                entry="mountView", config=json.dumps(config)))


class ViewSocket(WebSocketMixin, WebSocketHandler, Base):
    """One page's widget: made on open, on the cluster's shared feed; stopped on close."""

    @ws_authenticated
    async def get(self, cluster_id: str, view: str):
        authorized_ = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not authorized_:
            raise web.HTTPError(403)
        self.cluster = self.cluster_or_404(cluster_id)
        self.view = view
        await super().get(cluster_id, view)

    def open(self, cluster_id: str, view: str):     # noqa: D401 (tornado's hook)
        super().open()
        self.loop = IOLoop.current()
        self.widget = None
        self.gone = False
        self._early: list = []          # frames sent while the widget was being made
        self._start_task = asyncio.ensure_future(self._start())     # (held: tasks are weak)

    async def _start(self):
        try:
            widget = await self.blocking(self._make)
        except Exception as exc:
            log.warning("shoal dashboard: %s view of %s failed: %s", self.view,
                        self.cluster.cluster_id, exc)
            self._send(bridge.encode("error", {"message": str(exc) or type(exc).__name__}, []))
            self.close(1011)
            return
        self.widget, self.comm_id = widget, widget.model_id
        early, self._early = self._early, []
        for comm_id, frame in early:
            self._write(comm_id, frame)
        if self.gone:
            await self.blocking(stop_view, widget)

    def _make(self):
        from ..widgets.feed import feed_for
        client = self.dash.connections.client(self.cluster)
        with bridge.page_comms(self._sink):
            return make_view(self.view, self.cluster, client, feed_for(client),
                             self.dash.connections)

    def _sink(self, comm_id: str, msg_type: str, data: dict, buffers: list) -> None:
        """Any thread: queue the frame for the event loop (in order)."""
        if msg_type == "comm_open":         # the page loads the module itself, by URL
            state = {k: v for k, v in data.get("state", {}).items() if k not in ("_esm", "_css")}
            data = dict(data, state=state)
        self.loop.add_callback(self._write, comm_id, bridge.encode(msg_type, data, buffers))

    def _write(self, comm_id: str, frame: bytes) -> None:
        if self.gone:
            return
        if self.widget is None:
            self._early.append((comm_id, frame))
        elif comm_id == self.comm_id:
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        try:
            self.write_message(frame, binary=True)
        except WebSocketClosedError:
            pass

    def on_message(self, message):
        try:
            msg = bridge.decode_incoming(message)
        except ValueError as exc:            # malformed: close, log, never crash
            log.warning("shoal dashboard: closing a page socket after a bad message (%s)", exc)
            self.close(1003, "malformed message")
            return
        widget = self.widget
        if widget is not None and widget.comm is not None:
            self.dash.executor.submit(widget.comm.handle_msg, msg)

    def on_close(self):
        self.gone = True
        if self.widget is not None:
            self.dash.executor.submit(stop_view, self.widget)


def stop_view(widget) -> None:
    """Off the feed, and every comm it opened closed (ipywidgets keeps open ones forever)."""
    widget.stop()
    layout = getattr(widget, "layout", None)
    if layout is not None:
        layout.close()


def make_view(view: str, cluster, client, feed, connections):
    from ..widgets.cluster import ClusterWidget
    from ..widgets.objects import ObjectsWidget
    from ..widgets.timeline import TimelineWidget
    from .views import ActorsWidget, LogsWidget, TasksWidget
    if view == "timeline":
        return TimelineWidget(client, feed=feed)
    if view == "objects":
        return ObjectsWidget(client, feed=feed)
    if view == "tasks":
        return TasksWidget(client, feed=feed)
    if view == "actors":
        return ActorsWidget(client, feed=feed)
    if view == "logs":
        return LogsWidget(client, feed=feed, logs_dir=os.path.join(cluster.session_dir, "logs"))
    if view == "cluster":
        box = []

        def commands(content):               # the widget's buttons, for a cluster we did not start
            if content["type"] == "stop":
                connections.stop(cluster)
            else:
                box[0].scale(content.get("host_id"), int(content.get("delta", 0)))

        w = ClusterWidget(client=client, feed=feed, commands=commands, address=cluster.address,
                          kind=("embedded in a kernel or script" if cluster.kind == "embedded"
                                else "started with shoal start"))
        box.append(w)
        return w
    raise ValueError(f"no view {view!r}")


def handlers() -> list:
    views = "|".join(VIEWS)
    root = "/shoal"
    return [
        (root + "/?", IndexHandler),
        (url_path_join(root, "api/clusters") + "/?", ClustersHandler),
        (url_path_join(root, f"api/clusters/({ID})/(stop|scale)"), ClusterActionHandler),
        (url_path_join(root, f"cluster/({ID})/({views})") + "/?", ViewHandler),
        (url_path_join(root, f"cluster/({ID})/({views})/ws"), ViewSocket),
        (url_path_join(root, r"static/([A-Za-z0-9_./-]+)"), StaticHandler),
    ]


