"""shoal's Jupyter server extension: the cluster dashboard at `<base_url>shoal/`.

Installing shoal enables it (jupyter-config/jupyter_server_config.d/shoal.json
goes to etc/jupyter/); `jupyter server extension list` shows it.  It serves,
under the server's own URL and authentication, full-page live views of every
shoal cluster the server's user can see (handlers.py), and the JSON API the
JupyterLab sidebar uses.  Each page runs the notebook widget of its view
(timeline, object store, cluster) or a dashboard view of the same kind (tasks,
actors, logs) on the cluster's shared event feed, talking to the page over the
server's websocket (bridge.py).

Lifecycle: the server loads the extension at start; `stop_extension`, at the
server's shutdown, stops every page's widget feed, closes the connections to
the clusters and joins the worker threads.  Clusters themselves are never
stopped by the server going away.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from jupyter_server.extension.application import ExtensionApp

from . import bridge
from .clusters import Connections

WORKERS = 4


class Dashboard:
    """What the handlers share: the cluster connections and the worker threads."""

    def __init__(self) -> None:
        self.connections = Connections()
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="shoal-dashboard")

    def close(self) -> None:
        from ..widgets.feed import close_all
        close_all()
        self.connections.close()
        self.executor.shutdown(wait=True, cancel_futures=True)


class DashboardApp(ExtensionApp):
    name = "shoal.dashboard"
    load_other_extensions = True
    dashboard: Dashboard | None = None

    def initialize_settings(self) -> None:
        bridge.install()
        self.dashboard = Dashboard()
        self.settings["shoal_dashboard"] = self.dashboard

    def initialize_handlers(self) -> None:
        from .handlers import handlers
        self.handlers.extend(handlers())

    async def stop_extension(self) -> None:
        if self.dashboard is not None:
            self.dashboard.close()
            self.dashboard = None


def _jupyter_server_extension_points() -> list:
    return [{"module": "shoal.dashboard", "app": DashboardApp}]

