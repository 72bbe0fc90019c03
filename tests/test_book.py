"""The book as a user meets it outside the notebooks: every module imports on its own, every picture function
runs from plain Python, imports flow one way, and the chapters are committed with their outputs."""

import ast, importlib, os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "surgseg"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_"))
# The import order of the contract: a module may import from its own tier (no cycles) or from a lower one.
TIERS = [
    ["core"],
    ["synthetic"],
    ["data"],
    ["imbalance", "sampler", "losses", "models", "metrics"],
    ["runs"],
    ["train"],
    ["evaluate", "inference", "postprocess", "export", "launch"],
    ["cli"],
]
TIER = {m: i for i, ms in enumerate(TIERS) for m in ms}
sys.path.insert(0, str(ROOT / "tools"))
import check_outputs  # noqa: E402


# --- each module on its own ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_imports() -> dict:
    "`python -c 'import surgseg.X'` for every module, a few interpreters at a time: {module: CompletedProcess}."
    from concurrent.futures import ThreadPoolExecutor

    def imp(mod):
        return subprocess.run(
            [sys.executable, "-c", f"import surgseg.{mod}"], capture_output=True, text=True, timeout=600, cwd=ROOT
        )

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as ex:
        return dict(zip(MODULES, ex.map(imp, MODULES)))


@pytest.mark.parametrize("mod", MODULES)
def test_module_imports_in_a_fresh_interpreter(fresh_imports, mod):
    "`import surgseg.X` works alone: nothing an exported cell needs was imported only by the notebook."
    r = fresh_imports[mod]
    assert r.returncode == 0, r.stderr[-3000:]


# --- imports flow one way -----------------------------------------------------------------------------


def surgseg_imports(path: Path) -> set[str]:
    "The surgseg modules a file imports anywhere (module level or inside functions): relative, absolute or importlib."
    found = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            parts = (n.module or "").split(".")
            if n.level == 1:
                found |= {parts[0]} if n.module else {a.name for a in n.names}
            elif n.level == 0 and parts[0] == "surgseg":
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            found |= {a.name.split(".")[1] for a in n.names if a.name.startswith("surgseg.")}
        elif (
            isinstance(n, ast.Call)
            and n.args
            and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str)
            and getattr(n.func, "attr", getattr(n.func, "id", "")) == "import_module"
            and n.args[0].value.startswith("surgseg.")
        ):
            found.add(n.args[0].value.split(".")[1])
    return found & set(MODULES)


def import_graph() -> dict[str, set[str]]:
    return {m: surgseg_imports(PKG / f"{m}.py") - {m} for m in MODULES}


def test_surgseg_imports_parser():
    "The parser sees the spellings nbdev writes and lazy ones inside functions."
    src = (
        "from .core import Config\nfrom . import losses, __version__\nimport surgseg.data\n"
        "def f():\n    from surgseg.train import fit\n    from surgseg import models\n"
        "    importlib.import_module('surgseg.metrics')\n"
    )
    p = ROOT / "tests" / ".imports_probe.py"
    try:
        p.write_text(src)
        assert surgseg_imports(p) == {"core", "losses", "data", "train", "models", "metrics"}
    finally:
        p.unlink()


def test_every_module_has_a_place_in_the_import_order():
    assert not set(MODULES) - set(TIER) - {"__init__"}, f"place these modules in TIERS: {set(MODULES) - set(TIER)}"


def test_nothing_imports_upwards():
    """core < synthetic < data < imbalance, sampler, losses, models, metrics < runs < train < evaluate, inference,
    postprocess, export, launch < cli."""
    upward = [
        f"surgseg.{m} imports surgseg.{i}"
        for m, deps in import_graph().items()
        if m in TIER
        for i in sorted(deps)
        if i in TIER and TIER[i] > TIER[m]
    ]
    assert not upward, "; ".join(upward)


