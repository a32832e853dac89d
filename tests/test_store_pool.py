"""Level 1-2: recycled store files: freed pages serve the next put, never while mapped."""
import gc
import os

import numpy as np
import pytest

import shoal
from shoal.core import runtime
from shoal.protocol.serialization import serialize
from shoal.store.pool import RECYCLE_MIN, FilePool
from shoal.store.shm import HostStore
from shoal.util.state import list_objects

from conftest import wait_for

MB = 1 << 20


@pytest.fixture
def store(tmp_path):
    (tmp_path / "shm").mkdir()
    (tmp_path / "spill").mkdir()
    return HostStore(str(tmp_path / "shm"), str(tmp_path / "spill"), limit=64 * MB)


def open_files() -> set:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


def ino(store, oid):
    return os.stat(os.path.join(store.store_dir, oid)).st_ino


class TestFilePool:
    def test_a_freed_file_is_reused_by_the_next_write_of_a_similar_size(self, store):
        store.write("a", serialize(np.ones(2 * MB // 8)))
        first = ino(store, "a")
        store.delete("a")
        assert not os.path.exists(os.path.join(store.store_dir, "a"))
        assert store.pool.held() > 2 * MB
        store.write("b", serialize(np.full(2 * MB // 8 - 1000, 7.0)))
        assert ino(store, "b") == first and store.pool.held() == 0
        b = store.read("b")
        assert b.shape == (2 * MB // 8 - 1000,) and (b == 7.0).all()

    def test_files_too_big_or_too_small_for_the_value_are_left_in_the_pool(self, store):
        store.write("a", serialize(np.ones(8 * MB // 8)))
        store.delete("a")
        store.write("small", serialize(np.ones(2 * MB // 8)))   # 8 MB file: too much slack
        store.write("big", serialize(np.ones(9 * MB // 8)))     # does not fit in 8 MB
        assert store.pool.held() > 8 * MB
        assert np.asarray(store.read("big")).sum() == 9 * MB // 8

    def test_small_files_are_unlinked_not_pooled(self, store):
        store.write("a", serialize(np.ones(RECYCLE_MIN // 16)))
        store.delete("a")
        assert store.pool.held() == 0

    def test_the_pool_stays_within_its_capacity(self, store):
        for i in range(10):                                 # 10 x 4 MB, capacity 16 MB
            store.write(f"o{i}", serialize(np.ones(4 * MB // 8)))
        for i in range(10):
            store.delete(f"o{i}")
        assert 0 < store.pool.held() <= store.pool.capacity

    def test_a_mapped_file_is_never_recycled(self, store):
        store.write("a", serialize(np.arange(2 * MB // 8, dtype=np.float64)))
        view = store.read("a")
        store.delete("a")                           # a reader maps it: unlinked, not pooled
        assert store.pool.held() == 0
        store.write("b", serialize(np.zeros(2 * MB // 8)))
        assert view[12345] == 12345.0

    def test_two_reads_share_one_mapping_that_goes_with_the_last_view(self, store):
        store.write("a", serialize(np.arange(2 * MB // 8, dtype=np.float64)))
        x, y = store.read("a"), store.read("a")
        assert np.shares_memory(x, y)
        path = os.path.join(store.store_dir, "a")
        assert path in open_files()
        del x, y
        gc.collect()
        assert path not in open_files() and not store._maps
        store.delete("a")
        assert store.pool.held() > 2 * MB           # nobody maps it now

    def test_a_reader_that_lost_the_race_with_recycling_sees_the_object_gone(self, store):
        pool = FilePool(store.store_dir, 64 * MB)
        store.write("a", serialize(np.ones(2 * MB // 8)))
        fd = os.open(os.path.join(store.store_dir, "a"), os.O_RDONLY)   # opened, not pinned yet
        try:
            pool.discard(os.path.join(store.store_dir, "a"))
            from shoal.store.pool import pin
            assert not pin(fd, os.path.join(store.store_dir, "a"))
        finally:
            os.close(fd)
        with pytest.raises(FileNotFoundError):
            store.read("a")

    def test_a_full_tmpfs_drains_the_pool_before_spilling(self, store, monkeypatch):
        import errno
        import shoal.store.shm as shm
        store.write("a", serialize(np.ones(4 * MB // 8)))
        store.delete("a")
        real, calls = shm._write_file, []

        def full_until_drained(path, value, pool=None):
            calls.append(path)
            if store.pool.held():
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, value, pool)

        monkeypatch.setattr(shm, "_write_file", full_until_drained)
        assert store.write("b", serialize(np.ones(3 * MB // 8))) is False   # not spilled
        assert len(calls) == 2 and store.pool.held() == 0


@pytest.mark.usefixtures("cluster")
class TestInTheCluster:
    def test_a_view_outliving_its_ref_survives_the_next_puts(self):
        view = shoal.get(shoal.put(np.arange(4 * MB // 8, dtype=np.float64)))
        wait_for(lambda: len(list_objects()) == 0, what="the object to be freed")
        refs = [shoal.put(np.zeros(4 * MB // 8)) for _ in range(3)]
        assert view[-1] == 4 * MB // 8 - 1 and view[1000] == 1000.0
        del refs

    def test_two_gets_of_one_object_share_memory(self):
        ref = shoal.put(np.arange(2 * MB // 8))
        assert np.shares_memory(shoal.get(ref), shoal.get(ref))

    def test_puts_reuse_the_pages_of_freed_objects(self):
        store = runtime.current().client.store
        for i in range(5):
            ref = shoal.put(np.full(8 * MB // 8, i, dtype=np.float64))
            assert shoal.get(ref)[0] == i
            del ref
        wait_for(lambda: store.pool.held() >= 8 * MB, what="a freed file in the pool")
        ref = shoal.put(np.full(8 * MB // 8, 9, dtype=np.float64))
        assert shoal.get(ref)[-1] == 9


def test_claims_from_a_stale_listing_skip_what_others_took_and_find_what_they_freed(tmp_path):
    """Two processes' pools on one directory: each claims from its last listing,
    and lists again only when nothing in it fits."""
    (tmp_path / ".free").mkdir()
    mine, theirs = FilePool(str(tmp_path), 1 << 40), FilePool(str(tmp_path), 1 << 40)

    def free(size, token):
        path = tmp_path / f"obj-{token}"
        path.write_bytes(b"\0" * size)
        theirs.discard(str(path))

    for i in range(4):
        free(2 * MB, i)
    assert mine.claim(2 * MB, str(tmp_path / "c0"))          # lists all four, takes one
    assert theirs.claim(2 * MB, str(tmp_path / "t0"))
    assert theirs.claim(2 * MB, str(tmp_path / "t1"))
    assert mine.claim(2 * MB, str(tmp_path / "c1"))          # two stale entries skipped
    assert not mine.claim(2 * MB, str(tmp_path / "c2"))      # none left, even after a relist
    free(3 * MB, "late")                                     # freed after my listing
    assert mine.claim(2 * MB, str(tmp_path / "c3"))
    assert os.path.getsize(tmp_path / "c3") == 2 * MB
    assert not os.listdir(tmp_path / ".free")


def test_frees_list_the_pool_only_when_their_count_says_it_is_full(tmp_path, monkeypatch):
    """The freeing process counts what it added and lists again when that count
    reaches the capacity (others' claims may have made room) or every RELIST_EVERY
    frees, not on every free; the pool never holds more than its capacity."""
    from shoal.store import pool as pool_module
    agent, driver = FilePool(str(tmp_path), 8 * MB), FilePool(str(tmp_path), 8 * MB)
    listings = []
    real_entries = FilePool._entries
    monkeypatch.setattr(FilePool, "_entries", lambda self: listings.append(self) or real_entries(self))

    def free(token, size=2 * MB):
        path = tmp_path / f"obj-{token}"
        with open(path, "wb") as f:
            f.truncate(size)
        agent.discard(str(path))
        return path

    for i in range(4):                       # 8 MB: full, by the count
        free(i)
    assert len(listings) == 1
    assert not os.path.exists(free("over"))          # no room: unlinked, the count relisted
    assert len(listings) == 2 and agent.held() == 8 * MB
    for i in range(3):                              # another process takes three
        assert driver.claim(2 * MB, str(tmp_path / f"taken{i}"))
    listings.clear()
    for i in range(3):                              # the count said full: the first free lists
        free(f"again{i}")
    assert len([p for p in listings if p is agent]) == 1
    assert agent.held() == 8 * MB

    listings.clear()
    monkeypatch.setattr(pool_module, "RELIST_EVERY", 4)
    big = FilePool(str(tmp_path / "big"), 1 << 40)
    (tmp_path / "big").mkdir()
    for i in range(12):
        path = tmp_path / "big" / f"obj-{i}"
        with open(path, "wb") as f:
            f.truncate(MB)
        big.discard(str(path))
    assert len([p for p in listings if p is big]) == 3     # the first free, then after every 4 without one
