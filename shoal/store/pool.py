"""Recycled shared-memory files: a freed object's pages serve the next put.

Writing a fresh tmpfs file costs a page fault and a zeroed page per 4 KiB, which
made a 200 MB `put` run at ~1 GB/s; writing into pages that already exist runs at
memory speed.  So a freed object's file, instead of being unlinked, is renamed
into the host's pool (`<store_dir>/.free/`), and the next large write claims the
best-fitting file from it by renaming it away (rename is atomic: of two
processes claiming the same file one gets ENOENT and tries the next).  A
process lists the pool once and claims from that listing until nothing in it
fits (entries another process took meanwhile fail their rename and are
dropped), then lists it again: a burst of puts lists it once per pool-full.

A file may only be recycled when no process still maps it: `get` returns
zero-copy views that can outlive every ref.  Readers therefore hold a shared
`flock` on the file for as long as their mapping lives (see `shm.HostStore.read`)
and `discard` recycles only under a non-blocking exclusive lock; a file somebody
maps is unlinked instead, so its pages live on for that reader, as before.

The pool is bounded (a quarter of the store's limit by default): shared-memory
use can reach the store limit plus the pool.  A full /dev/shm drains it first.
The one process that frees files (a host's agent) counts what it put in since its
last listing and lists again only when that count says the pool is full, or
after RELIST_EVERY frees: listing a pool of a hundred files on every free was
most of an agent's work in a burst of 1 MB arguments.  Others' claims only make
the count too high, so the bound holds.
"""
from __future__ import annotations

import bisect
import fcntl
import os
import secrets
import threading

RECYCLE_MIN = 1 << 20        # smaller files are cheap to fault in; not worth a pin
POOL_SHARE = 4               # the pool holds at most limit // POOL_SHARE bytes
MAX_SLACK = 2                # never truncate a file to less than 1/MAX_SLACK of its pages
RELIST_EVERY = 64            # frees between two listings of what the pool holds


class FilePool:
    """The free files of one host's store, shared by every process on the host."""

    def __init__(self, store_dir: str, capacity: int) -> None:
        self.dir = os.path.join(store_dir, ".free")
        self.capacity = capacity
        self._listed: list[tuple[int, str]] = []    # the last listing, by size, less what was tried
        self._held: int | None = None    # bytes held at the last listing, plus what we added since
        self._frees = 0                  # frees since that listing
        self._lock = threading.Lock()

    def _entries(self) -> list[tuple[int, str]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            size, _, _ = name.partition("-")
            if size.isdigit():
                out.append((int(size), name))
        return out

    def held(self) -> int:
        """Bytes in the pool now (a snapshot: other processes claim and add)."""
        return sum(size for size, _ in self._entries())

    def claim(self, size: int, dest: str) -> bool:
        """Move a free file of at least `size` bytes (and at most MAX_SLACK times
        that) to `dest`, truncated to `size`; False if none fits."""
        if size < RECYCLE_MIN:
            return False
        with self._lock:
            for relist in (False, True):
                if relist:
                    self._listed = sorted(self._entries())
                listed = self._listed
                i = bisect.bisect_left(listed, (size, ""))
                while i < len(listed) and listed[i][0] <= size * MAX_SLACK:
                    _, name = listed.pop(i)
                    try:
                        os.rename(os.path.join(self.dir, name), dest)
                    except FileNotFoundError:       # another process took it first
                        continue
                    os.truncate(dest, size)
                    return True
        return False

    def discard(self, path: str) -> None:
        """Free an object's file: into the pool if nobody maps it and it fits,
        else unlink it (a reader's mapping keeps the pages until it lets go)."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            if size >= RECYCLE_MIN and self._has_room(size) and _lock_free(fd):
                # Still under the exclusive lock: a reader that opened the file
                # before the rename finds its path gone when it gets the lock.
                pooled = os.path.join(self.dir, f"{size}-{secrets.token_hex(6)}")
                try:
                    os.rename(path, pooled)
                except FileNotFoundError:           # the pool's directory, the first time
                    os.makedirs(self.dir, mode=0o700, exist_ok=True)
                    os.rename(path, pooled)
                with self._lock:
                    if self._held is not None:
                        self._held += size
                return
            _unlink(path)
        finally:
            os.close(fd)

    def _has_room(self, size: int) -> bool:
        with self._lock:
            self._frees += 1
            if self._held is None or self._frees > RELIST_EVERY or \
                    self._held + size > self.capacity:
                self._held, self._frees = self.held(), 0
            return self._held + size <= self.capacity

    def drain(self) -> int:
        """Unlink every free file (the tmpfs is full); returns the bytes freed."""
        self._held = None
        freed = 0
        for size, name in self._entries():
            try:
                os.unlink(os.path.join(self.dir, name))
                freed += size
            except FileNotFoundError:
                pass
        return freed


def pin(fd: int, path: str) -> bool:
    """Hold a shared lock on an object's file for as long as `fd` stays open, so
    the pool never recycles pages this process maps.  False if the path no
    longer names this file (it was freed and recycled meanwhile)."""
    if os.fstat(fd).st_size < RECYCLE_MIN:
        return True                           # never recycled: nothing to guard
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _lock_free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
