"""multiprocessing's Pool on the cluster (as `ray.util.multiprocessing`)."""
from multiprocessing import TimeoutError     # what get() and next() raise, as multiprocessing's

from .pool import Pool, RemoteTraceback
from .results import AsyncResult, IMapIterator, MapResult

__all__ = ["Pool", "AsyncResult", "MapResult", "IMapIterator", "RemoteTraceback", "TimeoutError"]
