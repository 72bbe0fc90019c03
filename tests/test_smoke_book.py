"The smoke book's table (tools/smoke_book.py) names real chapters and real parameters, so a rename fails here, fast."

import importlib.util
from pathlib import Path

import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("smoke_book", ROOT / "tools" / "smoke_book.py")
smoke = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke)


@pytest.mark.parametrize("chapter", sorted(smoke.SMOKE))
def test_smoke_parameters_are_the_chapters(chapter):
    nb = ROOT / "nbs" / f"{chapter}.ipynb"
    assert nb.exists(), f"tools/smoke_book.py: SMOKE names {chapter}, which is not a chapter in nbs/"
    known = set(papermill.inspect_notebook(str(nb)))
    assert known, f"{chapter} has no cell tagged `parameters` (tools/smoke_book.py passes it parameters)"
    unknown = sorted(set(smoke.SMOKE[chapter]) - known)
    assert not unknown, f"tools/smoke_book.py: SMOKE passes {chapter} {unknown}, not in its parameters cell"


def test_default_chapters_cover_the_skipped_cells():
    default = {p.stem for p in smoke.chapters([], every=False)}
    assert set(smoke.SMOKE) <= default  # a chapter given smoke parameters is run
    assert {"06_train", "09_experiments", "index"} <= default and "00_core" not in default  # slow cells; none
    assert {p.stem for p in smoke.chapters([], every=True)} >= default


def test_notest_and_gpu_cells_are_emptied(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(s) for s in ["#| slow\nx = 1", "#| notest\nraise", "#| gpu\nimport cuda", "y = 2"]
        ]
    )
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    assert [smoke.flags(c) for c in nb.cells] == [{"slow"}, {"notest"}, {"gpu"}, set()]
    src = [c.source for c in smoke.smoke_notebook(path, gpu=False).cells]
    assert src[0] == "#| slow\nx = 1" and src[3] == "y = 2"  # run as they are
    assert src[1].startswith("#| notest") and "raise" not in src[1] and "import" not in src[2]  # emptied
    assert smoke.smoke_notebook(path, gpu=True).cells[2].source == "#| gpu\nimport cuda"  # a GPU: run
