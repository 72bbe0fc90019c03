"Tests of surgseg.inference through the command line: `surgseg predict`, `predict-image`, `predict-video`, and bad input."
import contextlib, io, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from surgseg.core import Config, read_mask, seed_everything
from surgseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")


def surgseg(*args):
    "Run the installed console script (a separate process, as a user would)."
    exe = Path(sys.executable).parent / "surgseg"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def run_main(*args):
    "Run the CLI dispatcher in-process (the same code path, without paying torch's import again)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "A tiny synthetic dataset and an untrained U-Net checkpoint saved as a run's best/."
    from surgseg.synthetic import generate
    from surgseg.models import build_model, save_model
    tmp = tmp_path_factory.mktemp("inference")
    root = generate(tmp / "data", n_train=2, n_test=1, seconds=3, size=(64, 96))
    cfg = Config(model="unet", encoder="resnet18", weights="none", resolution=0.5, data_dir=str(root))
    seed_everything(0)
    save_model(build_model(cfg), cfg, tmp / "run" / "best")
    return dict(tmp=tmp, root=root, run=tmp / "run")


def gt_masks(split):
    return sorted(p.relative_to(split) for p in split.glob("video_*/segmentation/*.png"))


def test_predict_split_cli_official_layout(env):
    "The console script writes exactly one full-size 8-bit mask per ground-truth mask, accepted by `evaluate`."
    from surgseg.evaluate import evaluate
    test, pred = env["root"] / "test", env["tmp"] / "pred"
    r = surgseg("predict", "--checkpoint", env["run"], "--data", test, "--out", pred)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 masks of 1 videos" in r.stdout
    assert sorted(p.relative_to(pred) for p in pred.glob("video_*/segmentation/*.png")) == gt_masks(test)
    for rel in gt_masks(test): read_mask(pred / rel, read_mask(test / rel).shape)
    res = evaluate(test, pred, workers=1, progress=False)
    assert 0 <= res["score"] <= 1 and res["n_frames"] == 4


def test_predict_split_tta_and_tuned_min_area(env):
    "--tta and --min_area tune (chosen on the run's validation split) run and change what they should."
    a, b = env["tmp"] / "pred_plain", env["tmp"] / "pred_tuned"
    rc, out, err = run_main("predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", a)
    assert rc == 0, err
    rc, out, err = run_main("predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", b,
                            "--tta", "--min_area", "tune")
    assert rc == 0, err
    assert "tuned on the validation split: --min_area" in out and "tta=True" in out
    assert len(list(b.glob("video_*/segmentation/*.png"))) == 4


def test_predict_image_and_video_cli(env):
    "predict-image on a folder and predict-video with --every: masks, overlays, overlay video."
    from surgseg.data import extract_frames, find_videos
    from surgseg.inference import video_info
    v = find_videos(env["root"] / "test")[0]
    extract_frames([v], progress=False)
    rc, out, err = run_main("predict-image", v.rgb_dir, "--checkpoint", env["run"], "--out", env["tmp"] / "img")
    assert rc == 0, err
    assert len(list((env["tmp"] / "img" / "masks").glob("*.png"))) == len(v.frames)
    assert len(list((env["tmp"] / "img" / "overlays").glob("*.png"))) == len(v.frames)
    rc, out, err = run_main("predict-video", v.video, "--checkpoint", env["run"], "--out", env["tmp"] / "vid", "--every", 30)
    assert rc == 0, err
    n = -(-video_info(v.video)["frames"] // 30)
    assert len(list((env["tmp"] / "vid" / "masks").glob("*.png"))) == n
    assert video_info(env["tmp"] / "vid" / "video_left_overlay.mp4")["frames"] == n


def _fails(args, *expected, out=None):
    "The command exits 1 with one line on stderr containing `expected`, and `out` was not created."
    rc, _, err = run_main(*args)
    assert rc == 1, err
    lines = [l for l in err.splitlines() if l.strip()]   # (a progress bar may precede the error)
    errors = [l for l in lines if l.startswith(f"surgseg {args[0]}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for e in expected: assert e in errors[0], errors[0]
    if out is not None: assert not Path(out).exists()


def test_bad_checkpoints(env):
    "Missing checkpoint; another model's weights beside the config: one line naming the file, nothing written."
    from surgseg.models import build_model, save_model
    tmp, test = env["tmp"], env["root"] / "test"
    _fails(["predict", "--checkpoint", tmp / "nope", "--data", test, "--out", tmp / "p1"], "nope: checkpoint not found", out=tmp / "p1")
    cfg = Config(model="fpn", encoder="resnet18", weights="none")
    save_model(build_model(cfg), cfg, tmp / "other" / "best")
    shutil.copy(env["run"] / "best" / "config.yaml", tmp / "other" / "best" / "config.yaml")
    _fails(["predict", "--checkpoint", tmp / "other", "--data", test, "--out", tmp / "p2"],
           "other/best/model.safetensors: does not match", out=tmp / "p2")
    _fails(["predict", "--data", test, "--out", tmp / "p3"], "--checkpoint is required", out=tmp / "p3")


def test_bad_images_and_videos(env):
    "An unreadable image or video fails with its name; the output folder is not created."
    tmp = env["tmp"]
    imgs = tmp / "bad_imgs"; imgs.mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(imgs / "a.png")
    (imgs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _fails(["predict-image", imgs, "--checkpoint", env["run"], "--out", tmp / "o1"], "b.png: unreadable image", out=tmp / "o1")
    (tmp / "junk.avi").write_bytes(b"RIFF" + bytes(200))
    _fails(["predict-video", tmp / "junk.avi", "--checkpoint", env["run"], "--out", tmp / "o2"], "junk.avi: unreadable video", out=tmp / "o2")
    _fails(["predict-video", tmp / "none.mp4", "--checkpoint", env["run"], "--out", tmp / "o3"], "none.mp4: video file is missing", out=tmp / "o3")


def test_refuses_non_empty_output(env):
    "A prediction folder that already holds files is refused and left exactly as it was."
    out = env["tmp"] / "taken"; out.mkdir(); (out / "keep.txt").write_text("mine")
    _fails(["predict", "--checkpoint", env["run"], "--data", env["root"] / "test", "--out", out], "taken: output folder is not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".taken")]
