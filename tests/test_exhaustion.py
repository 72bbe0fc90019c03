"""Resource exhaustion (issue 20): a full disk at every writer of every command, and running out of memory, are one
line, exit 1, nothing partial, and the rerun gives the same result."""

import contextlib, hashlib, io, os, re, shutil, subprocess, sys, uuid
from pathlib import Path

import pandas as pd
import pytest
import torch

from surgseg import core
from surgseg.cli import main

from conftest import SYNTH, UNET  # the `ws` fixture (tiny dataset + one-step run) is tests/conftest.py's

SURGSEG = Path(sys.executable).parent / "surgseg"


def run(*argv, full_at: str | None = None):
    "`surgseg ARGV` in this process, with a full disk injected at `full_at` (GLOB[@N]): (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    core._FULL_HITS.clear()
    old = os.environ.pop("SURGSEG_DISK_FULL_AT", None)
    if full_at:
        os.environ["SURGSEG_DISK_FULL_AT"] = full_at
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in argv])
    finally:
        os.environ.pop("SURGSEG_DISK_FULL_AT", None)
        if old is not None:
            os.environ["SURGSEG_DISK_FULL_AT"] = old
    return rc, out.getvalue(), err.getvalue()


def ok(*argv):
    rc, out, err = run(*argv)
    assert rc == 0, (argv, out, err[-3000:])
    return out


def one_line(rc, err, cmd, *expected):
    "Exit 1, exactly one line on stderr (`surgseg CMD: error: ...`), no traceback, no hidden partial name in it."
    shown = [
        s for l in err.split("\n") if (s := l.split("\r")[-1]).strip()
    ]  # as a terminal shows it (bars overwritten)
    lines = [s for s in shown if not re.search(r"\d+%\|", s)]  # training's finished epoch bars stay
    assert rc == 1 and len(lines) == 1 and lines[0].startswith(f"surgseg {cmd}: error: "), (rc, err[-3000:])
    assert "Traceback" not in err and ".partial" not in lines[0], lines[0]
    for e in expected:
        assert e in lines[0], (e, lines[0])
    return lines[0]


def full(rc, err, cmd, path_part, what):
    return one_line(
        rc, err, cmd, path_part, f"no space left on the device while writing {what}", "run the same command again"
    )


def files(root) -> dict:
    "relative path -> sha256 of every file under `root`."
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def hidden(root) -> list:
    "Hidden leftovers (partial folders, temporary files, locks) under `root` or beside it."
    root = Path(root)
    return [
        p.name
        for p in list(root.parent.iterdir()) + (list(root.rglob(".*")) if root.is_dir() else [])
        if p.name.startswith(".") and p.name != ".surgseg"
    ]


# --- a full disk, injected at each writer of each command ----------------------------------------------


def test_synth(ws):
    rc, _, err = run("synth", "s", *SYNTH, full_at="*/segmentation/000000060.png")
    full(rc, err, "synth", "s/", "a synthetic mask")
    assert not Path("s").exists() and not hidden(Path("s"))
    rc, _, err = run("synth", "s", *SYNTH, full_at="*/video_left.avi@2")
    full(rc, err, "synth", "video_left.avi", "a synthetic video")
    ok("synth", "s", *SYNTH)
    assert files("s") == files("raw")  # the rerun wrote what an uninterrupted run writes


def test_extract(ws):
    shutil.copytree("raw", "x")
    rc, _, err = run("extract", "x", "--workers", 1, full_at="*/rgb/*.png@4")
    full(rc, err, "extract", "/rgb/", "the extracted frames")
    assert not [
        p for p in Path("x").rglob(".*") if ".tmp" in p.name or p.name.endswith(".lock")
    ]  # no half frame, no lock
    n_before = len(list(Path("x").rglob("rgb/*.png")))
    assert 0 < n_before < 9
    assert "frames written" in ok("extract", "x", "--workers", 1)
    assert files("x") == {k: v for k, v in files("data").items() if not k.startswith(".surgseg/")}


def test_stats(ws):
    shutil.copytree("data", "st")
    shutil.rmtree("st/.surgseg", ignore_errors=True)
    ok("stats", "st", "--out", "stats_ref", "--workers", 1)  # the uninterrupted result (its rows name the root)
    shutil.rmtree("st/.surgseg")
    rc, _, err = run("stats", "st", "--workers", 1, full_at="*/frame_table.csv")
    line = full(rc, err, "stats", "st/", "the statistics cache")
    rc, _, err = run("stats", "st", "--workers", 1, full_at="*/stats")
    full(rc, err, "stats", "st/.surgseg/stats", "the statistics CSV files")
    assert not Path("st/.surgseg/stats").exists() and not hidden(Path("st/.surgseg/stats"))
    ok("stats", "st", "--workers", 1)
    assert files("st/.surgseg/stats") == files("stats_ref"), line


