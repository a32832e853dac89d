"""What Pool's async calls return: multiprocessing's AsyncResult, MapResult
and IMapIterator, filled by the pool's dispatcher thread."""
from __future__ import annotations

import logging
import threading
import time
from multiprocessing import TimeoutError
from typing import Callable, Optional

log = logging.getLogger("shoal.pool")


class AsyncResult:
    """The result of `apply_async` / `map_async`: get, wait, ready, successful."""

    def __init__(self, callback: Optional[Callable] = None,
                 error_callback: Optional[Callable] = None) -> None:
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._ok = False
        self._value = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None):
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._ok:
            return self._value
        raise self._value

    # -- filled by the dispatcher
    def _set(self, ok: bool, value) -> None:
        if self.ready():
            return
        self._ok, self._value = ok, value
        hook = self._callback if ok else self._error_callback
        if hook is not None:
            try:
                hook(value)
            except Exception:       # mp would lose its result thread; we log and go on
                log.exception("a pool callback failed")
        self._event.set()

    def _chunk_done(self, index: int, ok: bool, value) -> None:
        self._set(ok, value[0] if ok else value)

    def _input_done(self, chunks: int) -> None:
        pass


class MapResult(AsyncResult):
    """`map_async` / `starmap_async`: the whole list, or the first error."""

    def __init__(self, length: int, chunksize: int, callback=None, error_callback=None) -> None:
        super().__init__(callback, error_callback)
        self._results: list = [None] * length
        self._chunksize = chunksize
        self._left = -(-length // chunksize) if length else 0
        if self._left == 0:
            self._set(True, [])

    def _chunk_done(self, index: int, ok: bool, value) -> None:
        if not ok:
            self._set(False, value)
            return
        start = index * self._chunksize
        self._results[start:start + len(value)] = value
        self._left -= 1
        if self._left == 0:
            self._set(True, self._results)


class IMapIterator:
    """`imap` (in order) and `imap_unordered` (as finished): an iterator of
    results, with `next(timeout)` as multiprocessing's has."""

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._cond = threading.Condition()
        self._chunks: dict = {}        # chunk index -> (ok, value), not yet yielded
        self._finished: list = []      # unordered: (ok, value) in the order they came
        self._next_chunk = 0
        self._items: list = []         # items of the chunk being yielded
        self._total: Optional[int] = None     # chunk count, once the input is consumed
        self._yielded_chunks = 0

    def __iter__(self):
        return self

    def next(self, timeout: Optional[float] = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                got = self._take_chunk()
                if got is not None:
                    ok, value = got
                    if not ok:
                        raise value
                    self._items = list(reversed(value))
                    continue
                if self._total is not None and self._yielded_chunks >= self._total:
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left)
            return self._items.pop()

    __next__ = next

    def _take_chunk(self):
        if self._ordered:
            got = self._chunks.pop(self._next_chunk, None)
            if got is not None:
                self._next_chunk += 1
        else:
            got = self._finished.pop(0) if self._finished else None
        if got is not None:
            self._yielded_chunks += 1
        return got

    # -- filled by the dispatcher
    def _chunk_done(self, index: int, ok: bool, value) -> None:
        with self._cond:
            if self._ordered:
                self._chunks[index] = (ok, value)
            else:
                self._finished.append((ok, value))
            self._cond.notify_all()

    def _input_done(self, chunks: int) -> None:
        with self._cond:
            self._total = chunks
            self._cond.notify_all()
