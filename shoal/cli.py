"""`shoal start | stop | status | logs`: clusters from a shell."""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import sys
import threading
import time

from . import session
from .core.client import Client
from .core.context import implicit_resource
from .engine.agent import available_cpus
from .protocol import messages as m

READY_TIMEOUT = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shoal", description="Run and inspect shoal clusters.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("start", help="start a cluster's head (--head), or join this machine to "
                                     "a cluster as a host (--address HEAD:PORT)")
    p.add_argument("--head", action="store_true", help="start the head of a new cluster")
    p.add_argument("--address", default=None,
                   help="join the cluster whose head listens at HOST:PORT; the key comes from "
                        "--connection-file, the SHOAL_KEY environment variable, or stdin")
    p.add_argument("--connection-file", default=None,
                   help="a copy of the head's connection file (holds the key)")
    p.add_argument("--block", action="store_true",
                   help="with --address: stay in the foreground, forwarding this host's log, "
                        "and stop the host when stdin closes (how the SSH launcher runs it)")
    p.add_argument("--ssh", default=None,
                   help="with --head: also start hosts over SSH, e.g. user@host1:4,host2 "
                        "(SHOAL_SSH_OPTIONS adds ssh options)")
    p.add_argument("--remote-python", default=None,
                   help="the Python on the SSH hosts (default: this interpreter's path)")
    p.add_argument("--heartbeat-timeout", type=float, default=None,
                   help="seconds of silence after which a host counts as lost (default 6)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    p.add_argument("--num-cpus", type=int, default=None, help="engines/CPUs on this host")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs on this host")
    p.add_argument("--resources", type=json.loads, default=None,
                   help='custom resources as JSON, e.g. \'{"memory_gb": 8}\'')
    p.set_defaults(func=cmd_start)

    for name, func, text in (("stop", cmd_stop, "stop a cluster started with `shoal start`"),
                             ("status", cmd_status, "show hosts, engines, tasks and objects"),
                             ("memory", cmd_memory, "show the object store: memory per host "
                                                    "and every object (like `ray memory`)"),
                             ("logs", cmd_logs, "print a cluster's log files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--address", default=None,
                       help="HOST:PORT of the cluster (default: the newest one started here)")
        p.set_defaults(func=func)
        if name in ("status", "memory"):
            p.add_argument("--json", action="store_true", help="print the raw data as JSON")
        if name == "logs":
            p.add_argument("--engine", default=None, help="only this engine's log")

    p = sub.add_parser("kernel", help="the shoal Jupyter kernel")
    ksub = p.add_subparsers(dest="kernel_command", required=True)
    k = ksub.add_parser("install", help='install the kernelspec "Python 3 (shoal)"')
    where = k.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user only")
    where.add_argument("--sys-prefix", action="store_true",
                       help="into this Python environment (sys.prefix)")
    where.add_argument("--prefix", default=None, help="under this prefix")
    k.set_defaults(func=cmd_kernel_install)

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConnectionError, ValueError, TimeoutError) as exc:
        print(f"shoal {args.command}: {exc}", file=sys.stderr)
        return 1


def cmd_kernel_install(args) -> int:
    from .kernel import install
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = install(user=args.user, prefix=prefix)
    print(f"Installed the shoal kernel (\"Python 3 (shoal)\") in {path}")
    return 0


def cmd_start(args) -> int:
    if args.head == bool(args.address):
        print("shoal start: say --head (start a new cluster) or --address HEAD:PORT (join one)",
              file=sys.stderr)
        return 2
    if args.address:
        return _join(args)
    from .engine.launcher import LocalCluster
    ssh_hosts = tuple(h for h in (args.ssh or "").split(",") if h)
    cluster = LocalCluster(num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                           resources=args.resources, host=args.host, port=args.port, owned=False,
                           heartbeat_timeout=args.heartbeat_timeout, ssh_hosts=ssh_hosts,
                           remote_python=args.remote_python)
    client = Client.connect(cluster.address, cluster.key, kind="cli")
    try:
        status = _wait_ready(client, args.num_cpus or available_cpus())
    finally:
        client.close()
    cpus = sum(h["resources"].get("CPU", 0) for h in status["hosts"])
    print(f"Started a shoal cluster at {cluster.address} with {len(status['engines'])} engines "
          f"({cpus:g} CPUs).\n"
          f"  connection file: {cluster.connection_file}\n"
          f"  logs:            {cluster.session_dir}/logs\n\n"
          f"Connect from Python on this machine:\n"
          f"    import shoal\n"
          f"    shoal.init(address=\"{cluster.address}\")      # or address=\"auto\"\n"
          f"or set SHOAL_ADDRESS={cluster.address} before shoal.init().\n"
          f"Inspect it with `shoal status`; stop it with `shoal stop`.")
    return 0


