"`surgseg stats` as a user runs it, and the frame table's parallel path and cache edge cases."

import subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surgseg.core import write_mask
from surgseg.imbalance import CACHE_FILE, PX, class_summary, count_masks, frame_table

SURGSEG = Path(sys.executable).parent / "surgseg"


def toy(root: Path, n_videos=3, n_frames=12, seed=0) -> Path:
    "Random masks in the official layout: class c is a c-pixel-wide stripe present with probability 1/c."
    rng = np.random.default_rng(seed)
    for v in range(1, n_videos + 1):
        for i in range(n_frames):
            m = np.zeros((20, 60), np.uint8)
            for c in range(1, 10):
                if rng.random() < 1 / c:
                    m[:, 6 * c : 6 * c + c // 2 + 1] = c
            write_mask(root / "train" / f"video_{v:02d}" / "segmentation" / f"{60 * i:09d}.png", m)
    return root


def run(*args):
    return subprocess.run([str(SURGSEG), "stats", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_stats_cli_writes_csvs_and_prints_summary(tmp_path):
    root = toy(tmp_path / "data")
    r = run(root)
    assert r.returncode == 0, r.stderr
    assert "36 masks in 3 videos" in r.stdout and "Catheter" in r.stdout
    out = root / ".surgseg" / "stats"
    assert sorted(p.name for p in out.iterdir()) == ["classes.csv", "cooccurrence.csv", "frames.csv", "videos.csv"]
    classes = pd.read_csv(out / "classes.csv")
    frames = pd.read_csv(out / "frames.csv")
    assert len(frames) == 36 and classes["pixels"].sum() == 36 * 20 * 60
    assert classes["frames"].tolist() == frames[[f"has_{c}" for c in range(10)]].sum().tolist()
    assert (root / CACHE_FILE).is_file()


def test_stats_cli_errors_are_one_line(tmp_path):
    r = run(tmp_path / "nope")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "nope: no such folder" in r.stderr
    root = toy(tmp_path / "data", n_videos=1, n_frames=2)
    bad = root / "train/video_01/segmentation/000000060.png"
    bad.write_bytes(b"not a png")
    r = run(root)
    assert r.returncode == 1 and "000000060.png: unreadable image" in r.stderr and "Traceback" not in r.stderr
    assert not (root / ".surgseg" / "stats").exists()  # nothing half-written


def test_parallel_counts_equal_serial(tmp_path):
    root = toy(tmp_path / "data", n_videos=2, n_frames=40)
    paths = sorted(root.glob("train/*/segmentation/*.png"))
    np.testing.assert_array_equal(count_masks(paths, workers=2), count_masks(paths, workers=1))
    t = frame_table(root, workers=2, cache=False)
    assert len(t) == 80 and not (root / CACHE_FILE).exists()


def test_unwritable_cache_warns_and_still_answers(tmp_path):
    root = toy(tmp_path / "data", n_videos=1, n_frames=3)
    (root / ".surgseg").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write the cache"):
        t = frame_table(root)
    assert len(t) == 3 and class_summary(t)["frames"][0] == 3


def test_min_pixels_rethresholds_without_recount(tmp_path):
    root = toy(tmp_path / "data", n_videos=1, n_frames=6)
    t1, t20 = frame_table(root, min_pixels=1), frame_table(root, min_pixels=21)
    assert (t1[PX].to_numpy() == t20[PX].to_numpy()).all()
    # class 1 is a 1-pixel-wide stripe of 20 pixels: present at min_pixels=1, never at 21
    assert t1["has_1"].any() and not t20["has_1"].any()


KILLERS = {  # where a `surgseg stats` run is killed with SIGKILL (code run before write_stats in the child)
    "while counting": "import surgseg.imbalance as im; f = im.mask_pixel_counts; n = [0]\n"
    "def g(p):\n    n[0] += 1\n    if n[0] == 20: os.kill(os.getpid(), signal.SIGKILL)\n    return f(p)\n"
    "im.mask_pixel_counts = g",
    "while writing the cache": "import pandas as pd; f = pd.DataFrame.to_csv\n"
    "def g(self, p, **k):\n    open(p, 'w').write('px_0,px_1\\n1,'); os.kill(os.getpid(), signal.SIGKILL)\n"
    "pd.DataFrame.to_csv = g",
    "while writing the CSV files": "import pandas as pd; f = pd.DataFrame.to_csv; n = [0]\n"
    "def g(self, p, **k):\n    n[0] += 1\n    f(self, p, **k)\n    if n[0] == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
    "pd.DataFrame.to_csv = g",
}


def stats(root: Path):
    "`imbalance.write_stats` in a fresh interpreter (the library function `surgseg stats` stands for)."
    code = f"from surgseg.imbalance import write_stats; write_stats({str(root)!r}, workers=1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _outputs(root: Path) -> dict:
    "Every file under ROOT/.surgseg (what `stats` writes) and its bytes."
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / ".surgseg").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("moment", list(KILLERS))
def test_stats_killed_and_rerun_gives_the_same_bytes(tmp_path, moment):
    root = toy(tmp_path / "data", n_videos=2, n_frames=30)
    code = (
        f"import os, signal\n{KILLERS[moment]}\n"
        f"from surgseg.imbalance import write_stats\nwrite_stats({str(root)!r}, workers=1)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert not (root / ".surgseg/stats").exists()  # no half set of CSV files where a user looks
    assert stats(root).returncode == 0  # rerun
    after_kill = _outputs(root)
    leftovers = [p for p in root.rglob("*") if p.name.endswith((".partial", ".lock", ".old")) or ".tmp" in p.name]
    assert leftovers == []
    import shutil

    shutil.rmtree(root / ".surgseg")
    assert stats(root).returncode == 0  # an uninterrupted run
    assert after_kill == _outputs(root) and sorted(after_kill) == [".surgseg/frame_table.csv"] + [
        f".surgseg/stats/{n}" for n in ("classes.csv", "cooccurrence.csv", "frames.csv", "videos.csv")
    ]


def test_two_stats_runs_on_one_folder_refuse_the_second(tmp_path):
    from surgseg.core import SurgsegError, output_lock
    from surgseg.imbalance import write_stats

    root = toy(tmp_path / "data", n_videos=1, n_frames=2)
    with output_lock(root / ".surgseg" / "stats"):
        with pytest.raises(SurgsegError, match=r"stats: in use by pid \d+ on "):
            write_stats(root)