def test_predict(ws):
    argv = ("predict", "--checkpoint", "runs/r", "--data", "data/test", "--no-tta", "--device", "cpu")
    rc, _, err = run(*argv, "--out", "p", full_at="*/segmentation/*.png@2")
    full(rc, err, "predict", "p/video_", "a mask")
    assert not Path("p").exists() and not hidden(Path("p"))
    ok(*argv, "--out", "p")
    ok(*argv, "--out", "p_ref")
    assert files("p") == files("p_ref") and len(files("p")) == 3


def test_predict_image_overlays(ws):
    rgb = next(Path("data/test").glob("video_*/rgb"))
    argv = ("predict-image", rgb, "--checkpoint", "runs/r", "--no-tta", "--device", "cpu")
    rc, _, err = run(*argv, "--out", "im", full_at="*/overlays/*.png@2")
    full(rc, err, "predict-image", "im/overlays/", "an overlay")
    assert not Path("im").exists() and not hidden(Path("im"))
    ok(*argv, "--out", "im")
    ok(*argv, "--out", "im_ref")
    assert files("im") == files("im_ref")


@pytest.mark.parametrize(
    "at,what", [("*/masks/*.png@5", "a mask"), ("*_overlay.mp4", "the overlay video")], ids=["masks", "video"]
)
def test_predict_video(ws, at, what):
    video = next(Path("data/test").glob("video_*/video_left.avi"))
    argv = ("predict-video", video, "--checkpoint", "runs/r", "--no-tta", "--device", "cpu", "--every", 4)
    out = f"v{uuid.uuid4().hex[:6]}"
    rc, _, err = run(*argv, "--out", out, full_at=at)
    full(rc, err, "predict-video", f"{out}/", what)
    assert not Path(out).exists() and not hidden(Path(out))
    ok(*argv, "--out", out)
    ok(*argv, "--out", out + "_ref")
    a, b = files(out), files(out + "_ref")
    assert {k: v for k, v in a.items() if k.startswith("masks/")} == {
        k: v for k, v in b.items() if k.startswith("masks/")
    }
    assert sorted(a) == sorted(b) and "video_left_overlay.mp4" in a and len(a) > 25


def test_evaluate(ws):
    shutil.copytree("data/test", "gt")
    ok("predict", "--checkpoint", "runs/r", "--data", "gt", "--out", "ev", "--no-tta", "--device", "cpu")
    rc, _, err = run("evaluate", "gt", "ev", "--workers", 1, "--out", "tables", full_at="*/per_class_breakdown.csv")
    full(rc, err, "evaluate", "tables/per_class_breakdown.csv", "the result tables")
    assert not list(Path("tables").glob("*.csv")) and not hidden(Path("tables"))
    ok("evaluate", "gt", "ev", "--workers", 1, "--out", "tables")
    ok("evaluate", "gt", "ev", "--workers", 1, "--out", "tables_ref")
    assert files("tables") == files("tables_ref") and len(files("tables")) >= 6


TRAIN = ("train", "--data_dir", "data", "--out_dir", "runs", "--epochs", 2, "--max_steps", 1, *UNET)


@pytest.fixture(scope="module")
def reference_run(ws):
    ok(*TRAIN, "--run_name", "ref")
    return Path("runs/ref")


def same_run(a: Path, b: Path):
    from safetensors.torch import load_file

    wa, wb = (load_file(r / "last" / "state" / "model.safetensors") for r in (a, b))
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (pd.read_csv(r / "metrics.csv").drop(columns="seconds") for r in (a, b))
    pd.testing.assert_frame_equal(ma, mb)


@pytest.mark.parametrize("n,resumed", [(2, True), (1, False)], ids=["after-a-checkpoint", "before-any-checkpoint"])
def test_train_checkpoint(ws, reference_run, n, resumed):
    name = f"t{n}"
    rc, _, err = run(*TRAIN, "--run_name", name, full_at=f"*/{name}/last@{n}")
    full(rc, err, "train", f"runs/{name}/last", "a checkpoint")
    run_dir = Path("runs") / name
    assert (run_dir / ".interrupted").is_file() and not [p for p in run_dir.iterdir() if p.name.endswith(".partial")]
    rc, out, err = run(*TRAIN, "--run_name", name)  # the same command, no flag
    assert rc == 0, err[-3000:]
    assert ("continuing from" in err) == resumed and ("starting afresh" in err) == (not resumed), err
    assert not (run_dir / ".interrupted").exists()
    same_run(reference_run, run_dir)
    rc, _, err = run(*TRAIN, "--run_name", name)  # a finished run is still refused, in the CLI's words
    one_line(rc, err, "train", "run folder exists; pass --resume to continue it or choose another --run_name")


# --- out of memory, injected -------------------------------------------------------------------------


def oom(*a, **k):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_in_training(ws, monkeypatch):
    import surgseg.train

    real = surgseg.train.build_loss

    class Boom(torch.nn.Module):
        def forward(self, *a):
            oom()

    monkeypatch.setattr(surgseg.train, "build_loss", lambda *a, **k: (real(*a, **k), Boom())[1])
    rc, _, err = run(*TRAIN, "--run_name", "oom")
    one_line(
        rc,
        err,
        "train",
        "out of GPU memory while training (epoch 1, step 1) (batch_size 1, ",
        "at resolution 0.5",
        "try a smaller --batch_size, --low_res, --grad_checkpointing (DINOv3) or --grad_accum",
    )


