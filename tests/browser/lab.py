"""JupyterLab in headless Chromium, for the widget tests.

    with Lab(tmp_path) as lab:                    # a private server and one browser
        page = lab.open("widgets.ipynb")          # a copy of the notebook, in a fresh tab
        lab.run_all(page)                         # Run All; returns once every cell ran
        lab.kernel_idle(page)                     # no [*] and the kernel idle

The server runs on 127.0.0.1 with a random token, its own settings,
workspace and runtime dirs, and a kernelspec of its own ("shoal-browser-test":
this interpreter, or `kernel_python`, the repository on PYTHONPATH).  Chromium is Debian's
(/usr/bin/chromium, or $SHOAL_CHROMIUM) driven by Playwright's Python API:
browser downloads are blocked here, so `playwright install` is never run.
Every process started is stopped by PID on close (also after a failure),
including the kernel's own children.

After the recipe in ../shared/tools/BROWSER-TESTING.md, reduced to what the
shoal tests use; the project carries it so that a fresh clone needs nothing
outside the repository.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = os.environ.get("SHOAL_CHROMIUM", "/usr/bin/chromium")
KERNEL = "shoal-browser-test"
LABEXTENSION = os.path.join(ROOT, "shoal", "labextension")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
INSTALL_HINT = "bash scripts/system-deps.sh (as root) and pip install -e .[test]"


def missing() -> list[str]:
    """What is missing to run the browser tests (empty: all there)."""
    import importlib.util
    problems = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM}")
    for mod in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(mod) is None:
            problems.append(f"python package {mod} is not installed in {sys.executable}")
    return problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict:
    kids: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            kids.setdefault(int(fields[1]), []).append(int(d))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, stack = _children(), [], [pid]
    while stack:
        for child in kids.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, each of these PIDs that is still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)


class Lab:
    def __init__(self, tmp, viewport=(1280, 900), timeout: float = 60.0,
                 kernel_python: Optional[str] = None, kernel_env: Optional[dict] = None) -> None:
        self.tmp = os.fspath(tmp)
        self.kernel_python = kernel_python or sys.executable    # the Ray tests' interpreter
        self.kernel_env = dict(kernel_env or {})
        self.root = os.path.join(self.tmp, "root")
        self.runtime_dir = os.path.join(self.tmp, "runtime")     # the server's and its kernels'
        self.viewport = viewport
        self.timeout = timeout
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: Optional[subprocess.Popen] = None
        self._pw = self._context = None
        self._pids: list = []
        self.console: list = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Lab":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        settings = os.path.join(self.tmp, "settings")
        for rel, data in (("@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
                           {"windowingMode": "none"}),
                          ("@jupyterlab/apputils-extension/notification.jupyterlab-settings",
                           {"fetchNews": "false", "checkForUpdates": False})):
            path = os.path.join(settings, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(data, f)
        spec = os.path.join(self.tmp, "jupyter", "kernels", KERNEL)
        os.makedirs(spec)
        with open(os.path.join(spec, "kernel.json"), "w") as f:
            json.dump({"argv": [self.kernel_python, "-m", "ipykernel_launcher", "-f",
                                "{connection_file}"],
                       "display_name": "shoal browser test", "language": "python",
                       "env": {"PYTHONPATH": ROOT, "MPLBACKEND": "Agg", **self.kernel_env}}, f)
        # shoal's server extension, enabled by the config file pip installs, and this
        # checkout's build of the JupyterLab extension (when scripts/build-labextension.sh ran)
        if os.path.isfile(os.path.join(LABEXTENSION, "package.json")):
            os.makedirs(os.path.join(self.tmp, "jupyter", "labextensions"))
            os.symlink(LABEXTENSION, os.path.join(self.tmp, "jupyter", "labextensions", "shoal"))
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=self.runtime_dir,
                   JUPYTER_PATH=os.path.join(self.tmp, "jupyter"),
                   JUPYTER_CONFIG_PATH=os.path.join(ROOT, "jupyter-config"),
                   IPYTHONDIR=os.path.join(self.tmp, "ipython"))
        env.pop("JUPYTER_TOKEN", None)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--port-retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={os.path.join(self.tmp, 'workspaces')}",
               "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly", "--expose-app-in-browser"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(os.path.join(self.tmp, "jupyterlab.log"), "w")
        self.server = subprocess.Popen(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                       stdout=self._log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        from playwright.sync_api import sync_playwright      # starts while the server does
        self._pw = sync_playwright().start()
        self._context = self._pw.chromium.launch_persistent_context(
            os.path.join(self.tmp, "chromium"), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": self.viewport[0], "height": self.viewport[1]})
        self._wait_server()

    def _wait_server(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer:\n{self.log_tail()}")
                time.sleep(0.1)

    def close(self) -> None:
        """Browser, server, kernels and whatever they started: all stopped.  Idempotent."""
        if self._context is not None:
            try:
                self._context.close()
            except Exception:
                pass
            self._context = None
        if self._pw is not None:
            try:
                self._pw.stop()
            except Exception:
                pass
            self._pw = None
        if self.server is not None:
            pids = descendants(self.server.pid) + self._pids
            if self.server.poll() is None:
                try:
                    self.api("POST", "/api/shutdown", timeout=5)
                    self.server.wait(15)
                except Exception:
                    pass
            _kill([self.server.pid] + pids)
            self.server.wait(5)
            self.server = None
            self._log.close()

    def api(self, method: str, path: str, body=None, timeout: float = 10):
        req = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(os.path.join(self.tmp, "jupyterlab.log")) as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------ notebooks
    def open(self, notebook: str):
        """Open a copy of `notebook` (outputs cleared, our kernel) in a new tab; wait for its
        kernel to be idle.  Returns the Playwright page."""
        with open(notebook, encoding="utf-8") as f:
            nb = json.load(f)
        nb.setdefault("metadata", {})["kernelspec"] = {
            "name": KERNEL, "display_name": "shoal browser test", "language": "python"}
        nb["metadata"].pop("widgets", None)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        name = os.path.basename(notebook)
        with open(os.path.join(self.root, name), "w", encoding="utf-8") as f:
            json.dump(nb, f)
        page = self._context.new_page()
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        page.goto(f"{self.base}/lab/tree/{name}?reset&token={self.token}")
        page.wait_for_selector(".jp-NotebookPanel", timeout=self.timeout * 1000)
        self.poll(page, "() => { const k = window.jupyterapp?.shell?.currentWidget?.sessionContext"
                        "?.session?.kernel; return !!k && k.status === 'idle'; }",
                  self.timeout, "the kernel to start")
        return page

    def run_all(self, page, timeout: float = 120) -> float:
        """Run every cell; return once none is queued or running.  Returns the seconds it took."""
        t = time.monotonic()
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.poll(page, JS_ALL_RAN, timeout, "every cell to run")
        return time.monotonic() - t

    def kernel_idle(self, page) -> bool:
        return page.evaluate(JS_IDLE)

    def poll(self, page, js: str, timeout: float, what: str, arg=None):
        """Evaluate `js` in the page until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = page.evaluate(js, arg) if arg is not None else page.evaluate(js)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"console: {self.console[-10:]}")
            page.wait_for_timeout(100)

    def screenshot(self, page, path) -> str:
        """The whole notebook: the viewport grows to the last cell first (the panel scrolls)."""
        height = page.evaluate("""() => {
            const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell')];
            const last = cells[cells.length - 1];
            const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')
                || document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
            return last ? Math.ceil(last.getBoundingClientRect().bottom + (panel ? panel.scrollTop : 0)) + 80 : 900;
        }""")
        page.set_viewport_size({"width": self.viewport[0], "height": max(self.viewport[1], height)})
        page.wait_for_timeout(300)
        page.screenshot(path=os.fspath(path))
        page.set_viewport_size({"width": self.viewport[0], "height": self.viewport[1]})
        return os.fspath(path)


PANEL = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"

JS_IDLE = """() => {
  const k = window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel;
  return !!k && k.status === 'idle';
}"""

# Every code cell shows an execution count ("[3]:") and the kernel is idle.
JS_ALL_RAN = """() => {
  const panel = %s;
  if (!panel) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.innerText.trim());
  const k = window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel;
  return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p)) && !!k && k.status === 'idle';
}""" % PANEL
