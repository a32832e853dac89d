"""Processes that do the work: engines, the per-host agent that runs them, and
launchers that start a cluster's processes."""
