"""The scheduler: cluster state (sans-IO) in state.py, placement policy in
policy.py, and the asyncio shell that feeds them in server.py."""
