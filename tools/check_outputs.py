#!/usr/bin/env python3
"""Check that the book shows its work: every chapter is committed executed, with its outputs.

    python tools/check_outputs.py [NB ...]     # default: every notebook in nbs/ (not _*.ipynb)

A notebook fails when
1. it has code cells to show but not one output anywhere (a chapter committed unexecuted),
2. a cell's output is an error (a chapter committed with a traceback in it), or
3. one of its code cells displays something but has no output. A cell displays when, outside
   function and class bodies, it
   - ends with an expression (no trailing `;`) other than a call known to return nothing
     (`test_eq`, any `test_*`, `print`, `plt.close`, `.mkdir`, ... see QUIET), or
   - calls `print`, `display`, `show_doc`, `plt.show` or a `plot_*` function (unless it closes the
     figure again), or runs a shell
     command or a cell magic (`!ls`, `%%time`; `%%capture` excepted).
Cells that are not part of the shown book are exempt: `#| export`-style cells (export, exporti,
exports), `#| hide` cells, `#| eval: false` cells and papermill's `parameters` cells.

Exit code 1 with one line per offending cell: `NB: cell N (first line): why`.
"""

import ast, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXEMPT_FLAGS = {"export", "exporti", "exports", "hide"}
EXEMPT_TAGS = {"parameters", "injected-parameters"}
SHOWING = {"print", "display", "show_doc", "show"}  # calls that always write an output
QUIET = {
    "print",
    "setattr",
    "exec",
    "seed",
    "manual_seed",
    "set_seed",
    "sleep",
    "chdir",  # calls returning None
    "close",
    "savefig",
    "to_csv",
    "to_parquet",
    "to_pickle",
    "tight_layout",
    "rmtree",
    "unlink",
    "mkdir",
    "rmdir",
    "remove",
    "makedirs",
    "touch",
    "append",
    "extend",
    "update",
    "clear",
    "insert",
    "sort",
    "reverse",
    "add",
    "discard",
    "set_title",
    "set_xlabel",
    "set_ylabel",
    "set_axis_off",
    "use",
    "filterwarnings",
    "simplefilter",
    "disable",
    "enable",
    "setLevel",
    "basicConfig",
    "register",
    "shutdown",
    "join",
    "wait",
    "kill",
    "terminate",
}


def directives(src: str) -> dict:
    "nbdev's `#| flag [value]` lines at the top of a cell, as {flag: value}."
    out = {}
    for line in src.splitlines():
        m = re.match(r"\s*#\|\s*([\w-]+):?\s*(.*)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
        elif line.strip():
            break
    return out


def exempt(cell: dict) -> bool:
    "Cells that are not part of the shown book: export/hide cells, `eval: false` cells, papermill parameters."
    src = "".join(cell.get("source", ""))
    d = directives(src)
    if EXEMPT_FLAGS & set(d) or d.get("eval", "").lower() == "false":
        return True
    if EXEMPT_TAGS & set(cell.get("metadata", {}).get("tags", [])):
        return True
    return not any(l.strip() and not l.strip().startswith("#") for l in src.splitlines())  # empty or comments only


def _python(src: str) -> str:
    "The cell as plain Python: IPython magics and shell escapes turned into get_ipython() calls."
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(src)
    except ImportError:  # without IPython: a magic line becomes a call that shows
        return "\n".join(
            f"get_ipython().system({l!r})" if l.lstrip()[:1] in "!%" and l.strip() else l for l in src.splitlines()
        )


def _name(call: ast.Call) -> str:
    "The called name: `f` for f(...), `m` for x.m(...)."
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _top_level_calls(tree: ast.AST):
    "Calls outside function, class and lambda bodies."
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(n, ast.Call):
            yield n
        stack.extend(ast.iter_child_nodes(n))


def displays(src: str) -> str | None:
    "Why this cell must show an output, or None if it need not."
    py = _python(src)
    if py.lstrip().startswith("get_ipython().run_cell_magic('capture'"):
        return None
    try:
        tree = ast.parse(py)
    except SyntaxError:
        return None
    calls = list(_top_level_calls(tree))
    closes = any(_name(c) == "close" for c in calls)  # a figure drawn and closed again shows nothing
    for c in calls:
        name = _name(c)
        if (
            name in ("system", "run_cell_magic", "run_line_magic")
            and isinstance(c.func, ast.Attribute)
            and isinstance(c.func.value, ast.Call)
            and _name(c.func.value) == "get_ipython"
        ):
            if name != "run_line_magic" or (
                c.args and isinstance(c.args[0], ast.Constant) and c.args[0].value in ("time", "timeit")
            ):
                return "runs a shell command or cell magic"
            continue
        if name in SHOWING:
            return f"calls {name}()"
        if name.startswith("plot_") and not closes:
            return f"draws with {name}()"
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not src.rstrip().endswith(";"):
        v = last.value
        if isinstance(v, ast.Call) and (_name(v).startswith("test_") or _name(v) in QUIET):
            return None
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            return None  # a bare string: a comment
        if isinstance(v, (ast.Await, ast.Yield, ast.YieldFrom)):
            return None
        return "ends with an expression"
    return None


def _first_line(cell: dict) -> str:
    return next((l.strip() for l in "".join(cell.get("source", "")).splitlines() if l.strip()), "")[:60]


def check(nb_path: Path) -> list[str]:
    "Every problem of one notebook, one line each."
    nb = json.loads(Path(nb_path).read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    shown = [(i, c) for i, c in enumerate(cells) if not exempt(c)]
    name = Path(nb_path).name
    if not shown:
        return []
    if not any(c.get("outputs") for c in cells):
        return [f"{name}: no outputs at all (execute it: python tools/run_book.py nbs/{name}, then nbdev_clean)"]
    problems = [
        f"{name}: code cell {i} ({_first_line(c)}): committed with an error ({o.get('ename', 'error')})"
        for i, c in enumerate(cells)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    problems += [
        f"{name}: code cell {i} ({_first_line(c)}): papermill's injected parameters committed (the notebook "
        "would rerun with them instead of its own defaults); delete the cell"
        for i, c in enumerate(cells)
        if "injected-parameters" in c.get("metadata", {}).get("tags", [])
    ]
    for i, c in shown:
        if c.get("outputs"):
            continue
        src = "".join(c.get("source", ""))
        why = displays(src)
        if why:
            problems.append(f"{name}: code cell {i} ({_first_line(c)}): {why} but has no output")
    return problems


def main(paths: list[str]) -> int:
    nbs = [Path(p) for p in paths] or sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))
    problems = [p for nb in nbs for p in check(nb)]
    for p in problems:
        print(p)
    print(f"check_outputs: {len(nbs)} notebooks, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
