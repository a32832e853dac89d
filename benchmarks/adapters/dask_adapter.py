from .base import BaseAdapter


class Adapter(BaseAdapter):
    name = "dask"
    client = cluster = None

    def version(self):
        import distributed
        return distributed.__version__

    def start(self, num_cpus):
        from distributed import Client, LocalCluster
        # One single-threaded worker process per CPU: the same shape as Ray's worker pool.
        self.cluster = LocalCluster(n_workers=num_cpus, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.client = Client(self.cluster)

    def remote(self, fn):
        submit = self.client.submit
        # pure=False: Dask would otherwise dedupe identical calls (same fn + args) into one task.
        return lambda *args: submit(fn, *args, pure=False)

    def get(self, refs):
        return self.client.gather(refs)

    def put(self, value):
        # scatter = move data to a worker and get a Future; hash=False because put never dedupes
        # (hashing a 200 MB array would also be timed).
        return self.client.scatter(value, hash=False)

    def shutdown(self):
        if self.client is not None:
            self.client.close()
            self.cluster.close()
            self.client = self.cluster = None
