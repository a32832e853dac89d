"""`python -m shoal.scheduler`: run a scheduler.  Its configuration, key
included, arrives as one JSON line on stdin, never on the command line."""
from __future__ import annotations

import asyncio
import gc
import os
import socket

from ..session import read_config_from_stdin, setup_process_logging
from . import policy
from .server import SchedulerServer
from .state import SchedulerState

# The collector's first generation is collected every GC_YOUNG allocations
# (Python's default: 700).  A burst of tasks keeps thousands alive in the
# scheduler, each a dozen tracked objects, and every young collection walks
# those that are new since the last one: at the default that was a quarter of
# the scheduler's CPU per task (6.5 us of 26, 35,000 no-op tasks).  Collected
# every 20,000 instead, the collector's total time fell from ~250 ms to ~90
# for those tasks (pauses of a few ms, shorter than the full collections
# they replace), and the modules and objects made at start-up are frozen out
# of every collection (gc.freeze).
GC_YOUNG, GC_OLDER, GC_OLDEST = 20_000, 20, 20


def main() -> None:
    config = read_config_from_stdin()
    setup_process_logging(config["session_dir"], "scheduler")
    socks = [socket.socket(fileno=fd) for fd in config["listen_fds"]]
    state = SchedulerState(config["cluster_id"], config["session_dir"],
                           heartbeat_timeout=config.get("heartbeat_timeout") or 6.0,
                           queue_max=config.get("queue_max") or policy.QUEUE_MAX)
    server = SchedulerServer(state, bytes.fromhex(config["key"]), socks,
                             (config.get("tls_cert"), config.get("tls_key")))
    gc.freeze()            # (no collection first: it took ~5 ms of start-up to free ~15 objects)
    gc.set_threshold(GC_YOUNG, GC_OLDER, GC_OLDEST)
    profile_dir = os.environ.get("SHOAL_PROFILE_DIR")     # developer aid: profile the scheduler
    if profile_dir:
        import cProfile
        cProfile.runctx("asyncio.run(server.run(owner_fd=config.get('owner_fd')))", globals(),
                        locals(), os.path.join(profile_dir, f"scheduler-{os.getpid()}.prof"))
    else:
        asyncio.run(server.run(owner_fd=config.get("owner_fd")))


if __name__ == "__main__":
    main()
