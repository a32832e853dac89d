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
from .launch.agent import available_cpus
from .protocol import messages as m

READY_TIMEOUT = 30.0
FOLLOW_INTERVAL = 0.2


class UsageError(ValueError):
    """Bad input on the command line: one line saying what and what is allowed; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, not the whole usage: what was wrong and where to read more."""
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------- flag types
# argparse turns an ArgumentTypeError into "shoal start: error: argument --x: ..." and exit 2.
def _whole(low: int, high: int | None = None, what: str = "a whole number"):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} {allowed}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 2.0 <= value <= 3600.0:          # heartbeats go every second
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 2 to 3600")
    return value


def _resources(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at column {exc.colno}); "
                                         f"write e.g. '{{\"memory_gb\": 8}}'") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and k and isinstance(v, (int, float)) and not isinstance(v, bool)
            and 0 <= v < float("inf") for k, v in value.items()):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a JSON object of names to non-negative numbers, e.g. "
            f"'{{\"memory_gb\": 8}}'")
    if {"CPU", "GPU"} & set(value):
        raise argparse.ArgumentTypeError("give CPU and GPU with --num-cpus and --num-gpus, "
                                         "not in --resources")
    return value


def _address(text: str) -> str:
    from .protocol.connection import parse_address
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _host(text: str) -> str:
    import ipaddress
    import socket
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    try:
        socket.getaddrinfo(text, None)
    except (socket.gaierror, UnicodeError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address or a host name this machine can resolve") from None
    return text


def _ssh_hosts(text: str) -> str:
    from .launch.ssh import parse_host
    for entry in (h for h in text.split(",") if h):
        try:
            parse_host(entry)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not any(text.split(",")):
        raise argparse.ArgumentTypeError("give at least one host, e.g. user@host1:4,host2")
    return text


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="shoal", formatter_class=raw,
        description="Run and inspect shoal clusters (interactive parallel computing with "
                    "Ray's API).",
        epilog="examples:\n"
               "  shoal start --head --num-cpus 4     start a cluster on this machine\n"
               "  shoal status                        what it is doing\n"
               "  shoal logs --follow                 its logs, as they grow\n"
               "  shoal stop                          stop it\n\n"
               "Commands without --address act only on the cluster started here with\n"
               "`shoal start`, never on a notebook's or a script's own cluster.")
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "start", formatter_class=raw,
        help="start a cluster's head (--head), or join this machine to a cluster as a host",
        description="Start the head of a new cluster (--head), or join this machine to a "
                    "running cluster as a host (--address HEAD:PORT).",
        epilog="examples:\n"
               "  shoal start --head                           loopback only, one engine per CPU\n"
               "  shoal start --head --host 0.0.0.0 --port 6380 --num-cpus 8\n"
               "  shoal start --head --ssh me@node1:4,node2    and hosts over SSH\n"
               "  shoal start --head --restart-scheduler       a new scheduler if it dies\n"
               "  SHOAL_KEY=... shoal start --address head:6380 --resources '{\"B\": 1}'\n"
               "  shoal start --address head:6380 --connection-file shoal-cluster-XXXX.json")
    p.add_argument("--head", action="store_true", help="start the head of a new cluster")
    p.add_argument("--address", default=None, type=_address,
                   help="join the cluster whose head listens at HOST:PORT; the key comes from "
                        "--connection-file, the SHOAL_KEY environment variable, or stdin")
    p.add_argument("--connection-file", default=None,
                   help="a copy of the head's connection file (holds the key)")
    p.add_argument("--block", action="store_true",
                   help="with --address: stay in the foreground, forwarding this host's log, "
                        "and stop the host when stdin closes (how the SSH launcher runs it)")
    p.add_argument("--ssh", default=None, type=_ssh_hosts,
                   help="with --head: also start hosts over SSH, e.g. user@host1:4,host2 "
                        "(SHOAL_SSH_OPTIONS adds ssh options)")
    p.add_argument("--remote-python", default=None,
                   help="the Python on the SSH hosts (default: this interpreter's path)")
    p.add_argument("--restart-scheduler", action="store_true",
                   help="with --head: if the scheduler dies, start a new one at the same "
                        "address; hosts rejoin it, drivers must connect again (its tasks, "
                        "objects and actors are gone)")
    p.add_argument("--heartbeat-timeout", type=_seconds, default=None,
                   help="seconds (2 to 3600) of silence after which a host counts as lost "
                        "(default 6)")
    p.add_argument("--host", default="127.0.0.1", type=_host,
                   help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=_whole(0, 65535, "a port"), default=0,
                   help="port to listen on, 0 to 65535 (default 0: any free one)")
    p.add_argument("--num-cpus", type=_whole(1), default=None,
                   help="engines/CPUs on this host, >= 1 (default: the CPUs it may use)")
    p.add_argument("--num-gpus", type=_whole(0), default=None,
                   help="GPUs on this host (default: the ones CUDA_VISIBLE_DEVICES or the "
                        "driver shows)")
    p.add_argument("--resources", type=_resources, default=None,
                   help='custom resources as a JSON object, e.g. \'{"memory_gb": 8}\'')
    p.set_defaults(func=cmd_start)

    commands = (
        ("stop", cmd_stop, "stop a cluster started with `shoal start` (saying so if none runs)",
         "  shoal stop\n  shoal stop --address 127.0.0.1:6380"),
        ("status", cmd_status, "show hosts, engines, actors, tasks and objects",
         "  shoal status\n  shoal status --json | jq .engines"),
        ("memory", cmd_memory, "show the object store: memory per host and every object "
                               "(like `ray memory`)", "  shoal memory\n  shoal memory --json"),
        ("story", cmd_story, "show what happened to a task and why: each of its state "
                             "transitions, with the event that caused it",
         "  shoal story 3f2a9c...           a task id (or the id of one of its results,\n"
         "                                 or an actor's id)\n"
         "  shoal story 3f2a9c... --json"),
        ("logs", cmd_logs, "print a cluster's log files, or follow them",
         "  shoal logs                     every log of the cluster\n"
         "  shoal logs --tail 20 --follow  the last 20 lines of each, then what is added\n"
         "  shoal logs --engine e0         one engine's log"))
    for name, func, text, examples in commands:
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           formatter_class=raw, epilog="examples:\n" + examples)
        p.add_argument("--address", default=None, type=_address,
                       help="HOST:PORT of the cluster (default: the one started here with "
                            "`shoal start`; if several run, say which)")
        p.set_defaults(func=func)
        if name == "story":
            p.add_argument("task_id", metavar="TASK_ID",
                           help="the task's id (ObjectRef.task_id()), an id of its results, "
                                "or an actor's id")
        if name in ("status", "memory", "story"):
            p.add_argument("--json", action="store_true", help="print the raw data as JSON")
        if name == "logs":
            p.add_argument("--engine", default=None, help="only this engine's log")
            p.add_argument("--tail", type=_whole(0), default=None, metavar="N",
                           help="only the last N lines of each log")
            p.add_argument("--follow", "-f", action="store_true",
                           help="keep printing what is added (and new logs) until Ctrl-C or "
                                "the cluster stops")

    p = sub.add_parser("kernel", help="the shoal Jupyter kernel",
                       description="The shoal Jupyter kernel.", formatter_class=raw,
                       epilog="examples:\n  shoal kernel install --user")
    ksub = p.add_subparsers(dest="kernel_command", required=True, metavar="COMMAND")
    k = ksub.add_parser("install", help='install the kernelspec "Python 3 (shoal)"',
                        description='Install the kernelspec "Python 3 (shoal)".')
    where = k.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user only")
    where.add_argument("--sys-prefix", action="store_true",
                       help="into this Python environment (sys.prefix)")
    where.add_argument("--prefix", default=None, help="under this prefix")
    k.set_defaults(func=cmd_kernel_install)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 0, 1 (it failed: says why in one line) or 2 (bad input)."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as exc:
        print(f"shoal {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:      # ConnectionError and TimeoutError are OSErrors
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
        raise UsageError("say --head (start a new cluster) or --address HEAD:PORT (join one)")
    for flag, needs in (("ssh", "head"), ("remote_python", "head"), ("block", "address"),
                        ("restart_scheduler", "head"),
                        ("connection_file", "address")):
        if getattr(args, flag) and not getattr(args, needs):
            raise UsageError(f"--{flag.replace('_', '-')} goes with --{needs}")
    if args.address:
        return _join(args)
    from .launch.launcher import LocalCluster
    ssh_hosts = tuple(h for h in (args.ssh or "").split(",") if h)
    cluster = LocalCluster(num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                           resources=args.resources, host=args.host, port=args.port, owned=False,
                           heartbeat_timeout=args.heartbeat_timeout, ssh_hosts=ssh_hosts,
                           remote_python=args.remote_python,
                           restart_scheduler=args.restart_scheduler)
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
    from .launch.launcher import HostProcess, local_address_towards
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


def _find(address: str | None, required: bool = True) -> dict | None:
    """The cluster a command acts on: at --address, else the one started here
    with `shoal start` (never another process's embedded cluster)."""
    try:
        info = session.find_cluster(address)
    except ValueError as exc:             # several: the user must say which
        raise UsageError(str(exc)) from None
    if info is None and required:
        raise ConnectionError(f"no shoal cluster {_where(address)} is running "
                              f"(looked in {session.runtime_dir()})")
    return info


def _where(address: str | None) -> str:
    return f"at {address}" if address else "started with `shoal start` on this machine"


def cmd_stop(args) -> int:
    info = _find(args.address, required=False)
    if info is None:
        print(f"No shoal cluster {_where(args.address)} is running; nothing to stop.")
        return 0
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


def _query(address: str | None, kind: str, **args):
    info = _find(address)
    client = Client.connect(info["address"], bytes.fromhex(info["key"]), kind="cli", timeout=5)
    try:
        return info, client.query(kind, **args)
    finally:
        client.close()


def cmd_story(args) -> int:
    try:
        _, reply = _query(args.address, "story", task_id=args.task_id)
    except ValueError as exc:           # the scheduler knows no such task
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(reply, indent=1))
        return 0
    print(format_story(reply["task_id"], reply["story"], reply.get("kind", "task")))
    return 0


