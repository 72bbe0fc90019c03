"""Tests of `surgseg evaluate` (surgseg.evaluate) as a user runs it: the toolkit's reading rules, the per-class
breakdown, kill -9 and rerun, and a second evaluation of the same folder."""

import contextlib, io, os, signal, socket, subprocess, sys, time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from surgseg.cli import main
from surgseg.core import output_lock, write_mask

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXE = Path(sys.executable).parent / "surgseg"
BREAKDOWN = [
    "class",
    "iou",
    "false_alarm",
    "miss",
    "delineation",
    "nsd",
    "nsd_false_alarm",
    "nsd_miss",
    "nsd_delineation",
    "frames_present",
    "frames_false_alarm",
    "frames_miss",
]


def run_main(*args):
    "Run the CLI dispatcher in-process."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def blob_mask(rng, shape):
    "Instrument-like blobs, a thin line and a few specks."
    m = np.zeros(shape, np.uint8)
    h, w = shape
    for c in rng.choice(np.arange(1, 10), 4, replace=False):
        cv2.ellipse(
            m,
            (int(rng.integers(0, w)), int(rng.integers(0, h))),
            (int(rng.integers(5, w // 4)), int(rng.integers(3, h // 4))),
            float(rng.uniform(0, 180)),
            0,
            360,
            int(c),
            -1,
        )
    cv2.line(m, (int(rng.integers(0, w)), 0), (int(rng.integers(0, w)), h - 1), 5, 2)
    return m


def make_pair(root: Path, n: int, shape=(36, 64), seed=0):
    "REF and PRED folders of two videos: ground truth and a perturbed copy (shifted, with a stray block)."
    rng = np.random.default_rng(seed)
    for i in range(n):
        v, f = ("video_41", "video_42")[i % 2], 60 * (i // 2)
        g = blob_mask(rng, shape)
        p = np.roll(g, int(rng.integers(-3, 4)), axis=1)
        p[:4, :4] = rng.integers(0, 10)
        write_mask(root / "ref" / v / "segmentation" / f"{f:09d}.png", g)
        write_mask(root / "pred" / v / "segmentation" / f"{f:09d}.png", p)
    return root / "ref", root / "pred"


def csvs(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".csv"}


def test_equal_channel_rgb_scored_as_grey(tmp_path):
    "3-channel PNGs with equal channels: accepted, the same CSVs as the grayscale files, and the summary says so."
    ref, pred = make_pair(tmp_path, 6)
    rc, out_grey, err = run_main("evaluate", ref, pred, "--out", tmp_path / "grey", "--workers", 1)
    assert rc == 0, err
    assert "3-channel" not in out_grey
    rgb = tmp_path / "rgb"
    for p in pred.rglob("*.png"):
        q = rgb / p.relative_to(pred)
        q.parent.mkdir(parents=True, exist_ok=True)
        m = np.asarray(Image.open(p))
        cv2.imwrite(str(q), cv2.cvtColor(m, cv2.COLOR_GRAY2BGR))  # what OpenCV users write
    assert Image.open(next(rgb.rglob("*.png"))).mode == "RGB"
    rc, out_rgb, err = run_main("evaluate", ref, rgb, "--out", tmp_path / "rgb_out", "--workers", 1)
    assert rc == 0, err
    assert csvs(tmp_path / "rgb_out") == csvs(tmp_path / "grey")  # identical scores, byte for byte
    assert (
        "6 prediction file(s) are 3-channel PNGs with equal channels: scored as their first channel, "
        "exactly as the official toolkit" in out_rgb
    )


def test_toolkit_misreads_are_errors_saying_why(tmp_path):
    "Channels that differ, palette and 16-bit PNGs: exit 1, one line per file saying what the toolkit would do."
    ref, pred = make_pair(tmp_path, 6)
    s41, s42 = pred / "video_41" / "segmentation", pred / "video_42" / "segmentation"
    m = np.asarray(Image.open(s41 / "000000000.png"))
    Image.fromarray(np.stack([m, m, (m > 0).astype(np.uint8) * 9], -1)).save(
        s41 / "000000000.png"
    )  # an overlay by mistake
    Image.fromarray(np.asarray(Image.open(s41 / "000000060.png"))).convert("P").save(s41 / "000000060.png")
    Image.fromarray(np.asarray(Image.open(s42 / "000000000.png")).astype(np.uint16)).save(s42 / "000000000.png")
    rc, out, err = run_main("evaluate", ref, pred, "--workers", 1)
    assert rc == 1 and "3 problem(s)" in err and "nothing was scored or written" in err, err
    assert (
        "000000000.png: a colour image whose channels differ: the official toolkit would score its blue channel" in err
    )
    assert (
        "000000060.png: a palette image; masks must be 8-bit single-channel (mode L): "
        "the official toolkit would read its palette colours" in err
    )
    assert "video_42/segmentation/000000000.png: a 16-bit image" in err and "divided by 256" in err
    assert not list(pred.glob("*.csv"))


def test_breakdown_csv_and_summary(tmp_path):
    "per_class_breakdown.csv has the agreed columns, splits each class's loss exactly, and the summary prints it."
    ref, pred = make_pair(tmp_path, 8)
    rc, out, err = run_main("evaluate", ref, pred, "--workers", 1)
    assert rc == 0, err
    bd = pd.read_csv(pred / "per_class_breakdown.csv")
    assert list(bd.columns) == BREAKDOWN and len(bd) == 9
    np.testing.assert_allclose(bd.iou + bd.false_alarm + bd.miss + bd.delineation, 1, atol=1e-12)
    np.testing.assert_allclose(bd.nsd + bd.nsd_false_alarm + bd.nsd_miss + bd.nsd_delineation, 1, atol=1e-12)
    pc = pd.read_csv(pred / "per_class_results.csv")
    np.testing.assert_allclose(bd.iou, pc.iou, atol=1e-12)
    assert "where each class loses its IoU" in out and "false-alarm frames" in out


def test_killed_and_rerun_is_byte_identical(tmp_path):
    """SIGKILL while scoring leaves no CSV; the rerun (taking over the stale lock) writes the bytes of an
    uninterrupted run."""
    ref, pred = make_pair(tmp_path, 40, shape=(540, 960))
    rc, _, err = run_main("evaluate", ref, pred, "--out", tmp_path / "clean", "--workers", 1)
    assert rc == 0, err
    out = tmp_path / "out"
    p = subprocess.Popen(
        [str(EXE), "evaluate", ref, pred, "--out", out, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    lock, t0 = tmp_path / ".out.lock", time.time()
    try:
        while not lock.exists():
            assert p.poll() is None and time.time() - t0 < 120, "evaluate ended before it could be killed"
            time.sleep(0.005)
        time.sleep(0.3)
        assert p.poll() is None, "evaluate ended before it could be killed: give it more frames"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert lock.exists() and not (out.exists() and any(out.iterdir()))  # killed mid-way: a stale lock, no result
    rc, _, err = run_main("evaluate", ref, pred, "--out", out, "--workers", 1)
    assert rc == 0, err
    assert csvs(out) == csvs(tmp_path / "clean") and len(csvs(out)) == 7
    assert (
        sorted(q.name for q in out.iterdir()) == sorted(csvs(out)) and not lock.exists()
    )  # no temporary file, no lock


def test_second_evaluation_of_the_same_folder_refused(tmp_path):
    """While another process writes a result folder, `surgseg evaluate` into it fails naming the holder and writes
    nothing."""
    ref, pred = make_pair(tmp_path, 4)
    with output_lock(pred):
        rc, _, err = run_main("evaluate", ref, pred, "--workers", 1)
    assert rc == 1 and f"in use by pid {os.getpid()} on {socket.gethostname()}" in err, err
    assert not list(pred.glob("*.csv"))