def _read_key(args) -> tuple[str, bytes]:
    """The cluster key, never from the command line: a connection file, the
    SHOAL_KEY environment variable, or a line on stdin."""
    address = args.address
    if args.connection_file:
        info = session.read_connection_file(args.connection_file)
        return address or info["address"], bytes.fromhex(info["key"])
    key_hex = os.environ.get("SHOAL_KEY")
    if key_hex is None and not sys.stdin.isatty():
        key_hex = sys.stdin.readline().strip()
    if not key_hex:
        raise ValueError("no cluster key: pass --connection-file, set SHOAL_KEY, or pipe the key "
                         "(hex) into stdin")
    try:
        return address, bytes.fromhex(key_hex)
    except ValueError:
        raise ValueError("the cluster key must be hex (as in the head's connection file)") from None


def _join(args) -> int:
    from .engine.launcher import HostProcess, local_address_towards
    address, key = _read_key(args)
    client = Client.connect(address, key, kind="cli")        # checks the key before anything
    try:
        before = {h["host_id"] for h in client.status()["hosts"]}
        host = HostProcess(address, key, client.cluster_id,
                           session.new_session_dir(client.cluster_id), num_cpus=args.num_cpus,
                           num_gpus=args.num_gpus, resources=args.resources,
                           bind_host=local_address_towards(address), owned=args.block,
                           heartbeat_timeout=args.heartbeat_timeout)
        deadline = time.monotonic() + READY_TIMEOUT
        while host.host_id not in {h["host_id"] for h in client.status()["hosts"]} - before:
            if host.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"this host did not join; see {host.log_path}")
            time.sleep(0.05)
    finally:
        client.close()
    print(f"Joined the shoal cluster at {address} as host {host.host_id} "
          f"({args.num_cpus or available_cpus()} CPUs); logs in {host.log_path}.", flush=True)
    if args.block:
        _block(host)
        return 0
    print("It leaves when the cluster stops (shoal stop at the head).")
    return 0


def _block(host) -> None:
    """Forward the host's log to stdout until stdin closes or the host stops."""
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not os.path.exists(host.log_path) and time.monotonic() < deadline:
        done.wait(0.05)
    with open(host.log_path, errors="replace") as log_file:
        while not done.is_set() and host.process.poll() is None:
            line = log_file.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                done.wait(0.2)
    host.stop()


def _wait_ready(client: Client, engines: int) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        status = client.status()
        if len(status["engines"]) >= engines:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(status['engines'])} of {engines} engines started; "
                               f"see the logs in {status['session_dir']}/logs")
        time.sleep(0.05)


def _find(address: str | None) -> dict:
    info = session.find_cluster(address)
    if info is None:
        where = f"at {address}" if address else "started on this machine"
        raise ConnectionError(f"no running shoal cluster {where} (looked in {session.runtime_dir()})")
    return info


def cmd_stop(args) -> int:
    info = _find(args.address)
    pids = [p for p in (info.get("pid"), info.get("agent_pid")) if p]
    try:
        client = Client.connect(info["address"], bytes.fromhex(info["key"]), kind="cli", timeout=5)
        client.send(m.Shutdown(reason="shoal stop"))
        client.close()
    except OSError as exc:
        print(f"the scheduler did not answer ({exc}); stopping its processes directly")
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    try:
        os.unlink(info["path"])
    except FileNotFoundError:
        pass
    print(f"Stopped the shoal cluster at {info['address']}.")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours would still answer; it cannot be one here.
    return True