def format_story(task_id: str, story: list, kind: str = "task") -> str:
    lines = [f"{kind} {task_id}: {len(story)} transitions, oldest first"]
    for r in story:
        seconds, ms = divmod(int(r["time"] * 1000), 1000)
        stamp = time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{ms:03d}"
        lines.append(f"  {stamp}  {r['stimulus']:<22} {r['from'] or '-':>10} -> {r['to']:<10} "
                     f"{r['why']}" + (f" [{r['engine_id']}]" if r["engine_id"] else ""))
    return "\n".join(lines)


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
                 f"running {e['task_id']}" if e["task_id"] else
                 "stopping (its task was cancelled with force)" if e["state"] == "stopping"
                 else "idle")
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
    info = _find(args.address)
    logs = os.path.join(info["session_dir"], "logs")
    pattern = "*.log"
    if args.engine:
        exact = os.path.exists(os.path.join(logs, f"engine-{args.engine}.log"))
        pattern = f"engine-{args.engine}.log" if exact else f"engine-*{args.engine}*.log"
    files = sorted(glob.glob(os.path.join(logs, pattern)))
    if not files and not args.follow:
        raise ValueError(f"no log matching {pattern!r} in {logs}")
    positions = {}
    for path in files:
        print(f"==> {path} <==")
        positions[path] = _print_tail(path, args.tail)
    if args.follow:
        _follow(logs, pattern, positions, info.get("pid"))
    return 0


def _print_tail(path: str, lines: int | None) -> int:
    """Print a log (its last `lines` lines if given); returns where it ended."""
    with open(path, "rb") as f:
        data = f.read()
        end = f.tell()
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""
    sys.stdout.write(data.decode(errors="replace"))
    sys.stdout.flush()
    return end


def _follow(logs: str, pattern: str, positions: dict, scheduler_pid) -> None:
    """Print what is added to the logs (new ones too), as `tail -f` does, until
    Ctrl-C or the cluster's scheduler exits."""
    current = None
    while True:
        running = session._alive(scheduler_pid)
        for path in sorted(glob.glob(os.path.join(logs, pattern))):
            with open(path, "rb") as f:
                f.seek(positions.get(path, 0))
                data = f.read()
                positions[path] = f.tell()
            if data:
                if current != path:
                    print(f"\n==> {path} <==")
                    current = path
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
        if not running:
            print("\n(the cluster has stopped)")
            return
        time.sleep(FOLLOW_INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
