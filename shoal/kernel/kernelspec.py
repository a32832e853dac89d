"""The kernelspec of the shoal kernel, and its installation.

    shoal kernel install [--user | --sys-prefix | --prefix P]

installs `kernels/shoal/kernel.json` (display name "Python 3 (shoal)") with
ipykernel's logos, through jupyter_client's KernelSpecManager, so it lands
where Jupyter looks: the system data dir by default, the user's with
`user=True`, or under a prefix (an environment's `sys.prefix`).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Optional

KERNEL_NAME = "shoal"
DISPLAY_NAME = "Python 3 (shoal)"


def kernel_spec(python: Optional[str] = None) -> dict:
    return {
        "argv": [python or sys.executable, "-m", "shoal.kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": True},
    }


def write_kernel_spec(path: str, python: Optional[str] = None) -> str:
    """Write the kernelspec (kernel.json and logos) into directory `path`."""
    os.makedirs(path, exist_ok=True)
    try:
        from ipykernel.kernelspec import RESOURCES
        for name in os.listdir(RESOURCES):
            if name.startswith("logo"):
                shutil.copy(os.path.join(RESOURCES, name), os.path.join(path, name))
    except (ImportError, OSError):
        pass
    with open(os.path.join(path, "kernel.json"), "w") as f:
        json.dump(kernel_spec(python), f, indent=1)
    return path


def install(user: bool = False, prefix: Optional[str] = None, name: str = KERNEL_NAME) -> str:
    """Install the kernelspec; returns the directory it was installed into."""
    from jupyter_client.kernelspec import KernelSpecManager
    with tempfile.TemporaryDirectory() as tmp:
        write_kernel_spec(os.path.join(tmp, name))
        return KernelSpecManager().install_kernel_spec(os.path.join(tmp, name), name,
                                                       user=user, prefix=prefix)
