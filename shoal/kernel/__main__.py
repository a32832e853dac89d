"""`python -m shoal.kernel -f CONNECTION_FILE`: run the shoal kernel."""
from ipykernel.kernelapp import IPKernelApp

from .kernel import ShoalKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=ShoalKernel)
