"""Simulated hosts for multi-host tests: network namespaces on a bridge.

Host K is namespace `shoalhK` with eth0 = 10.88.0.(10+K)/24 on bridge
`shoalbr0`; the head (this process, the root namespace) is 10.88.0.1.  The
filesystem and process table are shared, so the venv works everywhere and a
test may kill a "remote" pid directly.  With sshd=True each host runs its own
OpenSSH on port 22 (config, keys and logs in a temp dir; /etc/ssh is not
used).  `partition(k)` cuts host k's link.  Follows the recipe of
../shared/tools/fake-hosts, carried here so a clone needs nothing outside.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

PREFIX, BRIDGE, NET = "shoalh", "shoalbr0", "10.88.0"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


def why_unavailable() -> str | None:
    """None if namespaces, veths and bridges can be made here, else why not."""
    if os.geteuid() != 0:
        return "multi-host tests need root (network namespaces)"
    if not shutil.which("ip"):
        return "multi-host tests need iproute2 (ip)"
    probe = f"{PREFIX}probe"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"network namespaces are not permitted here: {r.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


class FakeHosts:
    def __init__(self, n: int, sshd: bool = False) -> None:
        self.n = n
        self.head_ip = f"{NET}.1"
        self.dir = tempfile.mkdtemp(prefix="shoal-netns-")
        self.sshd_pids: list[int] = []
        self.ssh_config = os.path.join(self.dir, "ssh_config")
        self.down()                       # a previous run that crashed
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{self.head_ip}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for k in range(1, n + 1):
            ns, veth = self.ns(k), f"{BRIDGE}-{k}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", veth, "master", BRIDGE, "up")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip(k)}/24", "dev", "eth0")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        if sshd:
            self._start_sshd()

    @staticmethod
    def ns(k: int) -> str:
        return f"{PREFIX}{k}"

    @staticmethod
    def ip(k: int) -> str:
        return f"{NET}.{10 + k}"

    def exec_argv(self, k: int, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(k), *cmd]

    def partition(self, k: int) -> None:
        _run("ip", "link", "set", f"{BRIDGE}-{k}", "down")

    def heal(self, k: int) -> None:
        _run("ip", "link", "set", f"{BRIDGE}-{k}", "up")

    def _start_sshd(self) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd):
            raise RuntimeError("sshd is not installed (scripts/ci-deps.sh installs it)")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        key = os.path.join(self.dir, "id_ed25519")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
        shutil.copy(key + ".pub", os.path.join(self.dir, "authorized_keys"))
        locked = subprocess.run(["getent", "shadow", "root"], capture_output=True,
                                text=True).stdout.split(":")[1:2] == ["!"] or False
        client = [f"Host {PREFIX}*\n  IdentityFile {key}\n  StrictHostKeyChecking no\n"
                  f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"]
        for k in range(1, self.n + 1):
            hostkey = os.path.join(self.dir, f"host{k}_key")
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey)
            cfg = os.path.join(self.dir, f"sshd{k}.conf")
            pidfile = os.path.join(self.dir, f"sshd{k}.pid")
            with open(cfg, "w") as f:
                f.write(f"ListenAddress {self.ip(k)}:22\nHostKey {hostkey}\nPidFile {pidfile}\n"
                        f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
                        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                        f"KbdInteractiveAuthentication no\nUsePAM {'yes' if locked else 'no'}\n"
                        f"StrictModes no\nUseDNS no\nPrintMotd no\nMaxStartups 100:30:200\n")
            _run(*self.exec_argv(k, sshd, "-f", cfg, "-E", os.path.join(self.dir, f"sshd{k}.log")))
            deadline = time.monotonic() + 10
            while not (os.path.exists(pidfile) and open(pidfile).read().strip()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd in {self.ns(k)} did not start")
                time.sleep(0.05)
            self.sshd_pids.append(int(open(pidfile).read()))
            client.append(f"Host {self.ns(k)}\n  HostName {self.ip(k)}\n")
        with open(self.ssh_config, "w") as f:
            f.write("\n".join(client))

    def down(self) -> None:
        """Remove everything (idempotent), and end what still runs inside."""
        for pid in self.sshd_pids:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        self.sshd_pids = []
        listed = _run("ip", "netns", "list", check=False).stdout.split()
        for ns in [x for x in listed if x.startswith(PREFIX)]:
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _run("ip", "netns", "del", ns, check=False)
        for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(BRIDGE):
                _run("ip", "link", "del", name, check=False)

    def close(self) -> None:
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)
