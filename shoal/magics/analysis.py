"""What a cell reads and writes: the namespace analysis behind `%%remote`.

`analyze(source)` parses a cell (plain Python; it raises SyntaxError as
`compile` would) and reports, from Python's own symbol tables:

- `reads`: names the cell may look up in the notebook namespace — at top
  level, or as globals inside the functions, classes, lambdas and
  comprehensions it defines.  Names it deletes are read too (`del x` needs x).
- `writes`: names it binds at top level (assignments, `for`/`with` targets,
  `def`, `class`, imports, walrus) or as declared globals in functions.
- `deletes`: names a top-level `del` removes.
- `imports`: names bound only by imports (a `--bg` cell leaves them remote).
- `has_result`: the last statement is an expression, whose value is the
  cell's result (as IPython's `last_expr` rule); `quiet` when the cell ends
  with `;`, which hides the result as in a local cell.

The analysis over-approximates reads (a name read after the cell assigned it
still counts); the caller ships only the reads the notebook defines.
"""
from __future__ import annotations

import ast
import io
import symtable
import tokenize
from dataclasses import dataclass


@dataclass(frozen=True)
class CellAnalysis:
    reads: frozenset
    writes: tuple          # in first-binding order
    deletes: frozenset
    imports: frozenset     # names bound only by import statements
    has_result: bool
    quiet: bool


def analyze(source: str, filename: str = "<cell>") -> CellAnalysis:
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
    _nested(table, reads, writes)
    deletes = {t.id for stmt in tree.body if isinstance(stmt, ast.Delete)
               for t in stmt.targets if isinstance(t, ast.Name)}
    reads |= deletes
    for name in deletes:            # `del x` marks x assigned; only a real binding counts
        if not _binds(tree, name):
            writes.pop(name, None)
    has_result = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    return CellAnalysis(frozenset(reads), tuple(writes), frozenset(deletes),
                        frozenset(imports - deletes), has_result,
                        has_result and _ends_with_semicolon(source))


def _nested(table: symtable.SymbolTable, reads: set, writes: dict) -> None:
    for child in table.get_children():
        for sym in child.get_symbols():
            if not sym.is_global():
                continue
            if sym.is_referenced():
                reads.add(sym.get_name())
            if sym.is_declared_global() and sym.is_assigned():
                writes[sym.get_name()] = None
        _nested(child, reads, writes)


def _binds(tree: ast.Module, name: str) -> bool:
    """Whether anything other than `del` binds `name` at top level."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name == name:
            return True
        if isinstance(node, ast.ExceptHandler) and node.name == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == name:
                    return True
    return False


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
