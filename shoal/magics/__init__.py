"""shoal's IPython extension: `%load_ext shoal` in any IPython.

    %%remote [options]      run the cell on the cluster as one task
    %remote [options] STMT  the same for one statement
    %autoremote on|off      run every following cell with %%remote
    %cluster [start|stop|scale|connect]

Loading registers the magics, a pre_run_cell hook that routes the output
of the cluster's tasks to the cell that launched them (in a Jupyter kernel,
on iopub with that cell's parent header), and a post_run_cell hook that
cancels an interrupted cell's tasks.  Unloading undoes all of it and
leaves the cluster running.  The machinery lives in small modules beside
this one: options (parsing), analysis (what a cell reads and writes), cells
(ship, submit, wait, bind), runner (the engine side), output (routing),
errors (remote tracebacks), background (--bg), cluster (%cluster),
autoremote.  Rich output on engines is shoal.engine.display.

The magics call the public API, taken from shoal.core.api (they sit below
the `shoal` facade, which loads them); the few internals they use beyond it
are listed, each with its reason, in tests/test_layers.py.
"""
from __future__ import annotations


def load_ipython_extension(shell) -> None:
    if magics_of(shell) is not None:
        return
    from .magics import ShoalMagics
    magics = ShoalMagics(shell)
    shell.register_magics(magics)
    shell.events.register("pre_run_cell", magics.pre_run_cell)
    shell.events.register("post_run_cell", magics.post_run_cell)


def unload_ipython_extension(shell) -> None:
    magics = magics_of(shell)
    if magics is None:
        return
    from ..core import backend
    for event, callback in (("pre_run_cell", magics.pre_run_cell),
                            ("post_run_cell", magics.post_run_cell)):
        try:
            shell.events.unregister(event, callback)
        except ValueError:
            pass
    magics.autoremote_transformer.disable()
    backend.current().unroute_output(magics.router)
    for kind, names in (("line", ("remote", "autoremote", "cluster", "timeline", "objects")),
                        ("cell", ("remote",))):
        table = shell.magics_manager.magics[kind]
        for name in names:
            table.pop(name, None)
    shell.magics_manager.registry.pop(type(magics).__name__, None)


def magics_of(shell):
    """The ShoalMagics registered on `shell`, or None."""
    return shell.magics_manager.registry.get("ShoalMagics")


__all__ = ["load_ipython_extension", "unload_ipython_extension", "magics_of"]
