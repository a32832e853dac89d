"""The magics: parse the arguments, call the machinery.  Nothing else here.

    %%remote [--bg] [--all | --on NAME] [--num-cpus N] [--num-gpus N]
             [--resources JSON] [--retries N] [--timeout SECONDS]
             [--push a,b] [--pull x,y] [--name LABEL]
    %remote [options] STATEMENT
    %autoremote on [options] | off
    %cluster [start [-n N] | stop | scale N [--host HOST] | connect ADDRESS]
"""
from __future__ import annotations

import argparse
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class


from ..core import api, backend, runtime
from .autoremote import AutoRemote
from .background import BackgroundCells
from .cells import RemoteCells
from .cluster import ClusterControl, ClusterView
from .options import LINE_PARSER, UsageParser, help_text, parse_cell_line, split_line
from .output import ConsoleSink, KernelSink, OutputRouter


def _cluster_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="%cluster", add_help=False,
                    description="Show the shoal cluster, or start, stop, scale or connect to one.")
    sub = p.add_subparsers(dest="command", parser_class=UsageParser)
    start = sub.add_parser("start", add_help=False, help="start an embedded local cluster")
    start.add_argument("-n", "--num-cpus", type=int, default=None, metavar="N",
                       help="engines (CPUs) to start")
    start.add_argument("--ssh", default=None, metavar="HOSTS",
                       help="also start hosts over SSH: user@host1:4,host2")
    sub.add_parser("stop", add_help=False, help="stop the cluster (or disconnect from it)")
    scale = sub.add_parser("scale", add_help=False, help="set a host's number of engines")
    scale.add_argument("engines", type=int, metavar="N")
    scale.add_argument("--host", default=None, help="the host (needed with several hosts)")
    connect = sub.add_parser("connect", add_help=False, help="connect to a running cluster")
    connect.add_argument("address", metavar="ADDRESS", help="HOST:PORT, or auto")
    return p


_CLUSTER_PARSER = _cluster_parser()


