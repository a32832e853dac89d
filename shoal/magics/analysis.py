"""What a cell reads and writes: the namespace analysis behind `%%remote`.

`analyze(source)` parses a cell (plain Python; it raises SyntaxError as
`compile` would) and reports, from Python's own symbol tables and the tree:

- `reads`: names the cell may look up in the notebook namespace — at top
  level (augmented assignment reads its target too), or as globals inside
  the functions, classes, lambdas and comprehensions it defines.  Names it
  may unbind are read too (`del x` needs x; an `except ... as x` that does
  not run leaves the notebook's x).
- `writes`: names it binds at top level (assignments, `for`/`with`/`except`
  targets, `def`, `class`, imports, walrus, match captures) or as declared
  globals in functions.
- `deletes`: names the cell may unbind: a `del` anywhere in its top-level
  code (or of a declared global in a function), and `except ... as NAME`,
  which Python unbinds at the end of the handler.
- `imports`: names bound only by imports (a `--bg` cell leaves them remote).
- `star_imports`: modules of `from MODULE import *` (which names those bind
  is known only where the import runs).
- with `transform`, magics (`%%time`, `%time STMT`, `%%capture`, ...) count
  by the Python they run.
- `has_result`: the last statement is an expression, whose value is the
  cell's result (as IPython's `last_expr` rule); `quiet` when the cell ends
  with `;`, which hides the result as in a local cell.

The analysis over-approximates reads (a name read after the cell assigned
it, or only under a branch not taken, still counts); the caller ships only
the reads the notebook defines.  Comprehension variables and the locals of
inner scopes are not names of the cell, as when it runs locally.
"""
from __future__ import annotations

import ast
import io
import symtable
import tokenize
from dataclasses import dataclass

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class CellAnalysis:
    reads: frozenset
    writes: tuple          # in first-binding order
    deletes: frozenset
    imports: frozenset     # names bound only by import statements
    has_result: bool
    quiet: bool
    star_imports: tuple = ()


# Magics that run code in the notebook namespace (their code's names count;
# %timeit runs it in a namespace of its own, so it only reads).
_RUNS_CODE = {"time": True, "prun": True, "capture": True, "timeit": False}


def analyze(source: str, filename: str = "<cell>", transform=None) -> CellAnalysis:
    """`transform` (IPython's transform_cell), if given, is how the code of
    magics such as `%%time` or `%time STATEMENT` becomes Python: their names
    count as the cell's own."""
    cell = _analyze(source, filename)
    if transform is None:
        return cell
    for kind, name, line, body in magic_calls(ast.parse(source, filename)):
        for code, binds in _magic_code(kind, name, line, body):
            try:
                inner = analyze(transform(code), filename, transform)
            except SyntaxError:
                continue                       # the magic reports its own syntax errors
            cell = _merge(cell, inner, binds)
        if name == "capture" and kind == "cell":
            words = [w for w in line.split() if not w.startswith("-")]
            if words:
                cell = _merge(cell, CellAnalysis(frozenset(), (words[0],), frozenset(),
                                                 frozenset(), False, False), True)
    return cell


def magic_calls(tree: ast.AST) -> list:
    """("line" | "cell", magic name, line, body) of each
    `get_ipython().run_line_magic/run_cell_magic(...)` call with literal
    arguments (what IPython makes of `%name line` and `%%name line`)."""
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run_line_magic", "run_cell_magic")
                and isinstance(node.func.value, ast.Call)
                and isinstance(node.func.value.func, ast.Name)
                and node.func.value.func.id == "get_ipython"):
            continue
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
                for a in node.args]
        if not args or args[0] is None:
            continue
        kind = "line" if node.func.attr == "run_line_magic" else "cell"
        line = args[1] if len(args) > 1 and args[1] is not None else ""
        body = args[2] if kind == "cell" and len(args) > 2 else None
        out.append((kind, args[0], line, body))
    return out


def _magic_code(kind: str, name: str, line: str, body) -> list:
    """(code, binds) pieces of Python a magic runs: the cell body, the
    statement of a line magic (options dropped), the setup of %%timeit."""
    if name not in _RUNS_CODE:
        return []
    binds = _RUNS_CODE[name]
    pieces = []
    if kind == "cell" and body is not None:
        pieces.append((body, binds))
    if name in ("time", "timeit", "prun") and line.strip():
        pieces.append((_without_options(line), binds))
    return pieces


