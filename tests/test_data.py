"""surgseg.data from the outside: the `surgseg unpack / validate / extract` commands as subprocesses (exit
codes, one-line errors naming the file, nothing half-written), every bad input of the issues on its own,
`read_frames` and extraction cross-checked frame by frame against a plain sequential decode on several
codecs, `unpack` and `extract` killed with SIGKILL mid-write and rerun (byte-identical to an uninterrupted
run), the per-video extraction lock, and the dataset in a multi-worker DataLoader."""

import contextlib, gc, json, os, re, shutil, signal, socket, subprocess, sys, zipfile
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from surgseg.core import SurgsegError, MASK_STEP, Config, write_mask, read_mask
from surgseg.data import (
    VIDEO_FILE,
    find_videos,
    validate_dataset,
    extract_frames,
    probe_video,
    read_frames,
    split_by_operation,
    make_splits,
    resolve_data_dir,
    SegDataset,
)

SURGSEG = str(Path(sys.executable).with_name("surgseg"))
SIZE = (48, 64)


def make_video(path, n, size=SIZE, codec="MJPG", seed=0, gop=90, fps=60):
    "An n-frame video whose frames all differ (moving texture + frame number); codec: cv2 fourcc or 'h264'."
    h, w = size
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8), (0, 0), 2)

    def frame(i):
        f = tex[(i // 3) % h : (i // 3) % h + h, i % w : i % w + w].copy()
        cv2.putText(f, str(i), (2, h - 4), cv2.FONT_HERSHEY_SIMPLEX, h / 60, (255, 255, 255), 1)
        return f

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "h264":
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.codec_context.options = {"g": str(gop)}
            for i in range(n):
                for p in s.encode(av.VideoFrame.from_ndarray(frame(i), format="bgr24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    else:
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
        for i in range(n):
            vw.write(frame(i))
        vw.release()
    return path


def reference(path, frames):
    """The definition of frame N, written plainly: decode every frame in order with PyAV; {frame: RGB} of the wanted
    ones."""
    want, out = set(frames), {}
    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i in want:
                out[i] = fr.to_ndarray(format="rgb24")
    return out


def undecodable(path):
    "Zero the payload of every packet: the container stays readable, no frame decodes."
    b = bytearray(Path(path).read_bytes())
    with av.open(str(path)) as c:
        for p in c.demux(video=0):
            if p.size:
                b[p.pos : p.pos + p.size] = bytes(p.size)
    Path(path).write_bytes(bytes(b))


def tree(root):
    "{relative path: bytes} of every file under root, hidden ones included."
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def make_root(
    root,
    videos={"train/video_01": 250, "train/video_02_1": 130, "train/video_02_2": 125, "test/video_41": 181},
    codec="MJPG",
):
    root = Path(root)
    for i, (rel, n) in enumerate(videos.items()):
        d = root / rel
        make_video(d / VIDEO_FILE, n, codec=codec, seed=i)
        rng = np.random.default_rng(i)
        for f in range(0, n, MASK_STEP):
            write_mask(d / "segmentation" / f"{f:09d}.png", rng.integers(0, 10, SIZE).astype(np.uint8))
    return root


def run(*args, cmd=None):
    "Run `surgseg ARGS` (or `cmd`): (exit code, stdout, stderr without the progress-bar lines)."
    r = subprocess.run(
        cmd or [SURGSEG, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    err = "".join(
        l
        for l in r.stderr.replace("\r", "\n").splitlines(keepends=True)
        if not re.match(r"^\w+: +\d+%\|", l) and l.strip()
    )
    return r.returncode, r.stdout, err


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("good") / "root")


@pytest.fixture
def copy(good, tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(good, dst)
    return dst


# ---------------------------------------------------------------- every bad input, on its own


def _corrupt(p):
    p.write_bytes(p.read_bytes()[:60])


def _value(p):
    Image.fromarray(np.full(SIZE, 11, np.uint8)).save(p)


def _size(p):
    Image.fromarray(np.zeros((SIZE[0] + 2, SIZE[1]), np.uint8)).save(p)


def _rgb(p):
    Image.fromarray(np.zeros(SIZE + (3,), np.uint8)).save(p)


def _16bit(p):
    Image.fromarray(np.zeros(SIZE, np.uint16)).save(p)


def _palette(p):
    Image.fromarray(np.zeros(SIZE, np.uint8)).convert("P").save(p)


MASK_CASES = {
    "corrupt": (_corrupt, "unreadable image"),
    "value": (_value, "value 11 is not a class id"),
    "size": (_size, "size 64x50, expected 64x48"),
    "rgb": (_rgb, "an RGB image"),
    "16bit": (_16bit, "a 16-bit image"),
    "palette": (_palette, "a palette image"),
}


@pytest.mark.parametrize("case", MASK_CASES)
def test_bad_mask_is_one_problem_naming_the_file(copy, case):
    fn, msg = MASK_CASES[case]
    p = copy / "train/video_01/segmentation/000000120.png"
    fn(p)
    problems = validate_dataset(copy, workers=1, progress=False)
    assert len(problems) == 1 and problems[0].startswith(f"{p}: ") and msg in problems[0], problems


def test_bad_videos_each_one_problem(copy):
    (copy / "train/video_01" / VIDEO_FILE).unlink()  # missing
    v = copy / "train/video_02_1" / VIDEO_FILE
    v.write_bytes(v.read_bytes()[: v.stat().st_size // 2])  # truncated
    make_video(copy / "test/video_41" / VIDEO_FILE, 100)  # shorter than its masks
    problems = validate_dataset(copy, workers=1, progress=False)
    assert len(problems) == 4, problems
    assert problems[0] == f"{copy}/train/video_01/{VIDEO_FILE}: video file is missing"
    assert problems[1].startswith(
        f"{copy}/train/video_02_1/{VIDEO_FILE}: truncated video: the header declares 130 frames, the file holds "
    )
    assert problems[2:] == [
        f"{copy}/test/video_41/segmentation/{f:09d}.png: frame {f} is past the end of the video (100 frames)"
        for f in (120, 180)
    ]


def test_missing_and_off_grid_masks(copy):
    seg = copy / "train/video_01/segmentation"
    (seg / "000000060.png").unlink()
    (seg / "000000120.png").rename(seg / "000000121.png")
    (seg / "notes.txt").write_text("x")
    problems = validate_dataset(copy, workers=1, progress=False)
    assert sorted(p.split(": ")[0].rsplit("/", 1)[1] for p in problems) == [
        "000000060.png",
        "000000120.png",
        "000000121.png",
        "notes.txt",
    ], problems


# ---------------------------------------------------------------- the commands


def test_validate_cli(good, copy, tmp_path):
    rc, out, err = run("validate", good)
    assert rc == 0 and "OK: 4 videos (train: 3, test: 1), 15 masks" in out, (rc, out, err)
    _value(copy / "test/video_41/segmentation/000000060.png")
    (copy / "train/video_02_2" / VIDEO_FILE).unlink()
    rc, out, err = run("validate", copy, "--workers", 2)
    lines = out.strip().splitlines()
    assert rc == 1 and len(lines) == 3 and lines[-1] == f"{copy}: 2 problem(s)", (rc, out, err)
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos/a").mkdir(parents=True)
    for folder, msg in [
        ("empty", "empty folder"),
        ("photos", "not the SAR-RARP50 layout"),
        ("nowhere", "no such folder"),
    ]:
        rc, out, err = run("validate", tmp_path / folder)
        assert rc == 1 and out.startswith(f"{tmp_path / folder}: {msg}"), (rc, out, err)


def test_extract_cli_exact_and_resumable(copy):
    rc, out, err = run("extract", copy, "--workers", 2)
    assert rc == 0 and "15 frames written, 0 already there" in out and "4 by seeking" in out, (rc, out, err)
    for v in find_videos(copy):
        ref = reference(v.video, v.frames)
        for f in v.frames:
            assert np.array_equal(cv2.imread(str(v.rgb_path(f)), cv2.IMREAD_UNCHANGED), ref[f][..., ::-1])
        assert not [p for p in v.rgb_dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    (copy / "train/video_01/rgb/000000060.png").unlink()
    rc, out, err = run("extract", copy)
    assert rc == 0 and "1 frames written, 14 already there" in out, (rc, out, err)


@pytest.mark.parametrize("case", ["missing", "truncated", "shorter"])
def test_extract_cli_bad_video(copy, case):
    v = copy / "train/video_01" / VIDEO_FILE
    if case == "missing":
        v.unlink()
        msg = "video file is missing"
    if case == "truncated":
        v.write_bytes(v.read_bytes()[: v.stat().st_size // 3])
        msg = "truncated video"
    if case == "shorter":
        make_video(v, 150)
        msg = "video is shorter than its masks: 150 frames, but 000000240.png is frame 240"
    rc, out, err = run("extract", copy / "train/video_01")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and err.startswith(f"surgseg extract: error: {v}: {msg}"), (
        rc,
        out,
        err,
    )
    assert not (copy / "train/video_01/rgb").exists()  # nothing written for that video


def test_extract_cli_not_a_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    rc, out, err = run("extract", tmp_path / "empty")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "empty folder" in err, (rc, out, err)


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            if isinstance(v, zipfile.ZipInfo):
                z.writestr(v, b"target")
            else:
                z.writestr(k, v)
    return path


def test_unpack_cli(good, tmp_path):
    src = good / "train/video_01"
    files = {
        VIDEO_FILE: (src / VIDEO_FILE).read_bytes(),
        **{f"segmentation/{p.name}": p.read_bytes() for p in (src / "segmentation").iterdir()},
    }
    z1 = _zip(tmp_path / "video_1.zip", files)
    z2 = _zip(tmp_path / "test_set.zip", {f"test/video_41/{k}": v for k, v in files.items()})
    out = tmp_path / "root"
    rc, o, e = run("unpack", z1, z2, "--to", out)
    assert rc == 0 and "unpacked 12 files (0 already there" in o, (rc, o, e)
    assert [v.name for v in find_videos(out)] == ["video_01", "video_41"] and validate_dataset(
        out, progress=False
    ) == []
    rc, o, e = run("unpack", z1, z2, "--to", out)  # resumable: nothing rewritten
    assert rc == 0 and "unpacked 0 files (12 already there" in o, (rc, o, e)
    before = sorted(p for p in out.rglob("*"))
    link = zipfile.ZipInfo("segmentation/evil.png")
    link.external_attr = 0o120777 << 16
    for name, members, msg in [
        ("video_05.zip", {"segmentation/a.png": b"x", "../../../etc/evil": b"x"}, "would be written outside"),
        ("video_06.zip", {"segmentation/a.png": b"x", "/abs/evil": b"x"}, "would be written outside"),
        ("video_07.zip", {"segmentation/a.png": b"x", "link": link}, "is a symbolic link"),
        ("video_01.zip", {VIDEO_FILE: b"other"}, "already exists and differs"),
    ]:
        rc, o, e = run("unpack", _zip(tmp_path / name, members), "--to", out)
        assert rc == 1 and msg in e and len(e.strip().splitlines()) == 1, (name, rc, o, e)
        assert sorted(p for p in out.rglob("*")) == before  # nothing written
    assert (out / "train/video_01" / VIDEO_FILE).read_bytes() == files[VIDEO_FILE]
    (tmp_path / "bad.zip").write_bytes(z1.read_bytes()[:200])
    rc, o, e = run("unpack", tmp_path / "bad.zip", "--to", out)
    assert rc == 1 and "bad.zip" in e, (rc, o, e)


# ---------------------------------------------------------------- extraction exactness across codecs


@pytest.mark.parametrize(
    "codec,suffix,gop,fps,method,note",
    [
        ("MJPG", "avi", 0, 1, "seek", ""),
        ("mp4v", "avi", 0, 1, "seek", ""),
        ("h264", "mp4", 50, 1, "seek", ""),
        ("h264", "avi", 50, 1, "sequential", "decoded timestamps are not in presentation order"),
        ("h264", "mp4", 250, 1, "sequential", "keyframes too sparse"),
        ("MJPG", "avi", 0, 10, "seek", ""),
        ("mp4v", "avi", 0, 10, "sequential", "keyframes too sparse"),
    ],
)
def test_extraction_equals_sequential_decode(tmp_path, codec, suffix, gop, fps, method, note):
    "The frames of a whole video, extracted the fast way where it pays, equal the sequential decode."
    d = tmp_path / "video_09"
    p = make_video(d / f"v.{suffix}", 420, codec=codec, gop=gop)
    p.rename(d / VIDEO_FILE)
    for f in range(0, 420, MASK_STEP):
        write_mask(d / "segmentation" / f"{f:09d}.png", np.zeros(SIZE, np.uint8))
    (r,) = extract_frames(d, fps=fps, progress=False)
    step = 60 // fps
    assert r.method == method and note in r.note and r.written == len(range(0, 420, step)), r
    ref = reference(d / VIDEO_FILE, range(0, 420, step))
    for f, a in ref.items():
        assert np.array_equal(cv2.imread(str(d / "rgb" / f"{f:09d}.png"), cv2.IMREAD_UNCHANGED), a[..., ::-1]), f
    assert sorted(p.name for p in (d / "rgb").iterdir()) == [f"{f:09d}.png" for f in ref]
    with pytest.raises(SurgsegError, match="fps 7 must divide 60"):
        extract_frames(d, fps=7, progress=False)


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
    # PyAV frees a decoder's slice threads only when the cyclic GC deallocates its (closed) container: if that happens
    # in a forked worker, whose copy of those threads does not exist, the worker hangs in pthread_cond_destroy (seen
    # with gdb in the full suite). Collect the decoders of the earlier tests here, in the parent, before the workers
    # fork.
    gc.collect()
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, sampler=[3] * 8)
    imgs = [b["image"][0] for b in dl]
    assert len({img.sum().item() for img in imgs}) > 1  # not the same draw replayed by every worker
    ev = SegDataset(copy, scale=0.5)
    assert torch.equal(ev[3]["image"], ev[3]["image"]) and ev[3]["mask"].dtype == torch.int64
    assert np.array_equal(ev.full_mask(3), read_mask(ev.items[3][3]))


# ---------------------------------------------------------------- the one frame reader


@pytest.mark.parametrize(
    "codec,suffix,gop,method",
    [
        ("MJPG", "avi", 0, "seek"),
        ("mp4v", "avi", 0, "seek"),
        ("h264", "mp4", 40, "seek"),
        ("h264", "avi", 40, "sequential"),
    ],
)
def test_read_frames_equals_sequential_decode(tmp_path, codec, suffix, gop, method):
    p = make_video(tmp_path / f"v.{suffix}", 300, codec=codec, gop=gop)
    want = [299, 7, 150, 41, 42, 7, 0, 120]
    r = read_frames(p, want)
    got = list(r)
    assert r.method == method and [f for f, _ in got] == sorted(set(want)), (r, [f for f, _ in got])
    ref = reference(p, want)
    for f, img in got:
        assert img.dtype == np.uint8 and img.shape == SIZE + (3,) and np.array_equal(img, ref[f]), f
    with pytest.raises(SurgsegError, match=r"v\.\w+: frame 300 does not exist \(the video has 300 frames, 0\.\.299\)"):
        read_frames(p, [0, 300])


def test_read_frames_is_rgb(tmp_path):
    "Colour order is RGB: a red video reads as high R, low B (OpenCV would give it the other way round)."
    vw = cv2.VideoWriter(str(tmp_path / "red.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 60, (64, 48))
    for _ in range(3):
        vw.write(np.full((48, 64, 3), (0, 0, 255), np.uint8))  # BGR red
    vw.release()
    ((_, img),) = read_frames(tmp_path / "red.avi", [1])
    r, g, b = img.reshape(-1, 3).mean(0)
    assert r > 200 and g < 40 and b < 40, (r, g, b)


# ---------------------------------------------------------------- bad input, second round


def _one_line_error(rc, out, err, path, msg):
    assert (
        rc == 1 and len(err.strip().splitlines()) == 1 and err.startswith(f"surgseg extract: error: {path}: {msg}")
    ), (rc, out, err)


@pytest.mark.parametrize("case", ["size", "fps", "undecodable"])
def test_video_that_does_not_fit_its_masks(copy, case):
    v = copy / "train/video_01" / VIDEO_FILE
    if case == "size":
        make_video(v, 250, size=(64, 96))
        msg = "frames are 96x64, but its masks are 64x48"
    if case == "fps":
        make_video(v, 250, fps=30)
        msg = "30 fps, but SAR-RARP50 videos are 60 fps"
    if case == "undecodable":
        undecodable(v)
        msg = "no decodable frame ("
    problems = validate_dataset(copy, workers=1, progress=False)
    assert len(problems) == 1 and problems[0].startswith(f"{v}: {msg}"), problems  # one problem, not one per mask
    rc, out, err = run("validate", copy)
    assert rc == 1 and out.startswith(f"{v}: {msg}"), (rc, out, err)
    _one_line_error(*run("extract", copy / "train/video_01"), v, msg)
    assert not (copy / "train/video_01/rgb").exists() and not list(
        (copy / "train/video_01").glob(".*")
    )  # nothing written


def test_paths_with_spaces_and_non_ascii(good, tmp_path):
    root = tmp_path / "my data" / "vidéos ü 手術"
    shutil.copytree(good, root)
    rc, out, err = run("validate", root)
    assert rc == 0 and "OK: 4 videos" in out, (rc, out, err)
    rc, out, err = run("extract", root)
    assert rc == 0 and "15 frames written" in out, (rc, out, err)
    v = find_videos(root)[0]
    ref = reference(v.video, v.frames)
    for f in v.frames:
        assert np.array_equal(cv2.imread(str(v.rgb_path(f)), cv2.IMREAD_UNCHANGED), ref[f][..., ::-1])


def test_dataset_root_that_is_a_symlink(good, tmp_path):
    real = tmp_path / "real"
    shutil.copytree(good, real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert validate_dataset(link, workers=1, progress=False) == []
    rc, out, err = run("extract", link, "--workers", 2)
    assert rc == 0 and "15 frames written" in out, (rc, out, err)
    assert len(list(real.glob("*/*/rgb/*.png"))) == 15  # the frames are in the real folder
    assert SegDataset(link)[0]["image"].shape == (3,) + SIZE


@contextlib.contextmanager
def read_only(folder):
    "Make `folder` unwritable for this user: permission bits, or for root (whom they do not stop) the immutable flag."
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot set the immutable flag: no way to make a read-only folder")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_folder(good, copy, tmp_path):
    d = copy / "train/video_01"
    before = tree(d)
    with read_only(d):
        _one_line_error(*run("extract", d), d, "cannot write the extracted frames here (")
    assert tree(d) == before
    z = tmp_path / "video_01.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(VIDEO_FILE, (good / "train/video_01" / VIDEO_FILE).read_bytes())
    out = tmp_path / "ro"
    out.mkdir()
    with read_only(out):
        rc, o, e = run("unpack", z, "--to", out)
    assert (
        rc == 1
        and len(e.strip().splitlines()) == 1
        and e.startswith(f"surgseg unpack: error: {out}: cannot write the dataset here (")
    ), (rc, o, e)
    assert not any(out.iterdir())


# ---------------------------------------------------------------- killed mid-write, rerun

# a real `surgseg` process that SIGKILLs itself in the middle of its K-th file write (after writing part of it)
KILLED = r"""
import os, pathlib, signal, sys, shutil, cv2
k, n = int(sys.argv[1]), [0]
def die_in_the_middle(write_part):
    n[0] += 1
    if n[0] == k: write_part(); os.kill(os.getpid(), signal.SIGKILL)
copy, imwrite = shutil.copyfileobj, cv2.imwrite
def copyfileobj(src, dst, length=0):
    die_in_the_middle(lambda: (dst.write(src.read(300)), dst.flush()))
    return copy(src, dst, length)
def write_png(path, img, params=()):
    die_in_the_middle(lambda: open(path, "wb").write(cv2.imencode(".png", img, params)[1].tobytes()[:200]))
    return imwrite(path, img, params)
write_bytes = pathlib.Path.write_bytes
def write_bytes_then_die(self, data):  # extraction encodes in memory, then writes the bytes
    die_in_the_middle(lambda: open(self, "wb").write(bytes(data)[:200]))
    return write_bytes(self, data)
shutil.copyfileobj, cv2.imwrite, pathlib.Path.write_bytes = copyfileobj, write_png, write_bytes_then_die
from surgseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


def killed_at(k, *args):
    rc, out, err = run(cmd=[sys.executable, "-c", KILLED, str(k), *map(str, args)])
    assert rc == -signal.SIGKILL, (rc, out, err)


@pytest.mark.parametrize("k", [1, 7])
def test_unpack_killed_and_rerun(good, tmp_path, k):
    src = good / "train/video_01"
    z = tmp_path / "video_01.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(src / VIDEO_FILE, VIDEO_FILE)
        for p in sorted((src / "segmentation").iterdir()):
            zf.write(p, f"segmentation/{p.name}")
        zf.write(good / "test/video_41" / VIDEO_FILE, f"test/video_41/{VIDEO_FILE}")
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run("unpack", z, "--to", ref)[0] == 0
    killed_at(k, "unpack", z, "--to", out)
    assert list(out.rglob(".*.tmp*")) and (out / ".unpack.lock").exists()  # it died mid-write, holding the lock
    rc, o, e = run("unpack", z, "--to", out)
    assert rc == 0 and f"unpacked {7 - (k - 1)} files ({k - 1} already there" in o, (rc, o, e)
    assert tree(out) == tree(ref)  # same bytes, nothing else left


@pytest.mark.parametrize("k", [1, 9])
def test_extract_killed_and_rerun(good, tmp_path, k):
    ref, out = tmp_path / "ref", tmp_path / "out"
    shutil.copytree(good, ref)
    shutil.copytree(good, out)
    assert run("extract", ref)[0] == 0
    killed_at(k, "extract", out, "--workers", 1)
    assert list(out.rglob("rgb/.*.tmp.png")) and list(out.rglob(".rgb.lock"))  # it died mid-write, holding a lock
    rc, o, e = run("extract", out)
    m = re.search(r"(\d+) frames written, (\d+) already there", o)
    # PNGs are written by several threads: when the k-th write dies, earlier ones may still be unfinished
    assert rc == 0 and m and int(m[1]) + int(m[2]) == 15 and int(m[2]) <= k - 1, (rc, o, e)
    assert tree(out) == tree(ref)


def test_second_extraction_of_a_video_is_refused(good, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(good, root)
    v = find_videos(root)[0]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom surgseg.core import output_lock\n"
            "with output_lock(sys.argv[1]): print('held', flush=True); time.sleep(120)",
            str(v.rgb_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, out, err = run("extract", root)
        assert rc == 1 and len(err.strip().splitlines()) == 1, (rc, out, err)
        assert re.match(
            rf"surgseg extract: error: {re.escape(str(v.rgb_dir))}: in use by pid {holder.pid} on "
            rf"{re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\dT",
            err,
        ), err
        assert not v.rgb_dir.exists()  # the other videos went ahead, this one untouched
        assert len(list(root.glob("*/*/rgb/*.png"))) == 15 - len(v.frames)
    finally:
        holder.kill()
        holder.wait()
    lock = json.loads((v.path / ".rgb.lock").read_text())
    assert lock["pid"] == holder.pid  # left behind by the killed holder: stale
    rc, out, err = run("extract", root)
    assert rc == 0 and f"{len(v.frames)} frames written" in out, (rc, out, err)
    assert not (v.path / ".rgb.lock").exists()


# ---------------------------------------------------------------- the data root and the splits of a run


def test_make_splits_and_data_dir(good, tmp_path):
    cfg = Config(data_dir=str(good), val_fraction=0.5, seed=3)
    tr, va = make_splits(cfg)
    assert sorted(v.name for v in tr + va) == ["video_01", "video_02_1", "video_02_2"]  # never the test split
    assert tr and va and not ({v.operation for v in tr} & {v.operation for v in va})
    assert make_splits(Config(data_dir=str(good), val_fraction=0))[1] == []
    assert resolve_data_dir(str(good)) == good
    for bad, msg in [
        (tmp_path / "nowhere", "data folder not found"),
        (good / "train/video_01" / VIDEO_FILE, "not a folder"),
    ]:
        with pytest.raises(SurgsegError, match=f"^{re.escape(str(bad))}: {msg}"):
            resolve_data_dir(str(bad))


def test_seeded_draws_do_not_depend_on_the_process(copy):
    """ds[i, seed]: the augmentation is a function of the seed alone, in this process or any loader worker (exact
    resume)."""
    import torch

    extract_frames(copy, workers=1, progress=False)
    ds = SegDataset(copy, scale=0.5, train=True)
    here = ds[3, 77]["image"]
    _ = ds[5]  # other draws in between change nothing
    assert torch.equal(here, ds[3, 77]["image"]) and torch.equal(
        here, SegDataset(copy, scale=0.5, train=True, seed=5)[3, 77]["image"]
    )
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, sampler=[(3, 77), (3, 78), (3, 77), (3, 77)])
    imgs = [b["image"][0] for b in dl]
    assert all(torch.equal(here, imgs[k]) for k in (0, 2, 3)) and not torch.equal(here, imgs[1])


# ---------------------------------------------------------------- class-aware crops


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """Extracted frames whose masks are background, a shaft band and one 2x2 catheter blob (class 9) somewhere
    different each frame."""
    root = tmp_path_factory.mktemp("sparse") / "root"
    d = root / "train/video_01"
    make_video(d / VIDEO_FILE, 421, size=(96, 128))
    rng = np.random.default_rng(0)
    for f in range(0, 421, MASK_STEP):
        m = np.zeros((96, 128), np.uint8)
        m[10:20, :] = 3
        y, x = rng.integers(24, 94), rng.integers(0, 126)
        m[y : y + 2, x : x + 2] = 9
        write_mask(d / "segmentation" / f"{f:09d}.png", m)
    extract_frames(root, workers=1, progress=False)
    return root


def test_crops_have_the_asked_size(sparse):
    for size, want in [(16, (16, 16)), ((20, 40), (20, 40)), ([64, 32], (64, 32))]:
        ds = SegDataset(sparse, scale=0.5, train=True, crop_size=size, crop_rare=0.5)
        x = ds[2, 11]
        assert x["image"].shape == (3,) + want and x["mask"].shape == want and ds.out_size(0) == want
    ev = SegDataset(sparse, scale=0.5, crop_size=16, crop_rare=1)  # evaluation: whole frames
    assert ev[0]["mask"].shape == (48, 64)
    big = SegDataset(sparse, scale=0.5, train=True, augment=False, crop_size=(60, 80), fill_mask=255)
    m = big[0, 1]["mask"].numpy()  # larger than the 48x64 frame: padded
    assert m.shape == (60, 80) and (m == 255).sum() == 60 * 80 - 48 * 64
    assert {255, 0, 3} >= set(np.unique(m).tolist()) - {9}
    with pytest.raises(SurgsegError, match="crop_rare"):
        SegDataset(sparse, train=True, crop_size=16, crop_rare=2)


@pytest.mark.parametrize("augment", [False, True])
def test_rare_crops_contain_the_rare_class(sparse, augment):
    """crop_rare=1 with the catheter as the only centre class: every crop holds it (2x2 px at 0.5 = 1 px); random
    crops seldom do."""
    w = [0] * 9 + [1]
    rare = SegDataset(sparse, scale=1.0, train=True, augment=augment, crop_size=24, crop_rare=1.0, class_weights=w)
    rand = SegDataset(sparse, scale=1.0, train=True, augment=augment, crop_size=24, crop_rare=0.0, class_weights=w)
    hits = [bool((rare[i, s]["mask"] == 9).any()) for i in range(len(rare)) for s in range(6)]
    base = [bool((rand[i, s]["mask"] == 9).any()) for i in range(len(rand)) for s in range(6)]
    assert all(hits) if not augment else np.mean(hits) >= 0.9  # the affine may shift a 2x2 blob out of a few
    assert np.mean(base) < 0.5


def test_crops_are_a_function_of_the_seed(sparse):
    import torch

    ds = SegDataset(sparse, scale=0.5, train=True, crop_size=20, crop_rare=0.5, seed=0)
    a = ds[3, 77]
    _ = ds[4], ds[1, 5]  # other draws in between change nothing
    b = SegDataset(sparse, scale=0.5, train=True, crop_size=20, crop_rare=0.5, seed=9)[3, 77]
    assert (
        torch.equal(a["image"], b["image"])
        and torch.equal(a["mask"], b["mask"])
        and torch.equal(a["image"], ds[3, 77]["image"])
    )
    masks = {ds[3, s]["mask"].numpy().tobytes() for s in range(12)}
    assert len(masks) > 6  # other seeds, other crops
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, sampler=[(3, 77), (3, 78), (3, 77)])
    got = [x["image"][0] for x in dl]
    assert torch.equal(got[0], a["image"]) and torch.equal(got[2], a["image"]) and not torch.equal(got[1], a["image"])


def test_random_crops_cover_the_frame(sparse):
    "crop_rare=0: the window is uniform over the frame (corners from crop_window with the pipeline's generator)."
    from surgseg.data import crop_window

    m = read_mask(sparse / "train/video_01/segmentation/000000000.png")
    rng = np.random.default_rng(0)
    ys, xs, cs = zip(*[crop_window(m, (32, 32), 0.0, rng) for _ in range(2000)])
    assert set(cs) == {-1} and min(ys) == 0 and max(ys) == 64 and min(xs) == 0 and max(xs) == 96
    assert abs(np.mean(ys) - 32) < 2 and abs(np.mean(xs) - 48) < 3
