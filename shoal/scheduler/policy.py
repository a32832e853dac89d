"""Placement policy: pure functions of the cluster state, no I/O."""
from __future__ import annotations

from typing import Optional

EPSILON = 1e-9
# Pipelining: behind an engine's running task, one task is always queued; more
# only while the running one and every queued one are known to be short (their
# functions' measured run times), together under QUEUE_WORK seconds of work,
# and at most a cluster's queue_max (QUEUE_MAX unless SHOAL_QUEUE_MAX says; see
# SchedulerState).  A burst of tiny tasks then travels in batches (one write of
# tasks, one of reports) while no engine holds more than a few milliseconds
# that another could run.  Each batch costs its wake-ups and writes in every
# process, whatever it holds: 64 deep (the engine's report batch, the driver's
# submission batch) ran no-op bursts 1.14x faster than 16.
QUEUE_WORK = 0.002
QUEUE_MAX = 64


def shape_of(resources: dict) -> tuple:
    """A task's scheduling class: tasks of one shape queue together."""
    return tuple(sorted(resources.items()))


def fits(request: dict, available: dict) -> bool:
    for k, v in request.items():       # a plain loop: 2x faster than all() over a genexpr
        if available.get(k, 0.0) + EPSILON < v:
            return False
    return True


def choose_host(request: dict, hosts: list, has_idle_engine,
                local_bytes: dict | None = None) -> object | None:
    """The host to run a task with this resource request, or None for now.

    Candidates are hosts with the resources free and an idle engine.  Among
    them the one already holding the most bytes of the task's arguments wins
    (moving the task beats moving the data); then the one with the most free
    CPU, spreading work across hosts.
    """
    best, best_key = None, None
    for host in hosts:
        key = (local_bytes.get(host.host_id, 0) if local_bytes else 0,
               host.available.get("CPU", 0))
        # The key first: a host that cannot beat the best so far is not checked
        # further (the same choice, without a fits/idle check per host).
        if best is not None and not key > best_key:
            continue
        if fits(request, host.available) and has_idle_engine(host):
            best, best_key = host, key
    return best


def may_queue_behind(running_spec, running_blocks: bool, engine_ran_gpu: bool) -> bool:
    """Pipelining: may a task be queued on an engine behind the one it runs?
    Not behind a GPU task, nor on an engine that ran one, nor behind a task
    that waits in get (it would block and give the queued task back each
    time: a revoke storm, one per call), nor behind one with max_calls (its
    engine may be replaced when it ends)."""
    return not ("GPU" in running_spec.resources or engine_ran_gpu or running_blocks
                or running_spec.max_calls)


class QueueRoom:
    """Pipelining: may one more task be queued behind an engine's running task
    and those queued already (at most `most`)?  `running` and `queued` are
    their functions' run times (None: not known yet).  The answer is kept up
    to date as tasks are queued one by one (`add`), so filling a deep queue
    sums the queue once, not once per task."""
    __slots__ = ("count", "work", "known", "most")

    def __init__(self, running: Optional[float], queued: list, most: int = QUEUE_MAX) -> None:
        self.count = 0
        self.most = most
        self.known = running is not None
        self.work = running if self.known else 0.0
        for seconds in queued:
            self.add(seconds)

    def has_room(self) -> bool:
        """One task is always queued; more only behind known, short ones."""
        return not self.count or (self.known and self.count < self.most
                                  and self.work < QUEUE_WORK)

    def add(self, seconds: Optional[float]) -> None:
        """A task whose function takes `seconds` (None: not known) was queued."""
        self.count += 1
        if seconds is None:
            self.known = False
        else:
            self.work += seconds


def run_time(previous: Optional[float], seconds: float) -> float:
    """A function's run time estimate after one more run took `seconds`."""
    return seconds if previous is None else previous + 0.25 * (seconds - previous)


def runs_elsewhere_now(request: dict, idle_hosts: list) -> bool:
    """Pipelining: a queued task with this request is better taken back when
    an idle host could start it at once."""
    return any(fits(request, h.available) for h in idle_hosts)


def engines_to_start(host, backlog: int) -> int:
    """How many engines a busy host may start for a backlog of ready tasks:
    up to its CPUs plus one per engine blocked in get (whose CPU is lent),
    less those it has or has asked for."""
    return min(backlog, host.base_engines + len(host.blocked) - len(host.engines)
               - host.starting)


def feasible_anywhere(request: dict, hosts: list) -> bool:
    """Could some host ever run this, once it is idle?"""
    return any(fits(request, host.total) for host in hosts)


def allocate_gpus(free: dict, amount: float) -> list | None:
    """Pick GPU ids for `amount` GPUs from {gpu_id: free fraction}.

    Whole amounts take whole idle GPUs; a fraction shares one GPU, as in Ray.
    Returns None when it does not fit.  Does not modify `free`.
    """
    if amount <= 0:
        return []
    if amount < 1:
        for gpu, left in sorted(free.items()):
            if left + EPSILON >= amount:
                return [gpu]
        return None
    whole = [gpu for gpu, left in sorted(free.items()) if left + EPSILON >= 1.0]
    need = int(round(amount))
    return whole[:need] if len(whole) >= need else None


PG_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def least_loaded(candidates: list, load) -> object | None:
    """SPREAD: the candidate host with the least work on it now (ties: first)."""
    return min(candidates, key=load) if candidates else None


def place_bundles(bundles: list, strategy: str, hosts: list) -> list | None:
    """The host of each bundle of a placement group, or None if they cannot
    all be reserved now, as Ray places them:

    PACK: as few hosts as possible (one if it fits), best effort.
    STRICT_PACK: all on one host, or not at all.
    SPREAD: each on a different host where possible, best effort.
    STRICT_SPREAD: each on a different host, or not at all.
    """
    free = {id(h): dict(h.available) for h in hosts}

    def take(host, bundle) -> bool:
        if not fits(bundle, free[id(host)]):
            return False
        for k, v in bundle.items():
            free[id(host)][k] = free[id(host)].get(k, 0.0) - v
        return True

    if strategy in ("PACK", "STRICT_PACK"):
        total: dict = {}
        for b in bundles:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        for host in hosts:                      # all on one host when one can take them
            if fits(total, host.available):
                return [host] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
        placed, used = [], []
        for b in bundles:                       # else fill the hosts already used first
            host = next((h for h in used + hosts if take(h, b)), None)
            if host is None:
                return None
            if host not in used:
                used.append(host)
            placed.append(host)
        return placed
    placed = []
    for b in bundles:                           # SPREAD / STRICT_SPREAD
        fresh = [h for h in hosts if h not in placed]
        host = next((h for h in fresh if take(h, b)), None)
        if host is None and strategy == "SPREAD":
            host = next((h for h in hosts if take(h, b)), None)
        if host is None:
            return None
        placed.append(host)
    return placed


def bundles_feasible(bundles: list, strategy: str, hosts: list) -> bool:
    """Could the group ever be placed on these hosts, once they are idle?"""
    class Idle:                                  # a host with everything free
        def __init__(self, host):
            self.available = host.total
    return place_bundles(bundles, strategy, [Idle(h) for h in hosts]) is not None
