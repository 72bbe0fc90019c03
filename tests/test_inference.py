"""Tests of surgseg.inference and surgseg.postprocess through the command line: `surgseg predict`, `predict-image`,
`predict-video`; a run's validation score equals predict + evaluate; kill -9 and rerun; locks; bad input."""

import contextlib, io, json, os, signal, shutil, socket, subprocess, sys, time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from accelerate.utils import set_seed
from PIL import Image

from surgseg.core import Config, output_lock, read_mask
from surgseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXE = Path(sys.executable).parent / "surgseg"


def surgseg(*args):
    "Run the installed console script (a separate process, as a user would)."
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV)


def run_main(*args):
    "Run the CLI dispatcher in-process (the same code path, without paying torch's import again)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "A tiny synthetic dataset and an untrained U-Net checkpoint saved as a run's best/."
    from surgseg.synthetic import generate
    from surgseg.models import build_model, save_model

    tmp = tmp_path_factory.mktemp("inference")
    root = generate(tmp / "data", n_train=2, n_test=1, seconds=3, size=(64, 96))
    cfg = Config(model="unet", encoder="resnet18", weights="none", resolution=0.5, data_dir=str(root))
    set_seed(0)
    save_model(build_model(cfg), cfg, tmp / "run" / "best")
    return dict(tmp=tmp, root=root, run=tmp / "run")


def gt_masks(split):
    return sorted(p.relative_to(split) for p in split.glob("video_*/segmentation/*.png"))


def files_of(folder: Path) -> dict:
    "Every file under `folder` (hidden ones included) -> its bytes."
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_split_cli_official_layout(env):
    "The console script writes exactly one full-size 8-bit mask per ground-truth mask, accepted by `evaluate`."
    from surgseg.evaluate import evaluate

    test, pred = env["root"] / "test", env["tmp"] / "pred"
    r = surgseg("predict", "--checkpoint", env["run"], "--data", test, "--out", pred)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 masks of 1 videos" in r.stdout
    assert sorted(p.relative_to(pred) for p in pred.glob("video_*/segmentation/*.png")) == gt_masks(test)
    for rel in gt_masks(test):
        read_mask(pred / rel, read_mask(test / rel).shape)
    res = evaluate(test, pred, workers=1, progress=False)
    assert 0 <= res["score"] <= 1 and res["n_frames"] == 4
    assert not [p for p in pred.parent.iterdir() if p.name.startswith(".pred")]  # no lock, no partial folder left


def test_predict_split_tta_and_tuned_min_area(env):
    "--tta and --min_area tune (chosen on the run's validation split) run and change what they should."
    a, b = env["tmp"] / "pred_plain", env["tmp"] / "pred_tuned"
    rc, out, err = run_main("predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", a)
    assert rc == 0, err
    rc, out, err = run_main(
        "predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", b, "--tta", "--min_area", "tune"
    )
    assert rc == 0, err
    assert "tuned on the validation split: --min_area" in out and "tta=True" in out
    assert len(list(b.glob("video_*/segmentation/*.png"))) == 4


def test_validation_score_equals_predict_and_evaluate(env, tmp_path):
    """A run's validation score (training's own validation path) is `predict_split` + `evaluate` on the same frames,
    to 1e-9."""
    from surgseg.data import make_splits
    from surgseg.evaluate import evaluate
    from surgseg.inference import Predictor, predict_split
    from surgseg.train import fit

    cfg = Config(
        model="unet",
        encoder="resnet18",
        weights="none",
        resolution=0.5,
        data_dir=str(env["root"]),
        out_dir=str(tmp_path / "runs"),
        epochs=2,
        max_steps=2,
        batch_size=2,
        val_fraction=0.5,
        log_with="none",
    )
    run = fit(cfg)
    hist = pd.read_csv(run / "metrics.csv")
    best = hist.loc[hist.val_score.idxmax()]  # the epoch best/ holds
    val = make_splits(cfg)[1]
    assert val and all(v.split != "test" for v in val)
    pred = predict_split(Predictor.from_checkpoint(run, device="cpu"), val, tmp_path / "pred", progress=False)
    ref = tmp_path / "ref"
    for v in val:
        (ref / v.name).mkdir(parents=True)
        (ref / v.name / "segmentation").symlink_to(v.path / "segmentation")
    res = evaluate(ref, pred, workers=1, progress=False)
    assert res["n_frames"] == sum(len(v.frames) for v in val)
    for k in ("score", "miou", "mnsd"):
        assert abs(res[k] - best[f"val_{k}"]) <= 1e-9, (k, res[k], best[f"val_{k}"])