def _query(address: str | None, kind: str):
    info = _find(address)
    client = Client.connect(info["address"], bytes.fromhex(info["key"]), kind="cli", timeout=5)
    try:
        return info, client.query(kind)
    finally:
        client.close()


def cmd_memory(args) -> int:
    info, objects = _query(args.address, "objects")
    _, hosts = _query(args.address, "memory")
    if args.json:
        print(json.dumps({"hosts": hosts, "objects": objects}, indent=1))
        return 0
    print(format_memory(hosts, objects))
    return 0


def format_memory(hosts: list, objects: list) -> str:
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    lines = ["Object store by host:"]
    for h in hosts:
        lines.append(f"  {h['host_id']} ({h['hostname']}): {mb(h['used'])} of {mb(h['limit'])} "
                     f"in shared memory, {mb(h['spilled'])} spilled to disk, "
                     f"{h['objects']} objects")
    lines.append(f"\n{len(objects)} objects, largest first:")
    lines.append(f"  {'object id':<24} {'size':>12}  {'type':<20} {'where':<14} {'refs':>4}  "
                 f"held by / made by")
    for o in sorted(objects, key=lambda o: -o["size"]):
        lines.append(f"  {o['object_id']:<24} {mb(o['size']):>12}  {o['type'][:20]:<20} "
                     f"{o['where']:<14} {o['reference_count']:>4}  "
                     f"{', '.join(o['held_by']) or '-'} / {o['created_by'] or '-'}")
    return "\n".join(lines)


def cmd_status(args) -> int:
    info, status = _query(args.address, "status")
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(format_status(info["address"], status))
    return 0


def format_status(address: str, status: dict) -> str:
    lines = [f"shoal cluster {status['cluster_id']} at {address}",
             f"  logs: {status['session_dir']}/logs", "", "Hosts:"]
    for h in status["hosts"]:
        res = ", ".join(f"{k} {h['available'].get(k, 0):g}/{v:g}" for k, v in h["resources"].items()
                        if not implicit_resource(k))
        lines.append(f"  {h['host_id']} ({h['hostname']}): {len(h['engines'])} engines; free {res}")
    lines.append("Engines:")
    for e in sorted(status["engines"], key=lambda e: e["engine_id"]):
        doing = (f"hosts actor {e['actor_id']}" if e.get("actor_id") else
                 f"running {e['task_id']}" if e["task_id"] else "idle")
        lines.append(f"  {e['engine_id']:<16} pid {e['pid']:<8} {doing}"
                     + (" (blocked in get)" if e["blocked"] else ""))
    if status.get("actors"):
        lines.append("Actors:")
        for a in status["actors"]:
            name = f" {a['name']!r}" if a["name"] else ""
            lines.append(f"  {a['actor_id']:<20} {a['class_name']}{name} {a['state']} on "
                         f"{a['engine_id'] or '-'} (host {a['host_id'] or '-'}), "
                         f"restarts {a['restarts']}, pending calls {a['pending_calls']}")
    tasks = ", ".join(f"{k} {v}" for k, v in status["tasks"].items()) or "none"
    lines += [f"Tasks: {tasks}",
              f"Objects: {status['objects']['count']} ({status['objects']['bytes'] / 1e6:.1f} MB)",
              f"Drivers: {len(status['clients'])}"]
    return "\n".join(lines)


def cmd_logs(args) -> int:
    info = session.find_cluster(args.address)
    if info is not None:
        logs = os.path.join(info["session_dir"], "logs")
    else:
        sessions = sorted(glob.glob(os.path.join(session.sessions_root(), "session_*")),
                          key=os.path.getmtime)
        if not sessions:
            raise ConnectionError("no shoal cluster and no session logs found on this machine")
        logs = os.path.join(sessions[-1], "logs")
    if args.engine:
        pattern = f"engine-{args.engine}.log" if os.path.exists(
            os.path.join(logs, f"engine-{args.engine}.log")) else f"engine-*{args.engine}*.log"
    else:
        pattern = "*.log"
    files = sorted(glob.glob(os.path.join(logs, pattern)))
    if not files:
        raise ValueError(f"no log matching {pattern!r} in {logs}")
    for path in files:
        print(f"==> {path} <==")
        with open(path, errors="replace") as f:
            sys.stdout.write(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
