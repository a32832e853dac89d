"""A host's object store: one file per object in shared memory, spilled to disk.

A producer writes the packed value once (to a temporary name, then renames it,
so a reader never sees half an object); every process on the host maps the
file read-only and deserializes in place, so numpy and Arrow buffers are views
of the shared pages, not copies.  Unlinking a file that readers still map is
safe: the pages live until the last map goes away.

Spilling moves a file from shared memory to the host's spill directory on
disk; readers look in both places, so a spilled object is read back (from the
page cache, still by mmap) without anyone asking for it.  What to spill and
when is the scheduler's decision (it sees every object's size and last use);
this module only does the file work.  An object that does not fit in shared
memory at all is written straight to the spill directory.

Freed files are recycled rather than unlinked when nobody maps them (pool.py):
writing into existing pages runs at memory speed, a fresh file at page-fault
speed.  A process maps each object once; later gets reuse the mapping, so two
gets of one object share memory, and the mapping goes with the last view.
"""
from __future__ import annotations

import errno
import mmap
import os
import shutil
import tempfile
import threading
import weakref
from typing import Optional

from ..exceptions import ObjectStoreFullError
from ..protocol.serialization import Serialized, deserialize
from .pool import POOL_SHARE, FilePool, pin

DEFAULT_SHARE = 0.3          # of physical memory, as Ray's default object store


def default_root() -> str:
    """/dev/shm when it is usable (true shared memory), else the temp dir."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


def default_limit(root: Optional[str] = None) -> int:
    """30% of RAM, but no more than the shared-memory filesystem can hold."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 << 30
    st = os.statvfs(root or default_root())
    return int(min(ram * DEFAULT_SHARE, st.f_frsize * st.f_blocks * 0.9))


def store_paths(cluster_id: str, host_id: str, root: Optional[str] = None) -> tuple[str, str]:
    """(shared-memory dir, spill dir) of a host's store."""
    name = f"shoal-{cluster_id}-{host_id}"
    return (os.path.join(root or default_root(), name),
            os.path.join(tempfile.gettempdir(), f"{name}-spill"))


class HostStore:
    """The files of one host's store, as seen by any process on that host."""

    def __init__(self, store_dir: str, spill_dir: str, limit: int) -> None:
        self.store_dir = store_dir
        self.spill_dir = spill_dir
        self.limit = limit
        self.pool = FilePool(store_dir, limit // POOL_SHARE)
        self._maps: dict[str, weakref.ref] = {}      # object id -> this process's live mapping
        self._maps_lock = threading.RLock()   # a finalizer may run inside _map

    @classmethod
    def create(cls, cluster_id: str, host_id: str, limit: Optional[int] = None) -> "HostStore":
        store_dir, spill_dir = store_paths(cluster_id, host_id)
        for path in (store_dir, spill_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        return cls(store_dir, spill_dir, limit or default_limit())

    def _path(self, object_id: str, spilled: bool = False) -> str:
        return os.path.join(self.spill_dir if spilled else self.store_dir,
                            object_id.replace("/", "_"))

    def object_files(self) -> list[str]:
        """Names of the objects' files in shared memory and on disk (not the pool)."""
        return [name for d in (self.store_dir, self.spill_dir) if os.path.isdir(d)
                for name in os.listdir(d) if not name.startswith(".")]

    def path_for(self, object_id: str) -> str:
        """Where a new object goes (in shared memory)."""
        return self._path(object_id)

    def existing_path(self, object_id: str) -> Optional[str]:
        """Where an object's file is now, in memory or on disk; None if nowhere."""
        for spilled in (False, True):
            path = self._path(object_id, spilled)
            if os.path.exists(path):
                return path
        return None

    def write(self, object_id: str, value: Serialized) -> bool:
        """Write a value; returns True if it had to go to disk (spilled)."""
        if value.size <= self.limit:
            for _ in range(2):
                try:
                    _write_file(self._path(object_id), value, self.pool)
                    return False
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                        raise
                if not self.pool.drain():       # free pages were in the way: retry once
                    break
        try:
            os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
            _write_file(self._path(object_id, spilled=True), value)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise ObjectStoreFullError(
                f"cannot store object {object_id} of {value.size:,} bytes: the shared-memory "
                f"store ({self.limit:,} bytes) cannot hold it and the spill directory "
                f"{self.spill_dir} is full too") from None
        return True

    def read(self, object_id: str):
        """Deserialize an object in place (zero-copy for out-of-band buffers)."""
        return deserialize(self._map(object_id))

    def _map(self, object_id: str) -> mmap.mmap:
        """This process's mapping of an object, made on first use.  The file
        stays open (and pinned against recycling) while the mapping lives."""
        with self._maps_lock:
            ref = self._maps.get(object_id)
            m = ref() if ref is not None else None
            if m is not None:
                return m
            for spilled in (False, True):
                path = self._path(object_id, spilled)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    if not pin(fd, path):
                        os.close(fd)
                        continue
                    m = mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_READ)
                except BaseException:
                    os.close(fd)
                    raise
                self._maps[object_id] = weakref.ref(m)
                weakref.finalize(m, self._unmapped, object_id, fd)
                return m
        raise FileNotFoundError(object_id)

    def _unmapped(self, object_id: str, fd: int) -> None:
        os.close(fd)                    # releases the pin
        with self._maps_lock:
            ref = self._maps.get(object_id)
            if ref is not None and ref() is None:
                del self._maps[object_id]

    def spill(self, object_id: str) -> bool:
        """Move an object from shared memory to disk; False if it is not there."""
        src, dst = self._path(object_id), self._path(object_id, spilled=True)
        try:
            os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
            shutil.copyfile(src, dst + ".tmp")
        except FileNotFoundError:
            return False
        os.rename(dst + ".tmp", dst)      # readers find it on disk before it leaves memory
        self.pool.discard(src)
        return True

    def delete(self, object_id: str) -> None:
        self.pool.discard(self._path(object_id))
        _unlink(self._path(object_id, spilled=True))

    def remove_all(self) -> None:
        shutil.rmtree(self.store_dir, ignore_errors=True)
        shutil.rmtree(self.spill_dir, ignore_errors=True)


def _write_file(final: str, value: Serialized, pool: Optional[FilePool] = None) -> None:
    # pwrite, not a memory map: a full tmpfs then fails with ENOSPC (handled by
    # the caller), never SIGBUS; and no posix_fallocate, which on tmpfs zeroes
    # every page first and cost more than the copy itself (224 vs 173 ms/GB).
    # A recycled file's pages already exist, so pwrite copies without faulting
    # in fresh zeroed pages (measured: 200 MB in ~65 ms instead of ~185 ms).
    # Writing through a MAP_POPULATE mapping instead was 2x slower than pwrite.
    recycled = pool is not None and pool.claim(value.size, final + ".tmp")
    write_atomically(final, value.write_to_file, keep_tmp=recycled)


def write_atomically(final: str, fill, tmp_suffix: str = ".tmp", keep_tmp: bool = False) -> None:
    """Create `final` by fill(fd) on a temporary file, then rename: readers
    never see half an object, and a failed fill leaves nothing behind.  With
    `keep_tmp` the temporary file exists already (a recycled one) and is
    written over in place."""
    tmp = final + tmp_suffix
    flags = os.O_RDWR if keep_tmp else os.O_RDWR | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600)
    try:
        fill(fd)
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, final)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
