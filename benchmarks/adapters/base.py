"""The primitives every framework adapter implements. Workloads use nothing else.

Adapters import their framework lazily, in start(), so the `start` workload can
time the import too. A ref is whatever the framework hands back (ObjectRef,
Future, AsyncResult...); workloads only pass refs back into the same adapter.
"""


class BaseAdapter:
    name = "?"

    def version(self) -> str:
        """Framework version; importing here is fine (used by the runner's probe)."""
        raise NotImplementedError

    def start(self, num_cpus: int) -> None:
        """Start a local cluster with `num_cpus` single-threaded workers and connect to it."""
        raise NotImplementedError

    def remote(self, fn):
        """Wrap a module-level function; calling the wrapper submits one task and returns a ref.
        Arguments may be refs from this adapter (submit or put): the function gets their values."""
        raise NotImplementedError

    def get(self, refs):
        """Block until done; a ref gives its value, a list of refs gives a list of values."""
        raise NotImplementedError

    def put(self, value):
        """Store `value` with the framework (object store or closest equivalent); return a ref."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop everything start() created. Must be safe to call twice or without start()."""
        raise NotImplementedError
