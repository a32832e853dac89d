"""One adapter per framework; see base.Adapter for the interface."""
import importlib

# pool: multiprocessing.Pool, the floor; shoal-ray: shoal's API on its Ray backend
FRAMEWORKS = ("shoal", "shoal-ray", "ray", "dask", "ipyparallel", "pool")


def load(name):
    """Instantiate the adapter for `name` without importing the framework yet."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    return importlib.import_module(f"adapters.{name.replace('-', '_')}_adapter").Adapter()
