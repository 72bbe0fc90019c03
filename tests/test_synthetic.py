"Tests of the synthetic SAR-RARP50 stand-in: layout, determinism, codecs, calibration, the `surgseg synth` CLI."

import hashlib, os, signal, subprocess, sys, time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from surgseg.core import MASK_STEP, read_mask, SurgsegError, Config
from surgseg.synthetic import (
    generate,
    ensure_synthetic,
    calibration,
    plan_dataset,
    Scene,
    SYNTHETIC_DEFAULT,
    SYNTHETIC_VERSION,
    SYNTHETIC_MARKER,
    marker_params,
    thin_widths,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=3, n_test=1, seconds=2.5, size=(136, 240), seed=7, split_ops=1, workers=1)


def decoded_frames_pyav(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def decoded_frames_cv2(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "root", **SMALL)


def test_layout(small):
    folders = sorted(str(p.relative_to(small)) for p in small.glob("*/*"))
    assert folders == ["test/video_04", "train/video_01", "train/video_02", "train/video_03"] or any(
        f.endswith("_1") for f in folders
    ), folders
    assert sum(f.endswith("_1") for f in folders) == 1 and sum(f.endswith("_2") for f in folders) == 1
    assert {f.split("/")[0] for f in folders} == {"train", "test"}
    assert [f for f in folders if f.startswith("test/")] == ["test/video_04"]
    for v in small.glob("*/video_*"):
        assert sorted(p.name for p in v.iterdir()) == [
            "action_continuous.txt",
            "action_discrete.txt",
            "segmentation",
            "video_left.avi",
        ]
        n = decoded_frames_pyav(v / "video_left.avi")
        assert n == decoded_frames_cv2(v / "video_left.avi")
        names = sorted(p.name for p in (v / "segmentation").iterdir())
        assert names == [f"{f:09d}.png" for f in range(0, n, 60)]
        assert len(names) == (n - 1) // 60 + 1
        for p in names:
            read_mask(v / "segmentation" / p, (136, 240))  # 8-bit L, values 0..9, right size
        with av.open(str(v / "video_left.avi")) as c:
            s = c.streams.video[0]
            assert (s.codec_context.width, s.codec_context.height) == (240, 136)
            assert float(s.average_rate) == 60
        disc = [l.split(",") for l in (v / "action_discrete.txt").read_text().splitlines()]
        assert [int(f) for f, _ in disc] == list(range(0, n, 6)) and all(0 <= int(l) <= 7 for _, l in disc)
        cont = [tuple(map(int, l.split(","))) for l in (v / "action_continuous.txt").read_text().splitlines()]
        assert cont[0][0] == 0 and cont[-1][1] == n - 1 and all(a[1] + 1 == b[0] for a, b in zip(cont, cont[1:]))
    assert not list(small.parent.glob(".*partial*"))


def test_masks_match_video(small):
    "The mask of a frame outlines what the decoded frame shows: instruments are grey metal, tissue is red."
    v = small / "train/video_01"
    with av.open(str(v / "video_left.avi")) as c:
        frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 60).to_ndarray(format="rgb24")
    m = read_mask(v / "segmentation/000000060.png")
    tissue, shaft = frame[m == 0].astype(int), frame[m == 3].astype(int)
    assert (tissue[:, 0] - tissue[:, 2]).mean() > 30  # reddish background
    if len(shaft) > 50:
        assert abs((shaft[:, 0] - shaft[:, 2]).mean()) < 20  # grey instrument


def test_deterministic(tmp_path, small):
    other = generate(tmp_path / "again", **SMALL)
    for p in sorted(small.rglob("*.png")):
        assert np.array_equal(read_mask(p), read_mask(other / p.relative_to(small))), p
    assert (small / "train/video_01/action_continuous.txt").read_text() == (
        other / "train/video_01/action_continuous.txt"
    ).read_text()
    third = generate(tmp_path / "other_seed", **{**SMALL, "seed": 8})
    diff = [
        not np.array_equal(read_mask(p), read_mask(third / p.relative_to(small)))
        for p in sorted(small.rglob("*.png"))
        if (third / p.relative_to(small)).exists()
    ]
    assert any(diff)


