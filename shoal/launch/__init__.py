"""Starting a cluster's processes: `LocalCluster` and `HostProcess` (the
scheduler and this host's agent), the per-host agent that starts engines and
serves the host's objects, the supervisor that restarts them, and the SSH
launcher for other hosts.  Processes are started by module name
(`python -m ...`), so this package imports neither the scheduler nor the
engine; core and the command line both start clusters through it."""
