"""Level 2: the object store: zero copy, Arrow data, reference counts, spilling."""
import errno
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

import shoal
from shoal.core import runtime
from shoal.exceptions import ObjectStoreFullError
from shoal.util.state import list_objects, memory_summary

from conftest import wait_for

MB = 1 << 20


def store():
    return runtime.current().client.store


def in_store_mapping(address: int) -> bool:
    """Is this address inside a memory map of one of the store's files?"""
    roots = (store().store_dir, store().spill_dir)
    with open("/proc/self/maps") as f:
        for line in f:
            if any(r in line for r in roots):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo <= address < hi:
                    return True
    return False


def _bytes_in(directory: str) -> int:
    total = 0
    for entry in os.scandir(directory):
        try:
            total += entry.stat().st_size
        except FileNotFoundError:          # freed while we looked
            pass
    return total


def store_files() -> list:
    return store().object_files()


@pytest.fixture
def small_store(fresh_cluster):
    fresh_cluster(object_store_memory=64 * MB)


@pytest.mark.usefixtures("cluster")
class TestSharedMemory:
    def test_arrow_tables_and_batches_are_zero_copy(self):
        table = pa.table({"x": np.arange(2_000_000), "y": np.random.rand(2_000_000)})
        out = shoal.get(shoal.put(table))
        assert out.equals(table)
        assert in_store_mapping(out.column("y").chunk(0).buffers()[1].address)
        batch = table.to_batches()[0]
        got = shoal.get(shoal.put(batch))
        assert got.equals(batch) and in_store_mapping(got.column(0).buffers()[1].address)

        @shoal.remote
        def total(t):
            import pyarrow.compute as pc
            return float(pc.sum(t.column("y")).as_py())

        ref = shoal.put(table)
        expect = float(pa.compute.sum(table.column("y")).as_py())
        assert shoal.get([total.remote(ref), total.remote(ref)]) == pytest.approx([expect] * 2)

    def test_pandas_frames_round_trip(self):
        pd = pytest.importorskip("pandas")
        df = pd.DataFrame({"a": np.arange(100_000), "b": np.random.rand(100_000)})
        out = shoal.get(shoal.put(df))
        assert out.equals(df)

    def test_a_task_returning_a_large_array_is_read_in_place(self):
        @shoal.remote
        def make(n):
            return np.ones(n)

        arr = shoal.get(make.remote(5_000_000))
        assert arr.sum() == 5_000_000 and not arr.flags.writeable
        assert in_store_mapping(arr.ctypes.data)

    def test_small_values_stay_inline(self):
        ref = shoal.put(list(range(100)))
        row = next(r for r in list_objects() if r["object_id"] == ref.id)
        assert row["where"] == "inline" and row["type"] == "list"


@pytest.mark.usefixtures("cluster")
class TestReferenceCounting:
    def test_freed_when_the_last_ref_goes(self):
        ref = shoal.put(np.zeros(2 * MB))
        oid = ref.id
        assert any(r["object_id"] == oid for r in list_objects())
        del ref
        wait_for(lambda: not any(r["object_id"] == oid for r in list_objects()),
                 what="the object to be freed")
        wait_for(lambda: not any(oid.replace("/", "_") in f for f in store_files()),
                 what="its file to go")

    def test_nested_refs_keep_objects_alive(self):
        inner = shoal.put(np.arange(MB // 8))
        outer = shoal.put({"inner": inner})
        inner_id = inner.id
        del inner
        # The release goes out ahead of the listing query, so a wrong free shows here.
        assert any(r["object_id"] == inner_id for r in list_objects())
        assert shoal.get(shoal.get(outer)["inner"])[5] == 5
        del outer
        wait_for(lambda: not any(r["object_id"] == inner_id for r in list_objects()),
                 what="the inner object to be freed with its container")

    def test_pending_tasks_and_actors_keep_objects_alive(self):
        @shoal.remote
        def slow_sum(a):
            time.sleep(0.5)
            return float(a.sum())

        @shoal.remote
        class Keeper:
            def keep(self, refs):
                self.ref = refs[0]

            def read(self):
                return float(shoal.get(self.ref).sum())

        ref = shoal.put(np.ones(MB // 8))
        pending = slow_sum.remote(ref)
        keeper = Keeper.remote()
        shoal.get(keeper.keep.remote([ref]))
        del ref
        assert shoal.get(pending) == MB // 8
        assert shoal.get(keeper.read.remote()) == MB // 8

    def test_listing_says_who_holds_what(self):
        @shoal.remote
        def make():
            return np.zeros(MB)

        ref = make.remote()
        shoal.get(ref)
        row = next(r for r in list_objects() if r["object_id"] == ref.id)
        assert row["size"] > MB and row["type"] == "numpy.ndarray"
        assert row["where"] == "shared memory" and row["hosts"]
        assert row["reference_count"] == 1 and row["held_by"][0].startswith("driver pid")
        assert row["created_by"].startswith("task make")
        [host] = memory_summary()
        assert host["used"] >= row["size"] and host["limit"] > 0


class TestSpilling:
    def test_spill_under_a_small_limit_and_read_back(self, small_store):
        arrays = [np.full(16 * MB // 8, i, dtype=np.float64) for i in range(8)]   # 128 MB
        refs = [shoal.put(a) for a in arrays]
        [host] = memory_summary()
        assert host["used"] <= host["limit"] and host["spilled"] >= 60 * MB
        spilled = [r for r in list_objects() if r["spilled"]]
        assert spilled and all(r["where"] == "spilled" for r in spilled)
        assert [float(shoal.get(r)[0]) for r in refs] == [float(i) for i in range(8)]

        @shoal.remote
        def first(a):
            return float(a[0])

        assert shoal.get([first.remote(r) for r in refs]) == [float(i) for i in range(8)]
        spill_dir = store().spill_dir
        assert os.listdir(spill_dir)
        del refs
        wait_for(lambda: not os.listdir(spill_dir), what="spill files of freed objects to go")

    def test_an_object_larger_than_the_store_goes_to_disk(self, small_store):
        big = np.arange(100 * MB // 8, dtype=np.float64)
        ref = shoal.put(big)
        assert shoal.get(ref)[-1] == big[-1]
        assert next(r for r in list_objects() if r["object_id"] == ref.id)["spilled"]

    def test_store_full_only_when_nothing_can_spill(self, small_store, monkeypatch):
        import shoal.store.shm as shm

        def no_space(*args):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(shm, "_write_file", no_space)
        with pytest.raises(ObjectStoreFullError, match=r"of 104,8\d\d,\d+ bytes.*67,108,864"):
            shoal.put(np.zeros(100 * MB // 8 + 100))

    def test_putting_and_dropping_100mb_fifty_times_stays_within_the_limit(self, fresh_cluster):
        fresh_cluster(object_store_memory=300 * MB)
        limit = memory_summary()[0]["limit"]
        peak = 0
        for i in range(50):
            ref = shoal.put(np.full(100 * MB // 8, i, dtype=np.float64))
            del ref
            peak = max(peak, _bytes_in(store().store_dir))
        assert peak <= limit * 1.1

    def test_shutdown_removes_store_and_spill_files(self, small_store):
        refs = [shoal.put(np.zeros(16 * MB // 8)) for _ in range(6)]
        dirs = (store().store_dir, store().spill_dir)
        # The scheduler decides to spill once it hears of the puts; the agent moves the files.
        wait_for(lambda: os.listdir(dirs[1]), what="objects over the limit to be spilled")
        shoal.shutdown()
        assert not any(os.path.exists(d) for d in dirs)
        del refs