@pytest.mark.parametrize("codec", ["MJPG", "MP4V", "MPEG-4"])
def test_codecs_readable(tmp_path, codec):
    r = generate(tmp_path / "r", n_train=1, n_test=0, seconds=1.2, size=(72, 128), codec=codec, split_ops=0, workers=1)
    video = r / "train/video_01/video_left.avi"
    n = decoded_frames_pyav(video)
    assert n == decoded_frames_cv2(video) > 60
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.name == ("mjpeg" if codec == "MJPG" else "mpeg4")
    assert len(list((r / "train/video_01/segmentation").glob("*.png"))) == (n - 1) // 60 + 1


def test_bad_arguments(tmp_path):
    with pytest.raises(SurgsegError, match="not a codec"):
        generate(tmp_path / "x", codec="h265")
    with pytest.raises(SurgsegError, match="up to"):
        generate(tmp_path / "x", size=(1200, 1920))
    with pytest.raises(SurgsegError, match="even"):
        generate(tmp_path / "x", size=(135, 240))
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_calibration(seed):
    """Over the training masks of the default stand-in (SYNTHETIC_DEFAULT): pixel share within x2, frame presence
    within 15 points."""
    t = calibration(seed=seed)
    assert t.attrs["masks"] > 100
    bad = t[~t["share_ratio"].between(0.5, 2) | (t["presence_diff_pts"].abs() > 15)]
    assert bad.empty, bad.to_string()


def test_calibration_matches_written_masks(small):
    "The masks-only calibration path renders the very masks that `generate` writes."
    for p in plan_dataset(**{k: v for k, v in SMALL.items() if k != "workers"}):
        sc = Scene(p, appearance=False)
        for f in range(0, p.n_frames, MASK_STEP):
            assert np.array_equal(sc.mask(f), read_mask(small / p.split / p.name / "segmentation" / f"{f:09d}.png"))


