import itertools
import logging

from .base import BaseAdapter


class Pushed:
    """Ref for put(): a variable pushed into one engine's namespace."""

    def __init__(self, name, engine):
        self.name, self.engine = name, engine


class Adapter(BaseAdapter):
    name = "ipyparallel"
    cluster = client = None
    _names = itertools.count()

    def version(self):
        import ipyparallel
        return ipyparallel.__version__

    def start(self, num_cpus):
        import ipyparallel as ipp
        self.AsyncResult = ipp.AsyncResult
        self.cluster = ipp.Cluster(n=num_cpus, log_level=logging.WARNING)
        self.client = self.cluster.start_and_connect_sync()  # waits for all n engines
        # Load-balanced view = task semantics (any free engine runs the next task), like Ray.
        self.view = self.client.load_balanced_view()

    def remote(self, fn):
        def submit(*args):
            return self.view.apply_async(fn, *map(self._value, args))
        return submit

    def _value(self, arg):
        # ipyparallel has no task-to-task data flow: a ref argument is fetched by the client
        # and sent again with the task (values travel via the driver).
        return self.get(arg) if isinstance(arg, (self.AsyncResult, Pushed)) else arg

    def get(self, refs):
        if isinstance(refs, list):
            return [self.get(r) for r in refs]
        if isinstance(refs, Pushed):
            return self.client[refs.engine].pull(refs.name, block=True)
        return refs.get()

    def put(self, value):
        # No object store: the closest equivalent is pushing into an engine's namespace.
        name = f"_shoal_bench_put_{next(self._names)}"
        self.client[0].push({name: value}, block=True)
        return Pushed(name, 0)

    def shutdown(self):
        if self.cluster is not None:
            if self.client is not None:
                self.client.close()
            self.cluster.stop_cluster_sync()
            self.cluster = self.client = None
