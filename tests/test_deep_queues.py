"""Short tasks queued deeper behind an engine's running one (scheduler/pipeline.py,
policy.QueueRoom), and their reports sent in batches (engine/finishes.py),
end to end: every task runs once, idle engines take queued work back, a task
that waits on the one before it on its engine does not wait for the batch, and
kill -9 of an engine with a deep queue loses nothing."""
import os
import signal
import threading
import time

import pytest

import shoal
from shoal.core import runtime
from shoal.scheduler import policy

from conftest import alive, cluster_pids, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("cluster")]


@shoal.remote
def mark(path, i):
    with open(path, "a") as f:           # O_APPEND: one line per run, whoever runs it
        f.write(f"{i}\n")
    return i, os.getpid()


@shoal.remote
def ident(x):
    return x


@shoal.remote
def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


@shoal.remote
def get_first(refs):
    return shoal.get(refs[0], timeout=30)


def runs(path) -> list:
    with open(path) as f:
        return [int(line) for line in f]


def learn_short():
    """Tell the scheduler `ident` is short (a few runs measure it)."""
    shoal.get([ident.remote(i) for i in range(200)], timeout=60)


def run_file(tmp_path) -> str:
    """An empty file for `mark`'s runs, once the scheduler knows `mark` is short."""
    learn_short()
    path = str(tmp_path / "runs")
    shoal.get([mark.remote(path, -1) for _ in range(100)], timeout=60)
    open(path, "w").close()
    return path


def started(ref) -> bool:
    task_id = ref.id.rpartition("/")[0]
    story = runtime.current().client.query("story", task_id=task_id)["story"]
    return any(r["to"] == "running" for r in story)


def test_a_burst_of_short_tasks_runs_each_once_on_both_engines(tmp_path):
    path = run_file(tmp_path)
    out = shoal.get([mark.remote(path, i) for i in range(3000)], timeout=120)
    assert [i for i, _ in out] == list(range(3000))
    assert sorted(runs(path)) == list(range(3000))               # none twice, none lost
    assert len({pid for _, pid in out}) == 2


def test_short_tasks_behind_a_long_one_are_run_by_the_idle_engine():
    learn_short()
    long = nap.remote(4.0)
    wait_for(lambda: started(long), what="the long task to run")   # what comes next queues
    t0 = time.monotonic()
    assert shoal.get([ident.remote(i) for i in range(200)], timeout=60) == list(range(200))
    assert time.monotonic() - t0 < 3.0                # none waited for the long one
    shoal.get(long, timeout=60)


@shoal.remote
def boxed(i):
    return [shoal.put(i)]             # the engine drops its own ref when the task returns


def test_refs_in_the_results_of_queued_tasks_outlive_their_engines_refs():
    learn_short()
    shoal.get([boxed.remote(i) for i in range(100)], timeout=60)      # measured
    boxes = shoal.get([boxed.remote(i) for i in range(1000)], timeout=120)
    assert shoal.get([box[0] for box in boxes], timeout=60) == list(range(1000))


def test_a_task_waiting_on_the_one_queued_before_it_gets_it():
    learn_short()
    # Each odd task waits (a nested ref: no dependency, so it may queue right
    # behind) on the task submitted just before it, whose report its engine
    # may be holding while it runs.
    refs, expected = [ident.remote(0)], [0]
    for i in range(1, 300):
        refs.append(get_first.remote([refs[-1]]) if i % 2 else ident.remote(i))
        expected.append(expected[-1] if i % 2 else i)
    assert shoal.get(refs, timeout=120) == expected


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_a_bad_queue_limit_is_a_clear_error_before_anything_starts(monkeypatch, value):
    from shoal.launch.launcher import LocalCluster
    monkeypatch.setenv("SHOAL_QUEUE_MAX", value)
    with pytest.raises(ValueError, match="SHOAL_QUEUE_MAX .* a whole number, 1 or more"):
        LocalCluster(num_cpus=1)


def test_kill_9_of_an_engine_with_a_deep_queue_loses_nothing(tmp_path):
    path = run_file(tmp_path)
    victim = cluster_pids(2)[-1]
    ran_before_the_kill = []

    def kill_midway():
        deadline = time.monotonic() + 60
        while os.path.getsize(path) < 3000 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        ran_before_the_kill.append(len(runs(path)))

    killer = threading.Thread(target=kill_midway)
    killer.start()
    out = shoal.get([mark.remote(path, i) for i in range(6000)], timeout=150)
    killer.join()
    assert not alive(victim) and ran_before_the_kill[0] < 6000     # killed mid-burst
    assert [i for i, _ in out] == list(range(6000))
    ran = runs(path)
    assert set(ran) == set(range(6000))                # re-runs allowed, losses not
    assert len(ran) - 6000 <= 2 * policy.QUEUE_MAX + 64   # only what the victim held


def test_runs_of_a_batched_burst_are_placed_where_they_ran():
    """Reports held in a batch arrive after their runs ended, and a queued task is
    promoted on the report of the one before it: the timeline's bars come from
    the engine's own times (ran_for, ended_ago), so each lasts its run, not zero,
    and one engine's bars follow each other."""
    from shoal.core import events
    seen = []
    sub = events.subscribe(lambda batch: seen.extend(batch.tasks))
    try:
        shoal.get([nap.remote(0.0003) for _ in range(100)], timeout=60)    # learn: short
        refs = [nap.remote(0.0003) for _ in range(300)]
        shoal.get(refs, timeout=60)
        burst = {ref.task_id() for ref in refs}
        wait_for(lambda: len({e.task_id for e in seen if e.task_id in burst
                              and e.status == "finished"}) == len(burst),
                 what="the burst's events", timeout=10)
    finally:
        sub.close()
    runs = [e for e in seen if e.task_id in burst and e.status == "finished"]
    assert sum(e.end - e.start >= 0.0003 for e in runs) >= 0.95 * len(runs)
    by_engine: dict = {}
    for e in runs:
        by_engine.setdefault(e.engine_id, []).append((e.start, e.end))
    for bars in by_engine.values():
        bars.sort()
        overlaps = sum(start < before_end - 0.001 for (_, before_end), (start, _)
                       in zip(bars, bars[1:]))
        assert overlaps <= 0.05 * len(bars), bars[:20]