def test_no_import_cycles():
    g = import_graph()

    def reach(m, seen):
        for d in g.get(m, ()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    cycles = sorted(m for m in g if m in reach(m, set()))
    assert not cycles, f"modules on an import cycle: {cycles}"


# --- every picture function from plain Python ---------------------------------------------------------

PICTURES = {"colorize", "overlay", "error_image", "error_panel"}  # picture functions not named plot_*


def picture_functions() -> dict[str, object]:
    "Every exported plot_* function and picture function of every module, by name."
    out = {}
    for m in MODULES:
        mod = importlib.import_module(f"surgseg.{m}")
        for n in getattr(mod, "__all__", []):
            if (
                (n.startswith("plot_") or n in PICTURES)
                and callable(getattr(mod, n))
                and getattr(mod, n).__module__ == mod.__name__
            ):
                out[n] = getattr(mod, n)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny synthetic dataset, its frame table, a frame with ground truth and prediction, and a run folder's metrics."
    import matplotlib

    matplotlib.use("Agg")
    from surgseg.synthetic import generate
    from surgseg.imbalance import frame_table

    tmp = tmp_path_factory.mktemp("book")
    root = generate(tmp / "data", n_train=2, n_test=0, seconds=1, size=(36, 64), split_ops=0, workers=1)
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 10, (36, 64)).astype(np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 10, gt.shape)).astype(np.uint8)
    run = tmp / "run"
    run.mkdir()
    pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.0, 0.5],
            "val_score": [0.2, 0.4],
            "val_miou": [0.3, 0.5],
            "val_mnsd": [0.1, 0.3],
            **{f"iou_{c}": [0.1 * c / 2, 0.1 * c] for c in range(1, 10)},
        }
    ).to_csv(run / "metrics.csv", index=False)
    return dict(
        table=frame_table(root, workers=1),
        rgb=rng.integers(0, 256, (36, 64, 3)).astype(np.uint8),
        gt=gt,
        pred=pred,
        run=run,
    )


def _min_area_tuning():
    from surgseg.core import CLASS_NAMES
    from surgseg.postprocess import MinAreaTuning, choose_min_area

    rng = np.random.default_rng(1)
    cands = [0, 8, 64]
    iou, nsd = rng.random((3, 9)), rng.random((3, 9))
    thr, after = choose_min_area(iou, nsd, cands)
    table = pd.DataFrame(
        {"miou": iou.mean(1), "mnsd": nsd.mean(1), "score": np.sqrt(iou.mean(1) * nsd.mean(1))},
        index=pd.Index(cands, name="min_area"),
    )
    mk = lambda a: pd.DataFrame(a, index=table.index, columns=CLASS_NAMES[1:])
    return MinAreaTuning(thr, table, mk(iou), mk(nsd), dict(table.loc[0]), after, True)


def _breakdown(d):
    from surgseg.metrics import ScoreAccumulator, class_breakdown

    acc = ScoreAccumulator()
    for f in range(2):
        acc.update("video_01", d["pred"], d["gt"], frame=60 * f)
    return class_breakdown(acc.compute())


def _exposure(d):
    from surgseg.sampler import exposure_report

    return exposure_report(d["table"][[f"has_{c}" for c in range(10)]].to_numpy())


def _pixel_report(d):
    from surgseg.core import Config
    from surgseg.sampler import pixel_report

    masks = [d["gt"], d["pred"]]
    presence = np.stack([np.bincount(m.ravel(), minlength=10) > 0 for m in masks])
    return pixel_report(masks, presence, Config(), crop_size=16, crop_rare=0.5, draws=2)


RECIPES = {  # name: f(function, tiny data) -> the function called on small data
    "colorize": lambda fn, d: fn(d["gt"]),
    "overlay": lambda fn, d: fn(d["rgb"], d["gt"]),
    "plot_legend": lambda fn, d: fn(),
    "plot_class_shares": lambda fn, d: fn(importlib.import_module("surgseg.imbalance").class_summary(d["table"])),
    "plot_presence_maps": lambda fn, d: fn(d["table"]),
    "plot_exposure": lambda fn, d: fn(*_exposure(d)),
    "plot_pixel_exposure": lambda fn, d: fn(_pixel_report(d)),
    "plot_breakdown": lambda fn, d: (fn(_breakdown(d)), fn(_breakdown(d), metric="nsd")),
    "plot_history": lambda fn, d: fn(d["run"]),
    "plot_confusion": lambda fn, d: fn(importlib.import_module("surgseg.metrics").confusion(d["pred"], d["gt"])),
    "error_image": lambda fn, d: fn(d["rgb"], d["gt"], d["pred"]),
    "error_panel": lambda fn, d: fn(d["rgb"], d["gt"], d["pred"], title="frame 0"),
    "plot_min_area": lambda fn, d: fn(_min_area_tuning()),
}


