"""Many callers hammering one threaded actor (issue 12): CALLERS tasks (or
driver threads) each make CALLS blocking calls to one max_concurrency actor.

    python benchmarks/actor_callers.py --framework shoal --callers 30 --calls 300
    benchmarks/.venv-peers/bin/python benchmarks/actor_callers.py --framework ray

Prints the wall time of the whole run (engines or workers start on demand
inside it, as a notebook's first run would see).
"""
import argparse
import importlib
import threading
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--framework", default="shoal", choices=("shoal", "ray"))
    p.add_argument("--callers", type=int, default=30)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--mode", default="tasks", choices=("tasks", "threads"))
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args()
    fw = importlib.import_module(args.framework)
    extra = {"include_dashboard": False} if args.framework == "ray" else {}
    fw.init(num_cpus=args.num_cpus, **extra)

    @fw.remote
    class Service:
        def call(self, x):
            return x

    service = Service.options(max_concurrency=args.callers).remote()
    fw.get(service.call.remote(0))

    @fw.remote
    def caller(service, calls):
        for i in range(calls):
            assert fw.get(service.call.remote(i)) == i
        return calls

    def in_thread():
        for i in range(args.calls):
            assert fw.get(service.call.remote(i)) == i

    start = time.perf_counter()
    if args.mode == "tasks":
        fw.get([caller.remote(service, args.calls) for _ in range(args.callers)])
    else:
        threads = [threading.Thread(target=in_thread) for _ in range(args.callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - start
    print(f"{args.framework} {args.mode}: {args.callers} callers x {args.calls} calls "
          f"in {elapsed:.2f} s ({args.callers * args.calls / elapsed:,.0f} calls/s)")
    fw.shutdown()


if __name__ == "__main__":
    main()
