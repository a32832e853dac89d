"""A headless tour of shoal on the embedded local cluster (`make demo`)."""
import time

import numpy as np

import shoal

t0 = time.perf_counter()
ctx = shoal.init()
print(ctx)


@shoal.remote
def square(x):
    return x * x


refs = [square.remote(i) for i in range(1000)]
assert shoal.get(refs) == [i * i for i in range(1000)]
print(f"1,000 tasks from a cold start in {time.perf_counter() - t0:.2f} s")


@shoal.remote
def add(a, b):
    return a + b


# Tasks take refs: a tree reduction never moves partial sums through the driver.
level = [square.remote(i) for i in range(256)]
while len(level) > 1:
    level = [add.remote(level[i], level[i + 1]) for i in range(0, len(level), 2)]
print("sum of squares below 256:", shoal.get(level[0]))

# Large arrays live in shared memory: get() returns a zero-copy, read-only view.
big = shoal.put(np.arange(25_000_000, dtype=np.float64))     # 200 MB
t = time.perf_counter()
view = shoal.get(big)
print(f"got a {view.nbytes / 1e6:.0f} MB array in {(time.perf_counter() - t) * 1e3:.2f} ms "
      f"(writeable={view.flags.writeable})")


@shoal.remote
def fails(x):
    raise ValueError(f"cannot handle {x}")


try:
    shoal.get(fails.remote(42))
except ValueError as err:            # the remote ValueError, with its remote traceback
    print("caught the remote error:", str(err).splitlines()[-1])

ready, pending = shoal.wait([square.remote(i) for i in range(10)], num_returns=5, timeout=5)
print(f"wait: {len(ready)} ready, {len(pending)} pending")
shoal.shutdown()
