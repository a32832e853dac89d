"""The `shoal` Jupyter kernel ("Python 3 (shoal)").

`python -m shoal.kernel -f CONNECTION_FILE` runs it; `shoal kernel install`
(or `install()` here) installs its kernelspec.  The kernel class lives in
`shoal.kernel.kernel` (importing it imports ipykernel).
"""
from .kernelspec import KERNEL_NAME, install, write_kernel_spec

__all__ = ["KERNEL_NAME", "install", "write_kernel_spec"]