def _without_options(line: str) -> str:
    """A %timeit/%prun statement without its leading -x [value] options."""
    words = line.split(" ")
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option[1:2] in ("n", "r", "p", "s", "T", "D", "l") and len(option) == 2 and words:
            words.pop(0)                       # an option with a value
    return " ".join(words)


def _merge(cell: CellAnalysis, inner: CellAnalysis, binds: bool) -> CellAnalysis:
    writes = dict.fromkeys(cell.writes)
    if binds:
        writes.update(dict.fromkeys(inner.writes))
    return CellAnalysis(cell.reads | inner.reads, tuple(writes),
                        cell.deletes | (inner.deletes if binds else frozenset()),
                        cell.imports | (inner.imports if binds else frozenset()),
                        cell.has_result, cell.quiet,
                        cell.star_imports + (inner.star_imports if binds else ()))


def _analyze(source: str, filename: str) -> CellAnalysis:
    tree = ast.parse(source, filename)
    table = symtable.symtable(source, filename, "exec")
    reads: set = set()
    writes: dict = {}
    imports = set()
    for sym in table.get_symbols():
        name = sym.get_name()
        if sym.is_referenced():
            reads.add(name)
        if sym.is_assigned() or sym.is_imported():
            writes[name] = None
        if sym.is_imported() and not sym.is_assigned():
            imports.add(name)
    declared_global: set = set()
    _nested(table, reads, writes, declared_global)
    top = _TopLevel(declared_global)
    top.visit(tree)
    deletes = top.deleted | top.handler_names
    reads |= top.augmented | deletes     # shipped, so that "gone at the end" means unbound
    for name in top.deleted:        # `del x` marks x assigned; only a real binding counts
        if not top.binds(name):
            writes.pop(name, None)
    has_result = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    return CellAnalysis(frozenset(reads), tuple(writes), frozenset(deletes),
                        frozenset(imports - top.deleted), has_result,
                        has_result and _ends_with_semicolon(source), tuple(top.star))


def _nested(table: symtable.SymbolTable, reads: set, writes: dict, declared: set) -> None:
    for child in table.get_children():
        for sym in child.get_symbols():
            if not sym.is_global():
                continue
            if sym.is_referenced():
                reads.add(sym.get_name())
            if sym.is_declared_global():
                declared.add(sym.get_name())
                if sym.is_assigned():
                    writes[sym.get_name()] = None
        _nested(child, reads, writes, declared)


class _TopLevel(ast.NodeVisitor):
    """What symtable does not say: augmented targets (read and written),
    deletions, except-as names, star imports, and which names something
    other than `del` binds.  Inner scopes count only for names they declare
    global."""

    def __init__(self, declared_global: set) -> None:
        self.declared_global = declared_global
        self.augmented: set = set()
        self.deleted: set = set()
        self.handler_names: set = set()
        self.bound: set = set()
        self.star: list = []
        self.depth = 0

    def _counts(self, name: str) -> bool:
        return self.depth == 0 or name in self.declared_global

    def binds(self, name: str) -> bool:
        return name in self.bound

    def generic_visit(self, node):
        inner = isinstance(node, _SCOPES)
        if inner:
            if not isinstance(node, (ast.Lambda, *_SCOPES[4:])) and self.depth == 0:
                self.bound.add(node.name)
            self.depth += 1
        super().generic_visit(node)
        if inner:
            self.depth -= 1

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store) and self._counts(node.id):
            self.bound.add(node.id)
        elif isinstance(node.ctx, ast.Del) and self._counts(node.id):
            self.deleted.add(node.id)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name) and self._counts(node.target.id):
            self.augmented.add(node.target.id)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name and self._counts(node.name):
            self.bound.add(node.name)
            self.handler_names.add(node.name)
        self.generic_visit(node)

    def visit_Import(self, node) -> None:
        if self.depth == 0:
            for alias in node.names:
                self.bound.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if self.depth == 0:
            for alias in node.names:
                if alias.name == "*":
                    self.star.append("." * node.level + (node.module or ""))
                else:
                    self.bound.add(alias.asname or alias.name)

    def _capture(self, name) -> None:
        if name and self._counts(name):
            self.bound.add(name)

    def visit_MatchAs(self, node) -> None:
        self._capture(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node) -> None:
        self._capture(node.name)

    def visit_MatchMapping(self, node) -> None:
        self._capture(node.rest)
        self.generic_visit(node)


def _ends_with_semicolon(source: str) -> bool:
    last = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                last = tok
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"
