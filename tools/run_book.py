#!/usr/bin/env python3
"""Execute notebooks in place, slow cells included, so the committed book shows its outputs and plots.

    python tools/run_book.py [NB ...]     # default: every notebook in nbs/, in order

Each notebook runs in a fresh kernel from nbs/ (as nbdev_test does). Progress bars and warnings
(stderr streams) are dropped from the saved outputs; a failing cell stops that notebook and the
script exits non-zero, leaving the notebook untouched. Run `nbdev_clean` afterwards.
At smoke scale, into a folder, as CI does: tools/smoke_book.py.
"""

import sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def run(nb_path: Path) -> float:
    "Execute one notebook in place; return the seconds it took."
    nb = nbformat.read(nb_path, as_version=4)
    t0 = time.time()
    NotebookClient(
        nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(nb_path.parent)}}
    ).execute()
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = [
                o for o in c.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
            ]
    tmp = nb_path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(nb_path)
    return time.time() - t0


if __name__ == "__main__":
    nbs = [Path(a).resolve() for a in sys.argv[1:]] or sorted((ROOT / "nbs").glob("[0-9i]*.ipynb"))
    failed = []
    for p in nbs:
        try:
            print(f"{p.name}: {run(p):.0f} s", flush=True)
        except Exception as e:
            failed.append(p.name)
            print(f"{p.name}: FAILED ({type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''})", flush=True)
    sys.exit(1 if failed else 0)
