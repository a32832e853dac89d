"""A real Jupyter kernel driven through jupyter_client: for tests and benchmarks.

    with KernelSession("shoal") as k:            # or "python3" (plain ipykernel)
        run = k.execute("%%remote\\nx = 1\\nx + 1")
        assert run.result == "2"

The session installs the kernelspec into a temporary directory of its own
(never the user's Jupyter dirs) and gives the kernel its own Jupyter runtime
and IPython dirs, so nothing outside leaks in or out.  Every iopub message is
kept by the msg_id of the request it answers (its parent), with the time it
arrived, so a test can look at a cell's output after other cells ran.  Every
wait has a deadline: nothing here blocks forever.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from queue import Empty
from typing import Callable, Optional

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from .kernelspec import write_kernel_spec

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class Execution:
    """What one execute_request produced, read from the session's iopub log."""

    def __init__(self, session: "KernelSession", msg_id: str, sent: float) -> None:
        self.session = session
        self.msg_id = msg_id
        self.sent = sent
        self.reply: Optional[dict] = None
        self._log = session.iopub           # this kernel's log (a restart starts a new one)

    @property
    def messages(self) -> list:
        return self._log[self.msg_id]

    def of_type(self, *types: str) -> list:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def done(self) -> bool:
        return any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                   for m in self.messages)

    @property
    def idle_at(self) -> Optional[float]:
        for m in self.messages:
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return m["received"]
        return None

    def text(self, name: str = "stdout") -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream")
                       if m["content"]["name"] == name)

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")

    @property
    def result(self) -> Optional[str]:
        """The text/plain of the execute_result, if any."""
        results = self.of_type("execute_result")
        return results[-1]["content"]["data"].get("text/plain") if results else None

    @property
    def error(self) -> Optional[dict]:
        """The error message's content (traceback without colours), if any."""
        errors = self.of_type("error")
        if not errors:
            return None
        content = dict(errors[-1]["content"])
        content["traceback_text"] = strip_ansi("\n".join(content["traceback"]))
        return content

    @property
    def displays(self) -> list:
        return [m["content"] for m in self.of_type("display_data", "update_display_data")]

    def __repr__(self) -> str:
        return (f"<Execution {self.msg_id} status={self.reply and self.reply['status']} "
                f"stdout={self.stdout!r} stderr={self.stderr!r} result={self.result!r} "
                f"error={self.error and self.error['ename']}>")


class KernelSession:
    def __init__(self, kernel: str = "shoal", extra_arguments: tuple = (),
                 env: Optional[dict] = None, startup_timeout: float = 60.0) -> None:
        self.kernel = kernel
        self.extra_arguments = list(extra_arguments)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.iopub: dict = defaultdict(list)
        self.km: Optional[KernelManager] = None
        self.kc = None
        self.tmp = tempfile.mkdtemp(prefix="shoal-kernel-test-")
        self.kernel_dirs = [os.path.join(self.tmp, "share", "jupyter", "kernels")]
        write_kernel_spec(os.path.join(self.kernel_dirs[0], "shoal"))
        _write_python3_spec(os.path.join(self.kernel_dirs[0], "python3"))

    # ------------------------------------------------------------------ lifecycle
    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update({"JUPYTER_RUNTIME_DIR": os.path.join(self.tmp, "runtime"),
                    "IPYTHONDIR": os.path.join(self.tmp, "ipython"),
                    "JUPYTER_PATH": os.path.join(self.tmp, "share", "jupyter"),
                    "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
        env.pop("SHOAL_ADDRESS", None)
        env.update(self.extra_env)
        return env

    def kernel_manager(self) -> KernelManager:
        """A KernelManager for this session's kernelspecs (not started)."""
        ksm = KernelSpecManager(kernel_dirs=self.kernel_dirs)
        os.makedirs(os.path.join(self.tmp, "runtime"), exist_ok=True)
        return KernelManager(kernel_name=self.kernel, kernel_spec_manager=ksm, transport="ipc",
                             ip=os.path.join(self.tmp, "runtime", "kernel-ipc"),
                             connection_file=os.path.join(self.tmp, "runtime", "kernel.json"))

    def start(self) -> "KernelSession":
        self.km = self.kernel_manager()
        self.km.start_kernel(env=self.env, extra_arguments=self.extra_arguments)
        self._connect()
        return self

    def _connect(self) -> None:
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=self.startup_timeout)
        self.drain(0.05)

    @property
    def pid(self) -> Optional[int]:
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return process.pid if process is not None else None

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def restart(self) -> None:
        """Restart as Jupyter's restart button does (shutdown_request, then a new kernel)."""
        self.kc.stop_channels()
        self.km.restart_kernel(now=False)
        self.iopub = defaultdict(list)      # message ids start over with the new kernel
        self._connect()

    def kill(self) -> None:
        """SIGKILL the kernel process (what the OOM killer or a crash does)."""
        self.kc.stop_channels()
        os.kill(self.pid, signal.SIGKILL)

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km is not None:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=not self.km.is_alive())
            self.km = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "KernelSession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ cells
    def submit(self, code: str) -> Execution:
        """Send an execute_request; don't wait."""
        sent = time.monotonic()
        msg_id = self.kc.execute(code, allow_stdin=False)
        return Execution(self, msg_id, sent)

    def execute(self, code: str, timeout: float = 30.0) -> Execution:
        """Run a cell and wait until the kernel is idle again after it."""
        run = self.submit(code)
        self.wait(run, timeout)
        return run

    def wait(self, run: Execution, timeout: float = 30.0) -> Execution:
        self.pump_until(lambda: run.done, timeout, f"cell {run.msg_id} to finish")
        if run.reply is None:
            run.reply = self._reply(run.msg_id, timeout)
        return run

    def _reply(self, msg_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        raise TimeoutError(f"no execute_reply for {msg_id} within {timeout} s")

    # ------------------------------------------------------------------ iopub
    def drain(self, timeout: float = 0.0) -> int:
        """Read the iopub messages that arrive within `timeout` seconds."""
        n = 0
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.001, deadline - time.monotonic()))
            except Empty:
                return n
            self._keep(msg)
            n += 1
            if time.monotonic() > deadline:
                return n

    def _keep(self, msg: dict) -> None:
        msg["received"] = time.monotonic()
        self.iopub[msg["parent_header"].get("msg_id")].append(msg)

    def pump_until(self, condition: Callable[[], object], timeout: float, what: str = "condition"):
        """Read iopub until condition() is true; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(0.05, max(0.001, deadline - time.monotonic())))
            except Empty:
                continue
            self._keep(msg)


def _write_python3_spec(path: str) -> None:
    from ipykernel.kernelspec import write_kernel_spec as write_ipykernel_spec
    tmp = write_ipykernel_spec()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copytree(tmp, path, dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["KernelSession", "Execution", "strip_ansi"]
