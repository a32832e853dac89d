"""shoal's layers go one way: a part of the package imports only from its own
layer or the ones below, and no two parts import each other, even through
others.  Bottom to top:

    protocol, exceptions, session    the wire, the error types, a process's setup
    store                            shared-memory objects, spilling, transfers
    scheduler, engine, launch        the cluster's processes (each its own program)
    core                             the client: runtime, refs, the API calls
    actor, util, widgets, magics,    what is built on the API: Ray's compat
      dashboard, backends            modules, the notebook and the server extension,
                                     other engines (Ray) behind core's backend interface
                                     (core loads one by the name in backend.SCHEMES)
    kernel, __init__ (the facade)    the Jupyter kernel; `shoal/__init__.py`, which
                                     assembles the public API from the layers
    cli, __main__                    the command line

Every import counts: module level or inside a function, `import`, `from ...
import` in absolute or relative form (`from . import x` names the module x),
and importlib.import_module / __import__ of a literal name.  Starting a
process by module name (`spawn("shoal.scheduler", ...)`) is not an import:
the launchers start programs of any layer.
"""
from __future__ import annotations

import ast
import os
import textwrap
from dataclasses import dataclass
from typing import Optional

import pytest

import shoal

FACADE = "__init__"   # the package's own __init__ (the facade), as the map names it
LAYERS: list[set] = [
    {"protocol", "exceptions", "session"},
    {"store"},
    {"scheduler", "engine", "launch"},
    {"core"},
    {"actor", "util", "widgets", "magics", "dashboard", "backends"},
    {"kernel", FACADE},
    {"cli", "__main__"},
]


