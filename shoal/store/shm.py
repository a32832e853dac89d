"""Objects as files in a per-host shared-memory directory.

A producer writes the packed value once (to a temporary name, then renames it,
so a reader never sees half an object); every process on the host maps the
file read-only and deserializes in place, so numpy buffers are views of the
shared pages, not copies.  Unlinking a file that readers still map is safe:
the pages live until the last map goes away.
"""
from __future__ import annotations

import mmap
import os
import shutil
import tempfile

from ..protocol.serialization import Serialized, deserialize


def default_root() -> str:
    """/dev/shm when it is usable (true shared memory), else the temp dir."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


def create_store_dir(cluster_id: str, host_id: str, root: str | None = None) -> str:
    path = os.path.join(root or default_root(), f"shoal-{cluster_id}-{host_id}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def remove_store_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def object_path(store_dir: str, object_id: str) -> str:
    return os.path.join(store_dir, object_id.replace("/", "_"))


def write_object(store_dir: str, object_id: str, value: Serialized) -> int:
    """Write a serialized value into the store; returns its size in bytes."""
    final = object_path(store_dir, object_id)
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, value.size)
        with mmap.mmap(fd, value.size) as m:
            value.write_into(memoryview(m))
    finally:
        os.close(fd)
    os.rename(tmp, final)
    return value.size


def read_object(store_dir: str, object_id: str):
    """Deserialize an object in place (zero-copy for out-of-band buffers)."""
    fd = os.open(object_path(store_dir, object_id), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return deserialize(m)


def delete_object(store_dir: str, object_id: str) -> None:
    try:
        os.unlink(object_path(store_dir, object_id))
    except FileNotFoundError:
        pass
