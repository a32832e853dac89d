"""Generated notebook cells for the %%remote-equals-local property
(tests/test_remote_semantics.py): Python that exercises every way a cell
reads, binds and unbinds names, over picklable values, and never fails
(each statement reads only names bound to ints at that point, except under
a branch not taken)."""
from hypothesis import strategies as st

NAMES = ("a", "b", "c", "d")


@st.composite
def cells(draw):
    """(initial notebook values, cell source)."""
    initial = {n: draw(st.integers(-5, 5)) for n in NAMES if draw(st.booleans())}
    bound = set(initial)
    lines: list = []
    for _ in range(draw(st.integers(1, 6))):
        lines += draw(_statement(bound))
    if bound and draw(st.booleans()):
        lines.append(draw(st.sampled_from(sorted(bound))) + (";" if draw(st.booleans()) else ""))
    return initial, "\n".join(lines)


def _expr(draw, bound):
    if bound and draw(st.booleans()):
        name = draw(st.sampled_from(sorted(bound)))
        return draw(st.sampled_from([name, f"{name} + 1", f"{name} * 2", f"abs({name})"]))
    return str(draw(st.integers(-3, 3)))


@st.composite
def _statement(draw, bound: set):
    target = draw(st.sampled_from(NAMES))
    other = draw(st.sampled_from(NAMES))
    e = _expr(draw, bound)
    kinds = ["assign", "annotated", "walrus", "for", "except_taken", "except_not_taken",
             "global_fn", "closure", "comprehension", "lambda", "class", "match", "import",
             "print", "branch_not_taken", "shadow_builtin", "nonlocal", "with", "star_import"]
    if target in bound:
        kinds += ["augmented", "delete"]
    kind = draw(st.sampled_from(kinds))
    if kind == "assign":
        out = [f"{target} = {e}"]
    elif kind == "augmented":
        out = [f"{target} += {e}"]
    elif kind == "annotated":
        out = [f"{target}: int = {e}"]
    elif kind == "walrus":
        out = [f"print(({target} := {e}))"]
    elif kind == "for":
        out = [f"for {target} in range(3):", f"    print({target} + ({e}))"]
    elif kind == "except_taken":            # Python unbinds the handler's name afterwards
        bound.discard(target)
        return ["try:", f"    raise ValueError({e})", f"except ValueError as {target}:",
                f"    print('caught', {target})"]
    elif kind == "except_not_taken":        # leaves the name as it was
        bound.add("x_ok")
        return ["try:", f"    x_ok = {e}", f"except ValueError as {target}:", "    pass"]
    elif kind == "delete":
        bound.discard(target)
        return [f"del {target}"]
    elif kind == "global_fn":
        out = ["def set_it():", f"    global {target}", f"    {target} = {e}", "set_it()"]
    elif kind == "closure":                 # a function reading notebook globals at call time
        out = ["def read_it():", f"    return {e}", f"{target} = read_it()"]
    elif kind == "comprehension":           # i does not leak
        out = [f"{target} = sum([i + ({e}) for i in range(3)])"]
    elif kind == "lambda":
        out = [f"h = lambda v: v + ({e})", f"{target} = h(1)"]
    elif kind == "class":
        out = ["class K:", f"    attr = {e}", f"{target} = K.attr"]
    elif kind == "match":
        out = [f"match [{e}, 1]:", f"    case [{target}, q]:", f"        {target} += q"]
        bound.add("q")
    elif kind == "import":
        out = ["import math as M", f"{target} = M.floor({e})"]
    elif kind == "print":
        return [f"print({e}, sep='')"]
    elif kind == "branch_not_taken":
        return ["if False:", f"    print(undefined_{other})", f"    {target} = 1"]
    elif kind == "shadow_builtin":
        out = [f"max = {e}", f"{target} = max"]
        bound.add("max")
    elif kind == "nonlocal":
        out = ["def outer():", f"    v = {e}", "    def inner():", "        nonlocal v",
               "        v += 1", "    inner()", "    return v", f"{target} = outer()"]
    elif kind == "with":
        out = ["import contextlib", f"with contextlib.nullcontext({e}) as {target}:", "    pass"]
    else:                                   # star_import
        out = ["from operator import *", f"{target} = add({e}, 1)"]
    bound.add(target)
    return out
