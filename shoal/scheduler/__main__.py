"""`python -m shoal.scheduler`: run a scheduler.  Its configuration, key
included, arrives as one JSON line on stdin, never on the command line."""
from __future__ import annotations

import asyncio
import json
import socket
import sys

from ..session import read_config_from_stdin, setup_process_logging
from .server import SchedulerServer
from .state import SchedulerState


def main() -> None:
    config = read_config_from_stdin()
    setup_process_logging(config["session_dir"], "scheduler")
    sock = socket.socket(fileno=config["listen_fd"])
    state = SchedulerState(config["cluster_id"], config["session_dir"])
    server = SchedulerServer(state, bytes.fromhex(config["key"]), sock)
    asyncio.run(server.run(owner_fd=config.get("owner_fd")))


if __name__ == "__main__":
    main()