def test_predict_image_and_video_cli(env):
    "predict-image on a folder and predict-video with --every: masks, overlays, overlay video."
    from surgseg.data import extract_frames, find_videos
    from surgseg.data import probe_video

    v = find_videos(env["root"] / "test")[0]
    extract_frames([v], progress=False)
    rc, out, err = run_main("predict-image", v.rgb_dir, "--checkpoint", env["run"], "--out", env["tmp"] / "img")
    assert rc == 0, err
    assert len(list((env["tmp"] / "img" / "masks").glob("*.png"))) == len(v.frames)
    assert len(list((env["tmp"] / "img" / "overlays").glob("*.png"))) == len(v.frames)
    rc, out, err = run_main(
        "predict-video", v.video, "--checkpoint", env["run"], "--out", env["tmp"] / "vid", "--every", 30
    )
    assert rc == 0, err
    n = -(-probe_video(v.video).n_frames // 30)
    assert len(list((env["tmp"] / "vid" / "masks").glob("*.png"))) == n
    assert probe_video(env["tmp"] / "vid" / "video_left_overlay.mp4").n_frames == n


def test_predict_image_tiny_and_huge(env, tmp_path):
    "A 1x1 image and one 25 times the model's working size in each direction: full-size masks, or one line saying why."
    rng = np.random.default_rng(0)
    for name, (h, w) in (("dot", (1, 1)), ("huge", (1600, 2400))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
        rc, out, err = run_main(
            "predict-image", tmp_path / f"{name}.png", "--checkpoint", env["run"], "--out", tmp_path / name
        )
        assert rc == 0, err
        assert read_mask(tmp_path / name / "masks" / f"{name}.png", (h, w)).shape == (h, w)
        assert Image.open(tmp_path / name / "overlays" / f"{name}.png").size == (w, h)


def _fails(args, *expected, out=None):
    "The command exits 1 with one line on stderr containing `expected`, and `out` was not created."
    rc, _, err = run_main(*args)
    assert rc == 1, err
    lines = [l for l in err.splitlines() if l.strip()]  # (a progress bar may precede the error)
    errors = [l for l in lines if l.startswith(f"surgseg {args[0]}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for e in expected:
        assert e in errors[0], errors[0]
    if out is not None:
        assert not Path(out).exists()
    return errors[0]


def test_bad_checkpoints(env):
    "Missing checkpoint; another model's weights beside the config: one line naming the file, nothing written."
    from surgseg.models import build_model, save_model

    tmp, test = env["tmp"], env["root"] / "test"
    _fails(
        ["predict", "--checkpoint", tmp / "nope", "--data", test, "--out", tmp / "p1"],
        "nope: checkpoint not found",
        out=tmp / "p1",
    )
    cfg = Config(model="fpn", encoder="resnet18", weights="none")
    save_model(build_model(cfg), cfg, tmp / "other" / "best")
    shutil.copy(env["run"] / "best" / "config.yaml", tmp / "other" / "best" / "config.yaml")
    _fails(
        ["predict", "--checkpoint", tmp / "other", "--data", test, "--out", tmp / "p2"],
        "other/best/model.safetensors: weights of a 'fpn' model",
        out=tmp / "p2",
    )


def test_bad_images_and_videos(env):
    "An unreadable image or video fails with its name; the output folder is not created."
    tmp = env["tmp"]
    imgs = tmp / "bad_imgs"
    imgs.mkdir()
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(imgs / "a.png")
    (imgs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _fails(
        ["predict-image", imgs, "--checkpoint", env["run"], "--out", tmp / "o1"],
        "b.png: unreadable image",
        out=tmp / "o1",
    )
    (tmp / "junk.avi").write_bytes(b"RIFF" + bytes(200))
    _fails(
        ["predict-video", tmp / "junk.avi", "--checkpoint", env["run"], "--out", tmp / "o2"],
        "junk.avi: unreadable video",
        out=tmp / "o2",
    )
    _fails(
        ["predict-video", tmp / "none.mp4", "--checkpoint", env["run"], "--out", tmp / "o3"],
        "none.mp4: video file is missing",
        out=tmp / "o3",
    )


def test_refuses_non_empty_output(env):
    "A prediction folder that already holds files is refused and left exactly as it was."
    out = env["tmp"] / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(
        ["predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", out],
        "taken: output folder is not empty",
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".taken")]


# --- two writers, stale locks, kill -9 -----------------------------------------------------------------------------


def test_second_writer_refused_and_stale_lock_taken_over(env, tmp_path):
    """While a process holds a prediction folder, `predict` into it is refused naming the holder; a dead holder's
    lock is taken over."""
    out = tmp_path / "pred"
    with output_lock(out):
        _fails(
            ["predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", out],
            f"pred: in use by pid {os.getpid()} on {socket.gethostname()} since",
            out=out,
        )
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".pred.lock").write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00"})
    )
    rc, _, err = run_main("predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", out)
    assert rc == 0, err
    assert len(list(out.glob("video_*/segmentation/*.png"))) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # the stale lock is gone with ours


@pytest.fixture(scope="module")
def slow_split(tmp_path_factory):
    """A split whose prediction takes a second or two (24 frames, one per batch): 96x128 frames and masks, frames
    already extracted."""
    d = tmp_path_factory.mktemp("slow")
    rng = np.random.default_rng(1)
    for f in range(0, 24 * 60, 60):
        v = d / "test" / "video_41"
        (v / "segmentation").mkdir(parents=True, exist_ok=True)
        (v / "rgb").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 10, (96, 128), dtype=np.uint8)).save(v / "segmentation" / f"{f:09d}.png")
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(v / "rgb" / f"{f:09d}.png")
    video = d / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 60, (128, 96))
    for i in range(24):
        w.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    w.release()
    return d