def test_every_picture_function_has_a_recipe():
    missing = sorted(set(picture_functions()) - set(RECIPES))
    assert not missing, f"picture functions without a recipe in tests/test_book.py RECIPES: {missing}"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_picture_function_runs_from_python(tiny, name):
    "Each picture function, called from Python with the Agg backend, draws (or returns an image) without a NameError."
    import matplotlib.pyplot as plt

    fns = picture_functions()
    if name not in fns:
        pytest.fail(f"{name} is in RECIPES but no module exports it any more: remove its recipe")
    before = set(plt.get_fignums())
    out = RECIPES[name](fns[name], tiny)
    if isinstance(out, np.ndarray) and out.dtype != object:
        assert out.dtype == np.uint8 and out.shape[-1] == 3 and out.size
    else:
        assert set(plt.get_fignums()) - before, f"{name} drew no figure"
    plt.close("all")


# --- the chapters show their outputs (tools/check_outputs.py) -------------------------------------------


def _nb(tmp_path, *cells, name="nb.ipynb"):
    "A notebook of (source, outputs, tags) code cells."
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    nb = new_notebook()
    for src, outs, *tags in cells:
        c = new_code_cell(src, outputs=[new_output("stream", name="stdout", text="x\n")] * outs)
        if tags:
            c.metadata["tags"] = tags[0]
        nb.cells.append(c)
    p = tmp_path / name
    nbformat.write(nb, p)
    return p


def test_check_outputs_rules(tmp_path):
    check = check_outputs.check
    ok = _nb(
        tmp_path,
        ("#| export\ndef f(): return 1", 0),
        ("#| hide\nimport numpy as np", 0),
        ("a = 1", 0),
        ("test_eq(f(), 1)", 0),
        ("x = f()\nprint(x)", 1),
        ("f()", 1),
        ("f();", 0),
        ("lr = 0.1  # a parameter", 0, ["parameters"]),
        ("#| eval: false\nf()", 0),
        ("def g():\n    print(1)", 0),
        ("results.to_csv('r.csv')", 0),
        ("ax = plot_thing(t)\nplt.close(ax.figure)", 0),
        ("'''a note'''", 0),
    )
    assert check(ok) == []
    for src, why in [
        ("f()", "ends with an expression"),
        ("print(1)\na = 2", "calls print()"),
        ("x = 1\nx", "ends with an expression"),
        ("plot_history(run)", "draws with plot_history()"),
        ("!ls", "shell command"),
        ("%%time\nf()", "cell magic"),
    ]:
        bad = _nb(tmp_path, ("print('shown')", 1), (src, 0), name="bad.ipynb")
        problems = check(bad)
        assert len(problems) == 1 and why in problems[0] and "code cell 1" in problems[0], (src, problems)
    unexecuted = _nb(tmp_path, ("#| export\ndef f(): return 1", 0), ("a = f()", 0), name="unexecuted.ipynb")
    assert check(unexecuted) == [
        "unexecuted.ipynb: no outputs at all "
        "(execute it: python tools/run_book.py nbs/unexecuted.ipynb, then nbdev_clean)"
    ]
    assert check(_nb(tmp_path, ("#| export\ndef f(): return 1", 0), name="library_only.ipynb")) == []
    import nbformat
    from nbformat.v4 import new_output

    failed = nbformat.read(_nb(tmp_path, ("print('shown')", 1), ("1 / 0", 0), name="failed.ipynb"), as_version=4)
    failed.cells[1].outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
    nbformat.write(failed, tmp_path / "failed.ipynb")
    assert check(tmp_path / "failed.ipynb") == [
        "failed.ipynb: code cell 1 (1 / 0): committed with an error (ZeroDivisionError)"
    ]
    injected = _nb(
        tmp_path,
        ("seeds = '0,1,2'", 0, ["parameters"]),
        ("# Parameters\nseeds = 0", 0, ["injected-parameters"]),
        ("print(seeds)", 1),
        name="injected.ipynb",
    )
    assert [p.split(":")[1].strip() for p in check(injected)] == ["code cell 1 (# Parameters)"], check(injected)


def test_chapters_show_their_outputs():
    "Every chapter in nbs/ is committed executed: `python tools/check_outputs.py` finds nothing."
    problems = [
        p
        for nb in sorted((ROOT / "nbs").glob("*.ipynb"))
        if not nb.name.startswith("_")
        for p in check_outputs.check(nb)
    ]
    assert not problems, "\n".join(problems)
