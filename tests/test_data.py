"""surgseg.data from the outside: the `surgseg unpack / validate / extract` commands as subprocesses (exit
codes, one-line errors naming the file, nothing half-written), every bad input of the issue on its own,
extraction cross-checked frame by frame against a sequential decode on several codecs, and the dataset
in a multi-worker DataLoader."""
import os, re, shutil, subprocess, sys, zipfile
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from surgseg.core import SurgsegError, write_mask, read_mask
from surgseg.data import (VIDEO_FILE, MASK_STEP, find_videos, validate, extract_frames, unpack, probe_video,
                          decode_sequential, split_by_operation, SegDataset)

SURGSEG = str(Path(sys.executable).with_name("surgseg"))
SIZE = (48, 64)


def make_video(path, n, size=SIZE, codec="MJPG", seed=0, gop=90):
    "An n-frame 60 fps video whose frames all differ (moving texture + frame number); codec: cv2 fourcc or 'h264'."
    h, w = size
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8), (0, 0), 2)
    def frame(i):
        f = tex[(i // 3) % h:(i // 3) % h + h, i % w:i % w + w].copy()
        cv2.putText(f, str(i), (2, h - 4), cv2.FONT_HERSHEY_SIMPLEX, h / 60, (255, 255, 255), 1)
        return f
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "h264":
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=60); s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.codec_context.options = {"g": str(gop)}
            for i in range(n):
                for p in s.encode(av.VideoFrame.from_ndarray(frame(i), format="bgr24")): c.mux(p)
            for p in s.encode(): c.mux(p)
    else:
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 60, (w, h))
        for i in range(n): vw.write(frame(i))
        vw.release()
    return path


def make_root(root, videos={"train/video_01": 250, "train/video_02_1": 130, "train/video_02_2": 125, "test/video_41": 181},
              codec="MJPG"):
    root = Path(root)
    for i, (rel, n) in enumerate(videos.items()):
        d = root / rel
        make_video(d / VIDEO_FILE, n, codec=codec, seed=i)
        rng = np.random.default_rng(i)
        for f in range(0, n, MASK_STEP):
            write_mask(d / "segmentation" / f"{f:09d}.png", rng.integers(0, 10, SIZE).astype(np.uint8))
    return root