@magics_class
class ShoalMagics(Magics):
    """shoal's magics for one IPython shell, and the state they share."""

    def __init__(self, shell) -> None:
        super().__init__(shell)
        kernel = getattr(shell, "kernel", None)
        self.router = OutputRouter(KernelSink(kernel) if kernel is not None else ConsoleSink())
        self.cluster = ClusterControl(self.router)
        self.background = BackgroundCells(shell, self.router)
        self.cells = RemoteCells(shell, self.router, self.cluster, self.background)
        self.background.cells = self.cells
        self.cluster.on_stop.append(self.cells.forget_cluster)
        self.autoremote_transformer = AutoRemote(shell)

    @line_magic
    def timeline(self, line: str):
        """%timeline [PATH]: the live task timeline (a lane per engine, a bar per task run);
        with PATH ending in .json (a Chrome/Perfetto trace) or .parquet, export it there."""
        usage = "usage: %timeline [PATH.json | PATH.parquet]\n%timeline: error: "
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{usage}{exc}") from None
        if len(args) > 1:
            raise UsageError(f"{usage}at most one path")
        self.cluster.ensure()
        from .. import widgets
        if not args:
            return widgets.timeline()
        try:
            written = widgets.timeline(args[0])
        except ValueError as exc:
            raise UsageError(f"{usage}{exc}") from None
        print(f"Wrote the task timeline to {written}")
        return None

    @line_magic
    def objects(self, line: str):
        """%objects: the live object store: memory per host, and the objects (sortable)."""
        if line.strip():
            raise UsageError("usage: %objects\n%objects: error: takes no arguments")
        self.cluster.ensure()
        from .. import widgets
        return widgets.objects()

    @line_cell_magic
    def remote(self, line: str, cell: str | None = None):
        if cell is None:
            opts, statement = split_line(line)
            if opts.help:
                print(help_text("%remote"))
                return None
            if not statement:
                raise UsageError(f"{LINE_PARSER.format_usage()}%remote: error: nothing to run "
                                 f"(%remote [options] STATEMENT)")
            return self.cells.run(statement, opts, None)
        opts = parse_cell_line(line)
        if opts.help:
            print(help_text("%%remote"))
            return None
        return self.cells.run(cell, opts, f"%%remote {line}".rstrip())

    remote.__doc__ = ("Run a cell (%%remote) or one statement (%remote) on the shoal cluster.\n\n"
                      "Names the code reads that the notebook defines are sent with it; names it "
                      "assigns come back; the value of its last expression is the result. Output, "
                      "displays and errors show in this cell; interrupting the kernel cancels "
                      "the remote work.\n\n" + help_text("%%remote"))

    @line_magic
    def autoremote(self, line: str):
        """%autoremote on [options] | off: run every following cell as if it
        began with `%%remote [options]`.  Cells that start with % or ! stay local."""
        word, _, rest = line.strip().partition(" ")
        if word == "on":
            parse_cell_line(rest)                 # bad options fail now, not at every cell
            self.autoremote_transformer.enable(rest)
            print("autoremote is on: cells run on the shoal cluster (%autoremote off to stop)")
        elif word == "off":
            if rest.strip():
                raise UsageError("usage: %autoremote on [options] | off\n"
                                 "%autoremote: error: off takes no options")
            self.autoremote_transformer.disable()
            print("autoremote is off")
        elif not word:
            state = "on" if self.autoremote_transformer.enabled else "off"
            print(f"autoremote is {state}")
        else:
            raise UsageError(f"usage: %autoremote on [options] | off\n"
                             f"%autoremote: error: expected on or off, got {word!r}")

    @line_magic
    def cluster(self, line: str):
        """%cluster [start [-n N] | stop | scale N [--host HOST] | connect ADDRESS]:
        show the shoal cluster, or start, stop, scale or connect to one."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{_CLUSTER_PARSER.format_usage()}%cluster: error: {exc}") from None
        args = _CLUSTER_PARSER.parse_args(argv)
        if args.command is None:
            self.cluster.attach()
            return ClusterView()
        if args.command == "start":
            if self._running():
                raise UsageError("%cluster: error: a cluster is already running here "
                                 "(%cluster stop first)")
            hosts = [h for h in (args.ssh or "").split(",") if h]
            print(self.cluster.start(num_cpus=args.num_cpus, hosts=hosts))
        elif args.command == "stop":
            if not self._running():
                print("No shoal cluster is running.")
                return None
            self.cluster.stop()
            self.background.join()
            print("Stopped the shoal cluster.")
        elif args.command == "scale":
            self.cluster.ensure()
            try:
                api.scale(args.engines, host_id=args.host)
            except ValueError as exc:
                raise UsageError(f"%cluster scale: error: {exc}") from None
            print(f"Scaling to {args.engines} engine(s).")
        elif args.command == "connect":
            print(self.cluster.connect(args.address))
        return None

    def _running(self) -> bool:
        if backend.active is not None:
            return True
        rt = runtime.current_or_none()
        return rt is not None and not rt.client.lost

    # ------------------------------------------------------------------ events
    def pre_run_cell(self, *args) -> None:
        """Route the output of tasks submitted in this cell, whoever started the cluster."""
        self.router.new_cell()
        self.cluster.attach()

    def post_run_cell(self, result) -> None:
        """The output of the work the cell waited for is shown before the cell
        ends (a backend that routes it apart from results hands it over now).
        An interrupted cell (KeyboardInterrupt, e.g. in shoal.get or wait)
        cancels the tasks it submitted that are still pending or running."""
        if backend.active is not None:
            try:
                backend.active.flush_output()
            except Exception as exc:          # the cluster went: its output with it
                print(f"shoal: cell output may be incomplete: {exc}", file=sys.stderr)
        if not isinstance(result.error_in_exec, KeyboardInterrupt):
            return
        if backend.current().cancel_cell(self.router):
            print("shoal: cancelled this cell's tasks on the cluster", file=sys.stderr)
