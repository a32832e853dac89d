"""`python -m shoal.engine`: run one engine (started by a host agent)."""
from .engine import main

main()
