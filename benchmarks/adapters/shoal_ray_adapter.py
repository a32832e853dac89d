"""shoal's API on its Ray backend: `shoal.init(address="ray:local")`, then the same calls as
the shoal adapter. Beside the `ray` column it shows what shoal's layer adds on Ray; beside
the `shoal` column, what choosing the Ray backend costs or gains on one machine.

Runs in the peers' interpreter (it has Ray) with the repo on PYTHONPATH (run.py does both).
"ray:local" always starts a Ray of its own, never joins one already running on the machine.
"""
import os

from .shoal_adapter import ShoalCalls


class Adapter(ShoalCalls):
    name = "shoal-ray"

    def version(self):
        import ray
        import shoal
        return f"shoal {getattr(shoal, '__version__', '?')} on ray {ray.__version__}"

    def start(self, num_cpus):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as the ray adapter: no telemetry
        import shoal
        self.shoal = shoal
        # The Ray-only arguments are the ray adapter's, so both start the same Ray.
        shoal.init(address="ray:local", num_cpus=num_cpus, include_dashboard=False,
                   logging_level="warning")

    def shutdown(self):
        if self.shoal is not None:
            self.shoal.shutdown()
            self.shoal = None
