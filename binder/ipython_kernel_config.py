# Installed by binder/postBuild into {sys.prefix}/etc/ipython/.
#
# A Binder pod may use 1-2 CPUs (a CFS quota) on a node that has many more,
# and os.cpu_count() reports the node's.  One engine per *node* CPU would
# crowd a 2 GB pod with idle processes, so the shoal kernel's cluster gets one
# engine per CPU the pod may use.  (A cluster that shoal.init() starts in a
# notebook, rather than the kernel, does not read this setting.)
import os


def cpu_quota():
    """Whole CPUs this container's cgroup allows, or None without a quota."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:                   # cgroup v2
            quota, period = f.read().split()
    except (OSError, ValueError):
        try:                                                          # cgroup v1
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
                quota = f.read().strip()
            with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                period = f.read().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    return max(1, int(quota) // int(period))


cpus = len(os.sched_getaffinity(0))
c.ShoalKernel.num_cpus = min(cpus, cpu_quota() or cpus)  # noqa: F821 (IPython's config object)
