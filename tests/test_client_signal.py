"""The one-shot signal a blocked `get`/`wait` sleeps on (client._Signal), in-process."""
import threading
import time

import pytest

from shoal.core.client import _Signal

pytestmark = pytest.mark.timeout(10)


def test_wait_times_out_unless_set_and_never_blocks_on_a_negative_timeout():
    s = _Signal()
    assert s.wait(0) is False
    t = time.monotonic()
    assert s.wait(-1) is False             # a lock's -1 means "forever": not here
    assert s.wait(0.05) is False
    assert 0.04 < time.monotonic() - t < 2
    s.set()
    s.set()                                # a second set (several refs ready at once) is a no-op
    assert s.wait(0) is True and s.wait(None) is True


def test_set_from_another_thread_wakes_the_waiter():
    s = _Signal()
    threading.Timer(0.05, s.set).start()
    t = time.monotonic()
    assert s.wait(5) is True
    assert time.monotonic() - t < 2
    other = _Signal()
    threading.Timer(0.05, other.set).start()
    assert other.wait() is True
