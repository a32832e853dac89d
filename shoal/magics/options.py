"""The options of `%%remote` and `%remote`, parsed argparse-style.

A bad option raises IPython's UsageError carrying argparse's usage line and
message, which IPython shows without a traceback.
"""
from __future__ import annotations

import argparse
import io
import json
import shlex
from dataclasses import dataclass
from typing import Optional

from IPython.core.error import UsageError


@dataclass(frozen=True)
class CellOptions:
    bg: bool = False
    all: bool = False
    on: Optional[str] = None
    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None
    resources: Optional[dict] = None
    retries: Optional[int] = None
    timeout: Optional[float] = None
    push: Optional[tuple] = None
    pull: Optional[tuple] = None
    name: Optional[str] = None
    auto: bool = False          # the cell came from %autoremote: no magic line to skip
    help: bool = False


class UsageParser(argparse.ArgumentParser):
    """argparse, with errors raised as IPython UsageErrors (usage line first)."""

    def error(self, message):
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")

    def exit(self, status=0, message=None):
        raise UsageError(message or f"{self.prog}: exit {status}")


def _names(text: str) -> tuple:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise argparse.ArgumentTypeError(f"not a Python name: {bad[0]!r}")
    return names


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"GPU_A100\": 1}}', "
                                         f"got {text!r}")
    return value


def _non_negative(kind):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
        return value
    convert.__name__ = kind.__name__
    return convert


def make_parser(prog: str) -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, add_help=False, allow_abbrev=False,
                description="Run Python code on the shoal cluster as one task.")
    p.add_argument("-h", "--help", action="store_true", help="show this help")
    p.add_argument("--bg", action="store_true",
                   help="run in the background: return at once, bind each assigned name to an "
                        "ObjectRef for its future value")
    p.add_argument("--all", action="store_true",
                   help="run on every engine; names and the result come back as lists")
    p.add_argument("--on", metavar="NAME",
                   help="run in the named persistent namespace (an actor), created on first use")
    p.add_argument("--num-cpus", type=_non_negative(float), metavar="N", help="CPUs the cell needs")
    p.add_argument("--num-gpus", type=_non_negative(float), metavar="N", help="GPUs the cell needs")
    p.add_argument("--resources", type=_json_dict, metavar="JSON",
                   help="custom resources, e.g. '{\"memory_gb\": 8}'")
    p.add_argument("--retries", type=_non_negative(int), metavar="N",
                   help="run again up to N times if it fails (an exception or a lost engine)")
    p.add_argument("--timeout", type=_non_negative(float), metavar="SECONDS",
                   help="cancel the cell if it runs longer")
    p.add_argument("--push", type=_names, metavar="a,b",
                   help="send exactly these names (instead of the names the cell reads)")
    p.add_argument("--pull", type=_names, metavar="x,y",
                   help="bring back exactly these names (instead of the names the cell assigns)")
    p.add_argument("--name", metavar="LABEL", help="the task's name, shown in widgets")
    p.add_argument("--_auto", dest="auto", action="store_true", help=argparse.SUPPRESS)
    return p


CELL_PARSER = make_parser("%%remote")
LINE_PARSER = make_parser("%remote")
_VALUED = {a for action in CELL_PARSER._actions if action.nargs is None and action.option_strings
           for a in action.option_strings}


def _check(opts: CellOptions, parser: argparse.ArgumentParser) -> CellOptions:
    if opts.all and opts.on is not None:
        parser.error("--all and --on cannot be combined")
    if opts.on is not None and opts.retries is not None:
        parser.error("--retries does not apply to --on (a namespace keeps state, so its cells "
                     "are not run twice)")
    if opts.on is not None and not opts.on.strip():
        parser.error("--on needs a non-empty name")
    return opts


def parse_cell_line(line: str) -> CellOptions:
    """The options on a `%%remote` line."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{CELL_PARSER.format_usage()}%%remote: error: {exc}") from None
    ns = CELL_PARSER.parse_args(argv)
    return _check(CellOptions(**vars(ns)), CELL_PARSER)


def split_line(line: str) -> tuple[CellOptions, str]:
    """`%remote [options] STATEMENT`: the options, and the statement untouched."""
    stream = io.StringIO(line)
    lexer = shlex.shlex(stream, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    argv: list = []
    start = 0
    expect_value = False
    while True:
        at = stream.tell()
        try:
            token = lexer.get_token()
        except ValueError:           # an unbalanced quote: the statement's business
            token = None
            expect_value = False
        if token is None or token == lexer.eof:
            start = len(line)
            break
        if expect_value or token.startswith("-"):
            argv.append(token)
            expect_value = not expect_value and "=" not in token and token in _VALUED
            continue
        start = at
        break
    if expect_value:
        start = len(line)
    ns = LINE_PARSER.parse_args(argv)
    return _check(CellOptions(**vars(ns)), LINE_PARSER), line[start:].strip()


def help_text(prog: str) -> str:
    return (CELL_PARSER if prog == "%%remote" else LINE_PARSER).format_help()
