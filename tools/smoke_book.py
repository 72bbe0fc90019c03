#!/usr/bin/env python3
"""Execute the book at smoke scale: every chapter with its `slow` cells, small parameters, copies into a folder.

    python tools/smoke_book.py [--to DIR] [--all] [NB ...]

The README's tests run each chapter as `nbdev_test` does, skipping the cells flagged `slow` (and `notest`,
`gpu`): this runs those chapters again with their slow cells, so the checks in those cells run too. The
expensive chapters get the papermill parameters of `SMOKE` below (one run of a few steps instead of a
study); everything else runs as written. Skipped here: `notest` cells (by definition they need what a
test machine lacks, like the real dataset or the network) and `gpu` cells when torch sees no GPU.

- Default chapters: those with a cell the tests skip (`tst_flags` in settings.ini); the others are executed
  completely by the tests already. `--all`: every chapter. NB: chapters by path or name (`06_train`).
- Each chapter runs with papermill in a fresh kernel from nbs/ (as the tests do) and its executed copy is
  written to DIR (default: a new temporary folder); nbs/ is never written.
- Runs go to DIR/home, a stand-in `$SURGSEG_HOME` that links every entry of the real one (the generated data,
  caches) except `runs`, so the smoke runs never enter the user's run store and the chapters that look for
  chapter 06's run find the smoke one. Rerunning with the same DIR reuses what is there (index needs 09's).
- A failing cell is reported with its chapter, cell number (from 1, markdown cells counted) and first line; the
  other chapters still run; the exit status is 1 if any failed. Per-chapter seconds are printed and written to
  DIR/smoke_times.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# Every chapter run here at a smaller scale than its parameters cell's defaults, with why. Values are papermill
# parameters (each must be a name in the chapter's `parameters` cell: tests/test_smoke_book.py checks); "{home}"
# is the stand-in $SURGSEG_HOME, "{dir}" the output folder.
SMOKE = {
    # one run of the default recipe, 2 epochs of 16 steps (128 crops at batch 8): every cell (untrained score, fit,
    # decisions tuned on validation, history) runs as by default. Not fewer steps: the decision search's cost grows
    # with the pixels whose class is still in doubt, so a nearly untrained model is the slowest to tune, here and in
    # 08a, which tunes this run again (the per-chapter times this tool prints show it). Only fields that
    # `runs.recipe` leaves out change, so it is the default recipe's run that 07a, 08 and 08a find in the run
    # store; out_dir is given so that it never lands in nbs/runs (the default before the run store).
    "06_train": dict(epochs=2, samples_per_epoch=128, out_dir="{home}/runs"),
    # the study's machinery on its smallest design: the baseline and the primary configuration, one seed each, one
    # epoch of 128 crops per run (16 steps, for the same reason as 06), trained through papermill (its default) two
    # at a time and scored with and without decisions; out_dir is where index reads the study's tables from.
    "09_experiments": dict(
        configs="dice_ce,dice_ce+rfs+crops",
        seeds="0",
        primary_seeds="0",
        epochs=1,
        samples_per_epoch=128,
        out_dir="{home}/runs/study",
    ),
    # one seed, two folds (the fewest a cross-validation ensemble has), one epoch of 16 crops per run: 4 runs
    # (all, all+ema, two folds) and 3 scored predictions, every comparison and sentence of the chapter.
    "09b_recipes": dict(seeds="0", folds=2, epochs=1, samples_per_epoch=16, out_dir="{home}/runs/recipes"),
}

# Chapters with slow cells and no parameters, run as written: 05_models times nine model families, 07a/08/08a show
# chapter 06's run (the smoke one, or a short run they train themselves), 08b exports ten families to ONNX, 10_cli
# trains one-step runs, index shows the study's best run (it needs 09's smoke study: run after it, with the same DIR).


def skip_flags() -> set[str]:
    "The cell flags the README's tests skip (settings.ini `tst_flags`)."
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return set(cfg["DEFAULT"]["tst_flags"].split())


def flags(cell) -> set[str]:
    "The nbdev flags of a cell: the words of its leading `#|` lines (`#| slow`, `#| echo: false` gives `echo:`)."
    out = set()
    for line in cell.source.splitlines():
        if not line.startswith("#|"):
            break
        out.update(line[2:].split())
    return out


def chapters(names: list[str], every: bool) -> list[Path]:
    "The notebooks to run: those named, else every chapter (`every`) or those with a cell the tests skip."
    import nbformat

    if names:
        paths = [Path(n) if n.endswith(".ipynb") else NBS / f"{n}.ipynb" for n in names]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            sys.exit(f"smoke: no such notebook: {', '.join(missing)}")
        return [p.resolve() for p in paths]
    book = sorted(NBS.glob("[0-9i]*.ipynb"))
    if every:
        return book
    skipped = skip_flags()
    return [
        p
        for p in book
        if any(flags(c) & skipped for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
    ]


def smoke_notebook(path: Path, gpu: bool):
    "The chapter as executed here: `notest` cells, and `gpu` cells without a GPU, left in but emptied (with why)."
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        why = "notest" if "notest" in flags(c) else "gpu" if "gpu" in flags(c) and not gpu else None
        if why:
            directives = [ln for ln in c.source.splitlines() if ln.startswith("#|")]
            c.source = "\n".join(directives + [f"# not executed in the smoke book (#| {why})"])
    return nb


def parameters(name: str, out: Path, home: Path) -> dict:
    "The chapter's smoke parameters, folders filled in."
    fill = lambda v: v.format(dir=out, home=home) if isinstance(v, str) else v
    return {k: fill(v) for k, v in SMOKE.get(name, {}).items()}


def stand_in_home(out: Path) -> Path:
    "DIR/home: links to every entry of the real $SURGSEG_HOME but `runs` (the data is shared, the run store is not)."
    real = Path(os.environ.get("SURGSEG_HOME", "~/.cache/surgseg")).expanduser().absolute()
    home = out / "home"
    (home / "runs").mkdir(parents=True, exist_ok=True)
    if real.is_dir() and real.resolve() != home.resolve():
        for entry in real.iterdir():
            if entry.name != "runs" and not (home / entry.name).exists():
                (home / entry.name).symlink_to(entry)
    return home


def chapter_cwd(name: str, out: Path, home: Path) -> Path:
    """Where a chapter runs: nbs/, except index. index finds the repository as the folder above its working folder
    that holds settings.ini and reads the study from ROOT/runs/study (before the run store, issue 19) or from the
    run store's study/ (after it): it runs from a stand-in root DIR/root whose runs/study is the smoke study."""
    if name != "index":
        return NBS
    root = out / "root"
    (root / "nbs").mkdir(parents=True, exist_ok=True)
    (root / "runs").mkdir(exist_ok=True)
    for link, target in (
        (root / "settings.ini", ROOT / "settings.ini"),
        (root / "runs" / "study", home / "runs" / "study"),
    ):
        if not link.is_symlink():
            link.symlink_to(target)
    return root / "nbs"