def kill_midway(args, out: Path, files: int = 3, timeout: float = 120):
    "Start a command, SIGKILL it once its hidden partial folder holds `files` files; check it was mid-way."
    p = subprocess.Popen([str(EXE), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            parts = list(out.parent.glob(f".{out.name}.*.partial"))
            if parts and sum(1 for q in parts[0].rglob("*") if q.is_file()) >= files:
                break
            assert p.poll() is None, "the command finished before it could be killed: give it more work"
            time.sleep(0.005)
        else:
            raise AssertionError("the command never wrote anything")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not out.exists(), "a killed run must leave no result folder"
    assert list(out.parent.glob(f".{out.name}.*.partial"))  # it was killed mid-way, its partial folder left behind


@pytest.mark.parametrize("cmd", ["predict", "predict-video", "predict-image"])
def test_killed_and_rerun_is_byte_identical(env, slow_split, tmp_path, cmd):
    """SIGKILL mid-way leaves nothing a user would take for a result; the rerun publishes exactly the bytes of an
    uninterrupted run."""
    src = {
        "predict": ["--data", slow_split / "test"],
        "predict-video": [slow_split / "clip.avi"],
        "predict-image": [slow_split / "test" / "video_41" / "rgb"],
    }[cmd]
    common = [cmd, *src, "--checkpoint", env["run"], "--batch_size", 1]
    clean = tmp_path / "clean"
    rc, _, err = run_main(
        *common, "--out", clean
    )  # the uninterrupted run (in-process: the same code, torch already imported)
    assert rc == 0, err
    out = tmp_path / "out"
    kill_midway([*common, "--out", out], out)
    rc, _, err = run_main(
        *common, "--out", out
    )  # the rerun, in this process: it finds the dead run's lock and partial folder
    assert rc == 0, err
    assert files_of(out) == files_of(clean) and len(files_of(out)) >= 24
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clean",
        "out",
    ]  # no partial folder, no lock, no temporary file


# --- ensembles -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(env):
    "A second untrained U-Net run (another seed) beside env's, and one at another working resolution."
    from surgseg.models import build_model, save_model

    cfg = Config(model="unet", encoder="resnet18", weights="none", resolution=0.5, data_dir=str(env["root"]))
    set_seed(1)
    save_model(build_model(cfg), cfg, env["tmp"] / "run2" / "best")
    low = cfg.update(low_res=True)
    save_model(build_model(low), low, env["tmp"] / "run_low" / "best")
    return env["run"], env["tmp"] / "run2", env["tmp"] / "run_low"


def test_ensemble_is_the_mean_of_the_probabilities(env, two_runs):
    "Two checkpoints' ensemble = the mean of their softmax probabilities (by hand), through scores, masks and min_area."
    import torch
    from surgseg.core import read_rgb
    from surgseg.data import find_videos
    from surgseg.inference import Predictor
    from surgseg.models import full_res_masks
    from surgseg.postprocess import RemoveSmall, load_predictor, remove_small, min_area_thresholds

    a, b, _ = two_runs
    v = find_videos(env["root"] / "test")[0]
    ims = [read_rgb(p) for p in sorted(v.rgb_dir.glob("*.png"))][:3] if v.rgb_dir.is_dir() else None
    if not ims:
        from surgseg.data import read_frames

        ims = [im for _, im in read_frames(v.video, v.frames[:3])]
    pa, pb = (Predictor.from_checkpoint(r, device="cpu") for r in (a, b))
    ens = Predictor.from_checkpoint([a, b], device="cpu")
    mean = (pa.scores(ims).softmax(1) + pb.scores(ims).softmax(1)) / 2
    assert torch.allclose(ens.scores(ims).exp(), mean, atol=1e-6)
    assert not torch.allclose(pa.scores(ims).softmax(1), mean, atol=1e-3)  # the members differ: the test can fail
    top = full_res_masks(mean.log(), ims[0].shape[:2])
    assert all(np.array_equal(m, t) for m, t in zip(ens.predict_batch(ims), top))
    # min_area acts on the ensemble's mask (load_predictor: the CLI's path)
    pe = load_predictor([a, b], decisions=False, min_area=40, device="cpu")
    assert isinstance(pe.postprocess, RemoveSmall) and len(pe.models) == 2
    thr = min_area_thresholds(40)
    assert all(np.array_equal(m, remove_small(t, thr)) for m, t in zip(pe.predict_batch(ims), top))


def test_ensemble_cli_predict_video_and_evaluate(env, two_runs, tmp_path):
    """predict, predict-video and evaluate take several checkpoints; predict's masks are the ensemble's; bad mixes are
    one line."""
    from surgseg.inference import Predictor, predict_split
    from surgseg.data import find_videos

    a, b, low = two_runs
    test = env["root"] / "test"
    rc, out, err = run_main("predict", "--checkpoint", a, b, "--data", test, "--out", tmp_path / "p", "--device", "cpu")
    assert rc == 0, err
    assert "x2 (probabilities averaged)" in out
    predict_split(Predictor.from_checkpoint([a, b], device="cpu"), find_videos(test), tmp_path / "ref", progress=False)
    assert files_of(tmp_path / "p") == files_of(tmp_path / "ref")
    single = tmp_path / "single"
    assert run_main("predict", "--checkpoint", a, "--data", test, "--out", single, "--device", "cpu")[0] == 0
    assert files_of(single) != files_of(tmp_path / "p")
    rc, out, err = run_main("evaluate", test, tmp_path / "e", "--workers", 1, "--checkpoint", a, b, "--device", "cpu")
    assert rc == 0, err
    assert files_of(tmp_path / "e").keys() >= {k for k in files_of(tmp_path / "p")}
    assert all(
        files_of(tmp_path / "e")[k] == v for k, v in files_of(tmp_path / "p").items()
    )  # the same masks, then scored
    assert "score" in out.lower()
    video = find_videos(test)[0].video
    rc, out, err = run_main(
        "predict-video",
        video,
        "--checkpoint",
        a,
        b,
        "--out",
        tmp_path / "v",
        "--every",
        30,
        "--no-overlay_video",
        "--device",
        "cpu",
    )
    assert rc == 0, err
    assert len(list((tmp_path / "v" / "masks").glob("*.png"))) > 0
    for argv, says in [
        (("--checkpoint", a, low), "works at resolution 0.25 of the frame"),
        (("--checkpoint", a, a), "given twice"),
        (("--checkpoint", a, b, "--min_area", "tune"), "not for an ensemble"),
        (("--checkpoint", a, b, "--backend", "onnxruntime"), "needs --backend torch"),
    ]:
        rc, out, err = run_main("predict", *argv, "--data", test, "--out", tmp_path / "bad", "--device", "cpu")
        lines = err.strip().splitlines()
        assert rc in (1, 2) and len(lines) == 1 and says in lines[0], (argv, err)
        assert not (tmp_path / "bad").exists()


def test_run_level_settings_refuse_an_ensemble_in_one_line(env, two_runs):
    """Decisions belong to one run: asking for a run's decisions with several checkpoints is one SurgsegError, not a
    TypeError."""
    from surgseg.core import SurgsegError
    from surgseg.postprocess import load_predictor

    a, b, _ = two_runs
    with pytest.raises(SurgsegError, match="2 checkpoints where one run is expected"):
        load_predictor([a, b], device="cpu")  # decisions=True: RUN/decisions.json of which run?
    assert len(load_predictor([a, b], decisions=False, device="cpu").models) == 2