def run(*args):
    "Run `surgseg ARGS`: (exit code, stdout, stderr without the progress-bar lines)."
    r = subprocess.run([SURGSEG, *map(str, args)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = "".join(l for l in r.stderr.replace("\r", "\n").splitlines(keepends=True) if not re.match(r"^\w+: +\d+%\|", l) and l.strip())
    return r.returncode, r.stdout, err


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("good") / "root")


@pytest.fixture
def copy(good, tmp_path):
    dst = tmp_path / "root"; shutil.copytree(good, dst); return dst


# ---------------------------------------------------------------- every bad input, on its own

def _corrupt(p): p.write_bytes(p.read_bytes()[:60])
def _value(p): Image.fromarray(np.full(SIZE, 11, np.uint8)).save(p)
def _size(p): Image.fromarray(np.zeros((SIZE[0] + 2, SIZE[1]), np.uint8)).save(p)
def _rgb(p): Image.fromarray(np.zeros(SIZE + (3,), np.uint8)).save(p)
def _16bit(p): Image.fromarray(np.zeros(SIZE, np.uint16)).save(p)
def _palette(p): Image.fromarray(np.zeros(SIZE, np.uint8)).convert("P").save(p)

MASK_CASES = {"corrupt": (_corrupt, "unreadable image"), "value": (_value, "value 11 is not a class id"),
              "size": (_size, "size 64x50, expected 64x48"), "rgb": (_rgb, "an RGB image"),
              "16bit": (_16bit, "a 16-bit image"), "palette": (_palette, "a palette image")}


@pytest.mark.parametrize("case", MASK_CASES)
def test_bad_mask_is_one_problem_naming_the_file(copy, case):
    fn, msg = MASK_CASES[case]
    p = copy / "train/video_01/segmentation/000000120.png"; fn(p)
    problems = validate(copy, workers=1, progress=False)
    assert len(problems) == 1 and problems[0].startswith(f"{p}: ") and msg in problems[0], problems


def test_bad_videos_each_one_problem(copy):
    (copy / "train/video_01" / VIDEO_FILE).unlink()                                        # missing
    v = copy / "train/video_02_1" / VIDEO_FILE; v.write_bytes(v.read_bytes()[:v.stat().st_size // 2])  # truncated
    make_video(copy / "test/video_41" / VIDEO_FILE, 100)                                    # shorter than its masks
    problems = validate(copy, workers=1, progress=False)
    assert len(problems) == 4, problems
    assert problems[0] == f"{copy}/train/video_01/{VIDEO_FILE}: video file is missing"
    assert problems[1].startswith(f"{copy}/train/video_02_1/{VIDEO_FILE}: truncated video: the header declares 130 frames, the file holds ")
    assert problems[2:] == [f"{copy}/test/video_41/segmentation/{f:09d}.png: frame {f} is past the end of the video (100 frames)" for f in (120, 180)]


def test_missing_and_off_grid_masks(copy):
    seg = copy / "train/video_01/segmentation"
    (seg / "000000060.png").unlink(); (seg / "000000120.png").rename(seg / "000000121.png"); (seg / "notes.txt").write_text("x")
    problems = validate(copy, workers=1, progress=False)
    assert sorted(p.split(": ")[0].rsplit("/", 1)[1] for p in problems) == \
        ["000000060.png", "000000120.png", "000000121.png", "notes.txt"], problems


# ---------------------------------------------------------------- the commands

def test_validate_cli(good, copy, tmp_path):
    rc, out, err = run("validate", good)
    assert rc == 0 and "OK: 4 videos (train: 3, test: 1), 15 masks" in out, (rc, out, err)
    _value(copy / "test/video_41/segmentation/000000060.png")
    (copy / "train/video_02_2" / VIDEO_FILE).unlink()
    rc, out, err = run("validate", copy, "--workers", 2)
    lines = out.strip().splitlines()
    assert rc == 1 and len(lines) == 3 and lines[-1] == f"{copy}: 2 problem(s)", (rc, out, err)
    (tmp_path / "empty").mkdir(); (tmp_path / "photos/a").mkdir(parents=True)
    for folder, msg in [("empty", "empty folder"), ("photos", "not the SAR-RARP50 layout"), ("nowhere", "no such folder")]:
        rc, out, err = run("validate", tmp_path / folder)
        assert rc == 1 and out.startswith(f"{tmp_path / folder}: {msg}"), (rc, out, err)


def test_extract_cli_exact_and_resumable(copy):
    rc, out, err = run("extract", copy, "--workers", 2)
    assert rc == 0 and "15 frames written, 0 already there" in out and "4 by seeking" in out, (rc, out, err)
    for v in find_videos(copy):
        ref = {i: a for i, a, _ in decode_sequential(v.video, v.frames)}
        for f in v.frames: assert np.array_equal(cv2.imread(str(v.rgb_path(f)), cv2.IMREAD_UNCHANGED), ref[f])
        assert not [p for p in v.rgb_dir.iterdir() if p.name.startswith(".")]   # no temporary files left
    (copy / "train/video_01/rgb/000000060.png").unlink()
    rc, out, err = run("extract", copy)
    assert rc == 0 and "1 frames written, 14 already there" in out, (rc, out, err)


@pytest.mark.parametrize("case", ["missing", "truncated", "shorter"])
def test_extract_cli_bad_video(copy, case):
    v = copy / "train/video_01" / VIDEO_FILE
    if case == "missing": v.unlink(); msg = "video file is missing"
    if case == "truncated": v.write_bytes(v.read_bytes()[:v.stat().st_size // 3]); msg = "truncated video"
    if case == "shorter": make_video(v, 150); msg = "video is shorter than its masks: 150 frames, but 000000240.png is frame 240"
    rc, out, err = run("extract", copy / "train/video_01")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and err.startswith(f"surgseg extract: error: {v}: {msg}"), (rc, out, err)
    assert not (copy / "train/video_01/rgb").exists()   # nothing written for that video


def test_extract_cli_not_a_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    rc, out, err = run("extract", tmp_path / "empty")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "empty folder" in err, (rc, out, err)


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            if isinstance(v, zipfile.ZipInfo): z.writestr(v, b"target")
            else: z.writestr(k, v)
    return path


def test_unpack_cli(good, tmp_path):
    src = good / "train/video_01"
    files = {VIDEO_FILE: (src / VIDEO_FILE).read_bytes(),
             **{f"segmentation/{p.name}": p.read_bytes() for p in (src / "segmentation").iterdir()}}
    z1 = _zip(tmp_path / "video_1.zip", files)
    z2 = _zip(tmp_path / "test_set.zip", {f"test/video_41/{k}": v for k, v in files.items()})
    out = tmp_path / "root"
    rc, o, e = run("unpack", z1, z2, "--to", out)
    assert rc == 0 and "unpacked 12 files (0 already there" in o, (rc, o, e)
    assert [v.name for v in find_videos(out)] == ["video_01", "video_41"] and validate(out, progress=False) == []
    rc, o, e = run("unpack", z1, z2, "--to", out)                       # resumable: nothing rewritten
    assert rc == 0 and "unpacked 0 files (12 already there" in o, (rc, o, e)
    before = sorted(p for p in out.rglob("*"))
    link = zipfile.ZipInfo("segmentation/evil.png"); link.external_attr = 0o120777 << 16
    for name, members, msg in [("video_05.zip", {"segmentation/a.png": b"x", "../../../etc/evil": b"x"}, "would be written outside"),
                               ("video_06.zip", {"segmentation/a.png": b"x", "/abs/evil": b"x"}, "would be written outside"),
                               ("video_07.zip", {"segmentation/a.png": b"x", "link": link}, "is a symbolic link"),
                               ("video_01.zip", {VIDEO_FILE: b"other"}, "already exists and differs")]:
        rc, o, e = run("unpack", _zip(tmp_path / name, members), "--to", out)
        assert rc == 1 and msg in e and len(e.strip().splitlines()) == 1, (name, rc, o, e)
        assert sorted(p for p in out.rglob("*")) == before                # nothing written
    assert (out / "train/video_01" / VIDEO_FILE).read_bytes() == files[VIDEO_FILE]
    (tmp_path / "bad.zip").write_bytes(z1.read_bytes()[:200])
    rc, o, e = run("unpack", tmp_path / "bad.zip", "--to", out)
    assert rc == 1 and "bad.zip" in e, (rc, o, e)


# ---------------------------------------------------------------- extraction exactness across codecs

@pytest.mark.parametrize("codec,suffix,gop,fps,method,note", [
    ("MJPG", "avi", 0, 1, "seek", ""), ("mp4v", "avi", 0, 1, "seek", ""), ("h264", "mp4", 50, 1, "seek", ""),
    ("h264", "avi", 50, 1, "sequential", "decoded timestamps are not in presentation order"),
    ("h264", "mp4", 250, 1, "sequential", "keyframes too sparse"),
    ("MJPG", "avi", 0, 10, "seek", ""), ("mp4v", "avi", 0, 10, "sequential", "keyframes too sparse")])
def test_extraction_equals_sequential_decode(tmp_path, codec, suffix, gop, fps, method, note):
    "The frames of a whole video, extracted the fast way where it pays, equal the sequential decode."
    d = tmp_path / "video_09"
    p = make_video(d / f"v.{suffix}", 420, codec=codec, gop=gop)
    p.rename(d / VIDEO_FILE)
    for f in range(0, 420, MASK_STEP): write_mask(d / "segmentation" / f"{f:09d}.png", np.zeros(SIZE, np.uint8))
    r, = extract_frames(d, fps=fps, progress=False)
    step = 60 // fps
    assert r.method == method and note in r.note and r.written == len(range(0, 420, step)), r
    ref = dict((i, a) for i, a, _ in decode_sequential(d / VIDEO_FILE, range(0, 420, step)))
    for f, a in ref.items():
        assert np.array_equal(cv2.imread(str(d / "rgb" / f"{f:09d}.png"), cv2.IMREAD_UNCHANGED), a), f
    assert sorted(p.name for p in (d / "rgb").iterdir()) == [f"{f:09d}.png" for f in ref]
    with pytest.raises(SurgsegError, match="fps 7 must divide 60"): extract_frames(d, fps=7, progress=False)


def test_probe_counts_frames_like_a_decode(tmp_path):
    for codec, name in [("MJPG", "a.avi"), ("h264", "b.mp4")]:
        p = make_video(tmp_path / name, 137, codec=codec)
        pr = probe_video(p)
        assert pr.n_frames == 137 == sum(1 for _ in av.open(str(p)).decode(video=0)) and pr.keyframes[0] == 0


# ---------------------------------------------------------------- split and dataset

def test_split_keeps_operations_together(good):
    videos = [v for v in find_videos(good) if v.split == "train"]
    for seed in range(10):
        tr, va = split_by_operation(videos, seed=seed)
        assert va and tr and not ({v.operation for v in tr} & {v.operation for v in va})
        assert {v.name for v in va} in ({"video_01"}, {"video_02_1", "video_02_2"})


def test_dataset_workers_draw_different_augmentations(copy):
    import torch
    extract_frames(copy, workers=1, progress=False)
    ds = SegDataset(copy, scale=0.5, train=True)
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, sampler=[3] * 8)
    imgs = [b["image"][0] for b in dl]
    assert len({img.sum().item() for img in imgs}) > 1      # not the same draw replayed by every worker
    ev = SegDataset(copy, scale=0.5)
    assert torch.equal(ev[3]["image"], ev[3]["image"]) and ev[3]["mask"].dtype == torch.int64
    assert np.array_equal(ev.full_mask(3), read_mask(ev.items[3][3]))
