"Run every notebook in nbs/ the way nbdev_test does (cells flagged notest/slow/gpu skipped), one test each."

from configparser import ConfigParser
from pathlib import Path

import pytest
import nbdev.test  # imported as a module so pytest does not collect test_nb itself

ROOT = Path(__file__).resolve().parents[1]
cfg = ConfigParser(delimiters=["="])
cfg.read(ROOT / "settings.ini")
SKIP_FLAGS = cfg["DEFAULT"]["tst_flags"].split()
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    ok, secs = nbdev.test.test_nb(nb, skip_flags=SKIP_FLAGS, do_print=False, showerr=True)
    assert ok, f"{nb.name} failed (see the cell error above)"