class OomModel(torch.nn.Module):
    "A model whose forward pass runs out of GPU memory."

    def forward(self, x):
        oom()


def test_out_of_memory_in_prediction(ws, monkeypatch):
    """Injected in the model's forward pass: the Predictor names the step, the batch size and the resolution (no
    traceback parsing)."""
    import surgseg.inference

    real = surgseg.inference.Predictor.__init__

    def init(self, model, *a, **k):
        real(self, OomModel(), *a, **k)

    monkeypatch.setattr(surgseg.inference.Predictor, "__init__", init)
    rc, _, err = run(
        "predict", "--checkpoint", "runs/r", "--data", "data/test", "--out", "po", "--device", "cpu", "--batch_size", 2
    )
    one_line(
        rc,
        err,
        "predict",
        "out of GPU memory while segmenting a batch (batch_size 2, frames 96x64 at resolution 0.5)",
        "try a smaller --batch_size or --device cpu",
    )
    assert not Path("po").exists() and not hidden(Path("po"))
    rgb = next(Path("data/test").glob("video_*/rgb"))
    rc, _, err = run("predict-image", rgb, "--checkpoint", "runs/r", "--out", "pi", "--device", "cpu")
    one_line(rc, err, "predict-image", "out of GPU memory while segmenting a batch (batch_size 4, frames 96x64")
    video = next(Path("data/test").glob("video_*/video_left.avi"))
    rc, _, err = run(
        "predict-video", video, "--checkpoint", "runs/r", "--out", "pv", "--tta", "--batch_size", 3, "--device", "cpu"
    )
    one_line(
        rc,
        err,
        "predict-video",
        "while segmenting a batch with flip TTA (two views per frame) (batch_size 3, frames 96x64",
    )
    assert not Path("pv").exists() and not hidden(Path("pv"))


def test_out_of_memory_in_python(ws):
    """From Python the same line speaks arguments; a RuntimeError saying 'out of memory' counts, any other error
    passes through."""
    from surgseg.core import Config, SurgsegError
    from surgseg.inference import Predictor
    import numpy as np

    p = Predictor(OomModel(), Config(), device="cpu", batch_size=4)
    with pytest.raises(
        SurgsegError,
        match=r"^out of GPU memory while segmenting a batch \(batch_size 4, frames 96x64 at "
        r"resolution 0.5\); try a smaller batch_size or device='cpu'$",
    ):
        p.scores([np.zeros((64, 96, 3), np.uint8)])

    class Old(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(SurgsegError, match="out of GPU memory"):
        Predictor(Old(), Config(), device="cpu").scores([np.zeros((8, 8, 3), np.uint8)])

    class Other(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        Predictor(Other(), Config(), device="cpu").scores([np.zeros((8, 8, 3), np.uint8)])


def test_messages_speak_the_entry_point(ws):
    from surgseg.core import Config, SurgsegError
    from surgseg.runs import run_dir_for

    with pytest.raises(SurgsegError, match="pass resume=True to continue it or choose another run_name$"):
        run_dir_for(Config(out_dir="runs", run_name="r"))


# --- a real process, and a real full filesystem --------------------------------------------------------


def test_real_process_exits_1_without_abort(ws):
    "In a process of its own: the writer threads and the pipeline stop cleanly (no SIGABRT, no `terminate called`)."
    video = next(Path("data/test").glob("video_*/video_left.avi"))
    r = subprocess.run(
        [
            str(SURGSEG),
            "predict-video",
            str(video),
            "--checkpoint",
            "runs/r",
            "--out",
            "sub",
            "--no-tta",
            "--device",
            "cpu",
            "--overlays",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SURGSEG_DISK_FULL_AT": "*/overlays/*.png@7", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    full(r.returncode, r.stderr, "predict-video", "sub/overlays/", "an overlay")
    assert "terminate" not in r.stderr and not Path("sub").exists()


@pytest.fixture
def small_fs(tmp_path):
    "A real 256 KiB tmpfs (as root), unmounted afterwards; skipped where mounting is not allowed."
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_filesystem(ws, small_fs):
    video = next(Path("data/test").glob("video_*/video_left.avi"))
    argv = ("predict-video", video, "--checkpoint", "runs/r", "--no-tta", "--device", "cpu", "--no-overlay_video")
    rc, _, err = run(*argv, "--out", small_fs / "v")  # 120 masks, a page each: more than 256 KiB
    full(rc, err, "predict-video", f"{small_fs}/v", "a mask")
    assert list(small_fs.iterdir()) == []  # nothing partial, no lock
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_fs)], check=True)  # space freed
    ok(*argv, "--out", small_fs / "v")
    ok(*argv, "--out", "v_ref")
    assert files(small_fs / "v") == files("v_ref") and len(files("v_ref")) > 100