@dataclass(frozen=True)
class Import:
    module: str          # the importing module, e.g. shoal.core.api
    line: int
    target: str          # the imported module, e.g. shoal.launch.launcher

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def package_modules(root: str, package: str) -> dict:
    """{module name: file} for every .py file under root (the package's folder)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = os.path.join(folder, name)
    return found


def imports_of(module: str, path: str, modules: dict, package: str) -> list:
    """The imports of the package's own modules that one module makes, anywhere in it."""
    is_package = os.path.basename(path) == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []

    def add(line: int, target: Optional[str]) -> None:
        if target and (target == package or target.startswith(package + ".")):
            found.append(Import(module, line, target))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(here) - 1:
                    continue                  # beyond the top: not ours
                base = ".".join(here[:len(here) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:        # `from . import x`: the module x, if it is one
                sub = f"{base}.{alias.name}"
                add(node.lineno, sub if sub in modules else base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                add(node.lineno, node.args[0].value)
    return found


def part_of(module: str, package: str) -> str:
    """The part of the package a module belongs to: its subpackage, or its
    top-level module, or the facade (the package's __init__)."""
    rest = module[len(package) + 1:]
    return rest.split(".")[0] if rest else FACADE


def check_layers(root: str, package: str, layers: list) -> list:
    """Every import that goes up a layer, every part not in the map, and every
    cycle between parts (with the imports that make it), as lines of text."""
    rank = {part: i for i, parts in enumerate(layers) for part in parts}
    modules = package_modules(root, package)
    problems, edges = [], {}
    for module, path in modules.items():
        for imp in imports_of(module, path, modules, package):
            src, dst = part_of(imp.module, package), part_of(imp.target, package)
            if src == dst:
                continue
            for part in (src, dst):
                if part not in rank:
                    problems.append(f"{part!r} is in no layer: {imp}")
            if src in rank and dst in rank and rank[dst] > rank[src]:
                problems.append(f"upward import ({src} -> {dst}): {imp}")
            edges.setdefault((src, dst), []).append(imp)
    for cycle in _cycles({pair[0] for pair in edges}, edges):
        where = "; ".join(str(imp) for a, b in zip(cycle, cycle[1:] + cycle[:1])
                          for imp in edges[(a, b)][:1])
        problems.append(f"cycle {' -> '.join(cycle + cycle[:1])}: {where}")
    return sorted(set(problems))


def _cycles(nodes: set, edges: dict) -> list:
    """One cycle through each group of parts that reach each other."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)

    def path(start: str, goal: str) -> Optional[list]:
        seen, stack = {start}, [[start]]
        while stack:
            trail = stack.pop()
            for nxt in sorted(succ.get(trail[-1], ())):
                if nxt == goal:
                    return trail
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(trail + [nxt])
        return None

    cycles, covered = [], set()
    for node in sorted(nodes):
        if node in covered:
            continue
        trail = path(node, node)
        if trail:
            cycles.append(trail)
            covered.update(trail)
    return cycles


# --------------------------------------------------------------------- shoal itself
def test_shoal_imports_go_one_way():
    root = os.path.dirname(shoal.__file__)
    problems = check_layers(root, "shoal", LAYERS)
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_every_part_of_shoal_has_a_layer():
    root = os.path.dirname(shoal.__file__)
    parts = {part_of(m, "shoal") for m in package_modules(root, "shoal")}
    placed = set().union(*LAYERS)
    assert parts - placed == set()
    assert placed - parts == set(), "the map names parts that no longer exist"


def test_the_engine_never_imports_core():
    """The cycle this map was made to end: the engine gets core's services
    handed to it (shoal.engine.services), by shoal.core.worker."""
    root = os.path.dirname(shoal.__file__)
    modules = package_modules(root, "shoal")
    bad = [str(imp) for m, p in modules.items() if m.startswith("shoal.engine")
           for imp in imports_of(m, p, modules, "shoal")
           if part_of(imp.target, "shoal") in ("core", FACADE)]
    assert bad == []


# The magics call the public API, from its homes below the facade (the
# modules whose names `shoal` and `shoal.util` export), and the widgets beside
# them.  What they take beyond that, and why; a new entry needs its reason.
PUBLIC_HOMES = {"shoal.core.api", "shoal.core.object_ref", "shoal.exceptions", "shoal.util",
                "shoal.util.state"}
MAGICS_BEYOND_THE_API = {
    "shoal.core.runtime": "the runtime handle: output routing attaches to its client; "
                          "whether a cluster runs, without starting one",
    "shoal.core.client": "print_output, the client's own output handler, put back on detach",
    "shoal.core.context": "implicit_resource: the resources %cluster does not list",
    "shoal.protocol.messages": "CancelTask by task id: an interrupted cell knows its tasks "
                               "by id only (it holds no refs to them)",
    "shoal.protocol.serialization": "whether a value can travel, decided in the kernel "
                                    "before a cell ships",
    "shoal.engine.display": "the runner's half of %%remote runs on the engine, in its "
                            "shell; EXTRA_KEY is the display's wire key",
    "shoal.launch.agent": "available_cpus: what `%cluster start` will get",
    "shoal.core.backend": "the backend interface: what differs between engines (refs, "
                          "--all's workers, output routes, an interrupted cell's tasks)",
}


def test_magics_use_the_public_api_and_the_listed_exceptions():
    root = os.path.dirname(shoal.__file__)
    modules = package_modules(root, "shoal")
    used, bad = set(), []
    for module, path in modules.items():
        if part_of(module, "shoal") != "magics":
            continue
        for imp in imports_of(module, path, modules, "shoal"):
            target = imp.target
            if part_of(target, "shoal") in ("magics", "widgets") or target in PUBLIC_HOMES:
                continue
            used.add(target)
            if target not in MAGICS_BEYOND_THE_API:
                bad.append(str(imp))
    assert bad == [], "the magics reach past the public API (list it, with why):\n" + \
        "\n".join(bad)
    assert set(MAGICS_BEYOND_THE_API) - used == set(), "listed but no longer used"


# --------------------------------------------------------------------- the checker
def make_tree(tmp_path, files: dict) -> str:
    root = tmp_path / "pkg"
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return str(root)


TOY_LAYERS = [{"low"}, {"mid"}, {"high", "side"}, {FACADE}]


def test_checker_passes_a_tree_that_goes_one_way(tmp_path):
    root = make_tree(tmp_path, {
        "__init__.py": "from .high import h\n",
        "low/__init__.py": "",
        "low/a.py": "import os\n",
        "mid/__init__.py": "from ..low import a\n",
        "mid/b.py": "from pkg.low.a import os\nfrom . import c\n",
        "mid/c.py": "",
        "high/__init__.py": "from ..mid import b\nfrom .. import side\n",
        "side.py": "import pkg.low.a\n",
    })
    assert check_layers(root, "pkg", TOY_LAYERS) == []


@pytest.mark.parametrize("source, line", [
    ("from ..mid import b\n", 1),                                     # relative, module level
    ("import os\n\ndef later():\n    import pkg.mid.b\n", 4),          # absolute, in a function
    ("class K:\n    def m(self):\n        from .. import mid\n", 3),  # `from .. import x`
    ("from pkg.mid.b import thing\n", 1),                              # a name from a module
    ("import importlib\nimportlib.import_module('pkg.mid')\n", 2),     # by name
    ("try:\n    pass\nexcept ImportError:\n    from ..mid.b import x\n", 4),
])
def test_checker_finds_an_upward_import_wherever_it_hides(tmp_path, source, line):
    root = make_tree(tmp_path, {
        "__init__.py": "", "low/__init__.py": "", "low/a.py": source,
        "mid/__init__.py": "", "mid/b.py": "",
    })
    problems = check_layers(root, "pkg", TOY_LAYERS)
    assert len(problems) == 1, problems
    assert problems[0].startswith("upward import (low -> mid): pkg.low.a "
                                  f"(line {line}) imports pkg.mid")


def test_checker_finds_a_cycle_within_a_layer(tmp_path):
    root = make_tree(tmp_path, {
        "__init__.py": "",
        "high/__init__.py": "",
        "high/x.py": "def f():\n    from ..side import y\n",
        "side/__init__.py": "",
        "side/y.py": "from ..high import x\n",
    })
    problems = check_layers(root, "pkg", TOY_LAYERS)
    assert problems == ["cycle high -> side -> high: pkg.high.x (line 2) imports pkg.side.y; "
                        "pkg.side.y (line 1) imports pkg.high.x"]


def test_checker_counts_the_facade_as_a_part(tmp_path):
    """`import pkg` from inside the package is an import of its __init__."""
    root = make_tree(tmp_path, {
        "__init__.py": "from .high import h\n",
        "high/__init__.py": "import pkg\n",
    })
    assert check_layers(root, "pkg", TOY_LAYERS) == [
        "cycle __init__ -> high -> __init__: pkg (line 1) imports pkg.high; "
        "pkg.high (line 1) imports pkg",
        "upward import (high -> __init__): pkg.high (line 1) imports pkg"]


def test_checker_names_a_part_left_out_of_the_map(tmp_path):
    root = make_tree(tmp_path, {"__init__.py": "", "new/__init__.py": "from ..low import a\n",
                                "low/__init__.py": "", "low/a.py": ""})
    assert check_layers(root, "pkg", TOY_LAYERS) == [
        "'new' is in no layer: pkg.new (line 1) imports pkg.low.a"]
