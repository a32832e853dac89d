"""One adapter per framework; see base.Adapter for the interface."""
import importlib

FRAMEWORKS = ("shoal", "ray", "dask", "ipyparallel", "pool")   # pool: multiprocessing.Pool, the floor


def load(name):
    """Instantiate the adapter for `name` without importing the framework yet."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    return importlib.import_module(f"adapters.{name}_adapter").Adapter()