def failed_cell(executed: Path, index: int) -> str:
    "Which cell of the chapter failed (papermill's `index` counts its injected parameters cell): number, first line."
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]  # its error banner
    injected = sum("injected-parameters" in c.metadata.get("tags", []) for c in cells[:index])
    src = [ln for ln in cells[index].source.splitlines() if ln.strip() and not ln.startswith("#|")]
    return f"cell {index - injected + 1} of {len(cells) - injected} (`{src[0][:80] if src else ''}`)"


def run(path: Path, out: Path, home: Path, gpu: bool) -> tuple[float, str]:
    "Execute one chapter into DIR; (seconds, '' or why it failed)."
    import papermill

    name = path.stem
    executed = out / path.name
    t0 = time.time()
    try:
        papermill.execute_notebook(
            smoke_notebook(path, gpu),
            str(executed),
            parameters=parameters(name, out, home),
            cwd=str(chapter_cwd(name, out, home)),
            kernel_name="python3",
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as e:
        return time.time() - t0, f"{failed_cell(executed, e.cell_index)} raised {e.ename}: {e.evalue}"
    except Exception as e:  # the kernel died, a parameter is unknown, ...
        return time.time() - t0, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return time.time() - t0, ""


def repo_state() -> set[str]:
    "Untracked and ignored entries under nbs/, runs/ and surgseg/ (caches aside): the smoke book must add none."
    cmd = ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", "nbs", "runs", "surgseg"]
    lines = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    return {ln for ln in lines if "__pycache__" not in ln and ".ipynb_checkpoints" not in ln}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="chapters to run (paths or names); default: see --all")
    ap.add_argument(
        "--to", help="folder for the executed copies, runs and data links (default: a new temporary folder)"
    )
    ap.add_argument("--all", action="store_true", help="every chapter, also those the tests execute completely")
    a = ap.parse_args(argv)
    out = Path(a.to).expanduser().absolute() if a.to else Path(tempfile.mkdtemp(prefix="surgseg-smoke-"))
    out.mkdir(parents=True, exist_ok=True)
    home = stand_in_home(out)
    os.environ["SURGSEG_HOME"] = str(home)  # the kernels (and the study's training processes) inherit it
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    gpu = torch.cuda.is_available()
    nbs = chapters(a.notebooks, a.all)
    print(
        f"smoke: {len(nbs)} chapters into {out} (SURGSEG_HOME={home}; gpu cells {'run' if gpu else 'skipped'})",
        flush=True,
    )
    before, t_all, rows = repo_state(), time.time(), []
    for p in nbs:
        secs, error = run(p, out, home, gpu)
        rows.append(dict(chapter=p.stem, seconds=round(secs, 1), ok=not error))
        print(f"smoke: {p.stem}: {secs:.0f} s" + (f": FAILED: {error}" if error else ""), flush=True)
    total = time.time() - t_all
    with open(out / "smoke_times.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["chapter", "seconds", "ok"])
        w.writeheader()
        w.writerows(rows)
    failed = [r["chapter"] for r in rows if not r["ok"]]
    added = sorted(repo_state() - before)
    if added:
        print("smoke: the book wrote into the repository:\n  " + "\n  ".join(added), flush=True)
    print(
        f"smoke: {len(rows) - len(failed)} of {len(rows)} chapters passed in {total / 60:.1f} min"
        + (f"; failed: {', '.join(failed)} (executed copies with the error in {out})" if failed else ""),
        flush=True,
    )
    return 1 if failed or added else 0


if __name__ == "__main__":
    sys.exit(main())