def test_ensure_synthetic_parallel_and_existing(tmp_path, monkeypatch):
    "Two processes racing on the same root: both return it, one complete dataset, no partial folder left."
    monkeypatch.setenv("SURGSEG_HOME", str(tmp_path))
    code = (
        "import surgseg.synthetic as s; "
        "print(s.ensure_synthetic(n_train=2, n_test=1, seconds=1.5, size=(72, 128), split_ops=1, workers=2))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ})
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    root = tmp_path / f"synthetic-v{SYNTHETIC_VERSION}"
    assert outs == [str(root)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]
    assert len(list(root.glob("*/video_*/video_left.avi"))) == 4
    assert ensure_synthetic(root) == root


def test_default_mirrors_the_protocol():
    """10 test operations; enough training operations that each seldom-present class is in several of them, on
    either side."""
    from surgseg.data import operation_of

    plans = plan_dataset(**SYNTHETIC_DEFAULT)
    assert {k: v for k, v in SYNTHETIC_DEFAULT.items()} == dict(
        n_train=18, n_test=10, seconds=10, size=(540, 960), split_ops=2, first_test=41
    )
    test, train = [p for p in plans if p.split == "test"], [p for p in plans if p.split == "train"]
    assert len({operation_of(p.name) for p in test}) == 10 and len({operation_of(p.name) for p in train}) == 18
    assert sum(p.name.endswith("_1") for p in train) == 2
    assert [p.name for p in test] == [f"video_{i}" for i in range(41, 51)]  # numbered as the released test set
    for seed in (0, 1, 2):
        ps = plan_dataset(**{**SYNTHETIC_DEFAULT, "seed": seed})
        for c in (6, 7, 9):  # suction tool, needle holder, catheter
            ops = {
                s: {operation_of(p.name) for p in ps if p.split == s and p.visible[c][:-1].any()}
                for s in ("train", "test")
            }
            assert len(ops["train"]) >= 2 and len(ops["test"]) >= 2, (seed, c, ops)


def test_thin_structures_are_visible_at_the_working_resolution():
    """Thread and needle at least about 2 px wide at the default Config's working resolution (widths measured on the
    masks)."""
    train = [p for p in plan_dataset(**SYNTHETIC_DEFAULT) if p.split == "train"]
    w = thin_widths(train, Config().scale, max_masks=40)
    assert np.median(w[5]) >= 2 and np.median(w[4]) >= 2, {c: np.median(v) for c, v in w.items()}
    old = thin_widths(
        [p for p in plan_dataset(**{**SYNTHETIC_DEFAULT, "size": (270, 480)}) if p.split == "train"],
        Config().scale,
        max_masks=40,
    )
    assert np.median(old[5]) < 2  # what the 480x270 default gave


def test_default_folder_is_versioned_and_never_reused_silently(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGSEG_HOME", str(tmp_path))
    from surgseg.core import default_data_dir

    root = default_data_dir()
    assert root == tmp_path / f"synthetic-v{SYNTHETIC_VERSION}"
    root.mkdir()
    (root / SYNTHETIC_MARKER).write_text(
        "written by an older surgseg: n_train=6 n_test=2 seconds=20 size=(270, 480) codec=MJPG\n"
    )
    with pytest.raises(SurgsegError, match="made with other parameters than today's default"):
        ensure_synthetic()
    (root / SYNTHETIC_MARKER).write_text(f"Synthetic ...: {marker_params(**SYNTHETIC_DEFAULT)}\n")
    assert ensure_synthetic() == root  # today's definition: reused as is
    assert ensure_synthetic(
        tmp_path / "elsewhere", n_train=1, n_test=0, seconds=1, size=(36, 64), split_ops=0, workers=1, progress=False
    ).is_dir()  # an explicit root: no check


def surgseg(*args):
    exe = Path(sys.executable).parent / "surgseg"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli(tmp_path):
    r = surgseg("synth", "--help")
    assert r.returncode == 0 and "--codec" in r.stdout and "MJPG or MP4V" in r.stdout
    root = tmp_path / "cli"
    r = surgseg(
        "synth",
        root,
        "--n_train",
        1,
        "--n_test",
        1,
        "--seconds",
        1.5,
        "--width",
        128,
        "--height",
        72,
        "--split_ops",
        0,
        "--codec",
        "MP4V",
        "--workers",
        1,
    )
    assert r.returncode == 0, r.stderr
    assert "wrote 2 videos" in r.stdout
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/*")) == [
        "test/video_41",
        "train/video_01",
    ]  # test videos numbered as released
    before = sorted(root.rglob("*"))
    r = surgseg("synth", root, "--seconds", 1)
    assert (
        r.returncode == 1
        and r.stderr.strip().startswith("surgseg synth: error:")
        and "refusing to overwrite" in r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(root.rglob("*")) == before
    r = surgseg("synth", tmp_path / "bad", "--codec", "xyz")
    assert r.returncode == 1 and "not a codec" in r.stderr and not (tmp_path / "bad").exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing empty folder is fine
    r = surgseg(
        "synth", empty, "--n_train", 1, "--n_test", 0, "--seconds", 1, "--width", 128, "--height", 72, "--split_ops", 0
    )
    assert r.returncode == 0, r.stderr


def digest(root: Path) -> dict:
    "Every file of a dataset (relative path) and the hash of its bytes."
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_synth_killed_midway_and_rerun_gives_the_same_bytes(tmp_path, workers):
    "SIGKILL a real `generate` while it writes videos and masks; the rerun writes exactly the uninterrupted bytes."
    args = dict(n_train=2, n_test=1, seconds=3, size=(72, 128), seed=5, split_ops=1, workers=workers)
    root = tmp_path / "data" / "syn"
    code = f"from surgseg.synthetic import generate; generate({str(root)!r}, progress=False, **{args!r})"
    p = subprocess.Popen([sys.executable, "-c", code])
    try:  # wait until the hidden partial dataset holds some masks, then kill it mid-generation
        for _ in range(2000):
            if len(list(root.parent.glob(".syn.*.partial/*/*/segmentation/*.png"))) >= 2:
                break
            assert p.poll() is None, "finished before it could be killed"
            time.sleep(0.005)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not root.exists()  # nothing where a user looks
    assert [q.name.endswith(".partial") for q in root.parent.iterdir()] == [True]  # a hidden leftover
    generate(root, progress=False, **args)  # the rerun
    assert sorted(q.name for q in root.parent.iterdir()) == ["syn"]  # leftover removed, nothing else
    clean = generate(tmp_path / "clean" / "syn", progress=False, **args)  # an uninterrupted run
    assert digest(root) == digest(clean) and sum(k.endswith(".png") for k in digest(root)) >= 8
