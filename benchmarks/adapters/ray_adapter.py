import os

from .base import BaseAdapter


class Adapter(BaseAdapter):
    name = "ray"
    ray = None

    def version(self):
        import ray
        return ray.__version__

    def start(self, num_cpus):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no prompt/telemetry thread
        import ray
        self.ray = ray
        # address="local": a Ray of its own, never one already running on the machine
        # (ray.init() would join it, and measure someone else's cluster).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level="warning")

    def remote(self, fn):
        return self.ray.remote(fn).remote

    def get(self, refs):
        return self.ray.get(refs)

    def actor(self, cls):
        """`cls(*args)` starts an actor; its methods are called with `.method.remote()`."""
        return self.ray.remote(cls).remote

    def put(self, value):
        return self.ray.put(value)

    def shutdown(self):
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()
