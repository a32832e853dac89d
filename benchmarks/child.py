"""Runs one workload for one framework, in the framework's own interpreter (started by run.py).

    python child.py FRAMEWORK WORKLOAD REPEAT   -> samples for each metric
    python child.py --probe FRAMEWORK           -> framework version (or the import error)

The result is one JSON line on stdout prefixed with MARK, so framework log noise
on stdout does not matter.
"""
import json
import os
import signal
import sys
import traceback

import adapters
from workloads import NUM_CPUS, WORKLOADS, warmup

MARK = "@@BENCH-RESULT@@ "


def emit(obj):
    print(MARK + json.dumps(obj), flush=True)


def run(framework, name, repeat):
    w = WORKLOADS[name]
    a = adapters.load(framework)
    missing = [m for m in w.requires if getattr(a, m, None) is None]
    if missing:
        return emit({"ok": False, "na": True, "error": f"adapter lacks {', '.join(missing)}"})
    samples = {m: [] for m in w.metrics}
    try:
        if not w.fresh:
            a.start(NUM_CPUS)
            warmup(a)
        for _ in range(repeat):
            for metric, value in w.fn(a).items():
                samples[metric].append(value)
            if w.fresh:
                a.shutdown()
        # Report before shutdown: a shutdown that hangs must not lose the measurements.
        emit({"ok": True, "samples": samples})
    except BaseException:  # includes SystemExit from SIGTERM on timeout
        emit({"ok": False, "error": traceback.format_exc(limit=-8)})
    finally:
        a.shutdown()


def main(argv):
    # run.py sends SIGTERM on timeout: turn it into SystemExit so `finally` shuts the cluster
    # down.  Only here: a process forked from this one exits at once (and Pool's workers get
    # the default action: pool_adapter.py).
    main_pid = os.getpid()
    signal.signal(signal.SIGTERM,
                  lambda *_: sys.exit(143) if os.getpid() == main_pid else os._exit(143))
    if argv[0] == "--probe":
        try:
            emit({"ok": True, "version": adapters.load(argv[1]).version()})
        except Exception as e:
            emit({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return
    run(argv[0], argv[1], int(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
