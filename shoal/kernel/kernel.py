"""ShoalKernel: ipykernel's IPython kernel with shoal's magics loaded.

It overrides only what it must:

- `__init__` loads the `shoal` extension (the magics and the output routing)
  and hands it the cluster settings: `c.ShoalKernel.address` (else
  SHOAL_ADDRESS, else an embedded local cluster) and `c.ShoalKernel.num_cpus`.
  Nothing starts until first use.  A plain `shoal.init()` in a cell (as
  Ray notebooks begin) returns the kernel's cluster once one runs, instead of
  raising "called twice"; arguments that do not fit it say how to switch.
- `do_shutdown` stops the cluster this kernel started (or disconnects from
  one it joined) on shutdown and on restart.  A kernel that is killed takes
  its embedded cluster along too: each process of the cluster watches a pipe
  from its owner.

Interrupts need no hook: SIGINT raises KeyboardInterrupt in the cell's wait,
where `%%remote` turns it into cancelling the cell's remote work (shoal's own
processes have their own process group, so the kernel's interrupt does not
reach them).
"""
from __future__ import annotations

import os

from ipykernel.ipkernel import IPythonKernel
from traitlets import Integer, Unicode

import shoal

from .. import magics


class ShoalKernel(IPythonKernel):
    implementation = "shoal"
    implementation_version = shoal.__version__
    banner = f"shoal {shoal.__version__}: %%remote runs a cell on the cluster (%cluster to see it)"

    address = Unicode(None, allow_none=True, config=True,
                      help="Address of a shoal cluster to connect to (HOST:PORT or 'auto'); "
                           "default: SHOAL_ADDRESS, else an embedded local cluster").tag(config=True)
    num_cpus = Integer(None, allow_none=True, config=True,
                       help="Engines (CPUs) of the embedded local cluster; default: one per CPU"
                       ).tag(config=True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.address and "SHOAL_ADDRESS" not in os.environ:
            os.environ["SHOAL_ADDRESS"] = self.address   # for a plain shoal.init() too
        self.shell.extension_manager.load_extension("shoal")
        control = magics.magics_of(self.shell).cluster
        control.address = self.address
        control.num_cpus = self.num_cpus
        control.shared_by = "this shoal kernel"    # a plain shoal.init() gets its cluster

    def do_shutdown(self, restart: bool):
        try:
            m = magics.magics_of(self.shell)
            if m is not None:
                m.cluster.stop()
            else:
                shoal.shutdown()
        except Exception:
            self.log.exception("stopping the shoal cluster failed")
        return super().do_shutdown(restart)
