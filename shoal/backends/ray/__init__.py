"""shoal on a Ray cluster: `shoal.init(address="ray" | "ray:auto" | "ray:local" |
"ray:HOST:PORT" | "ray://HOST:PORT")`.

    backend.py   RayBackend: the interface of shoal.core.backend, delegating to Ray
    worker.py    what runs in Ray's worker processes: shoal's API there, cell output routing
    relay.py     the output relay (a Ray actor) and the driver's thread that drains it
    cluster_view.py  RayBackend's widgets' half: events, state queries, scaling, auto progress
    events.py    the polled task event stream (its thread: shoal-ray-events)
    state.py     reading Ray's state (GCS task events, nodes, raylet stats, autoscaler)
    views.py     mapping it to shoal's TaskEvent and cluster_info shapes (pure)

Needs Ray (`pip install 'shoal[ray]'`); this package imports it only when used.
"""
from __future__ import annotations


def connect(address: str, **init_kwargs):
    """Called by shoal.init() (through shoal.core.backend.connect)."""
    from .backend import connect as connect_ray
    return connect_ray(address, **init_kwargs)


__all__ = ["connect"]
