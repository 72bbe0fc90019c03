"""One I/O layer (issue 19): one bounded background writer, `probe_video` the one metadata reader, one table of option
checks shared by the CLI and the functions, and one home for the hashing and error-line helpers."""

import contextlib, errno, io, re, threading, time
from pathlib import Path

import numpy as np
import pytest
import torch

from surgseg import core, data, inference
from surgseg.cli import main
from surgseg.core import NUM_CLASSES, OPTION_RULES, BackgroundWriter, Config, OptionError, check_option

PKG = Path(core.__file__).parent


def run(*argv):
    "`surgseg ARGV` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


class Toy(torch.nn.Module):
    "Class 3 where red > 0.5."

    def forward(self, x):
        logits = torch.zeros(x.shape[0], NUM_CLASSES, *x.shape[2:])
        logits[:, 3] = (x[:, 0] - 0.5) * 8
        return logits


def toy(**kw):
    return inference.Predictor(Toy(), Config(), device="cpu", batch_size=2, **kw)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from surgseg.synthetic import generate

    root = generate(
        tmp_path_factory.mktemp("io") / "data",
        n_train=1,
        n_test=1,
        seconds=2,
        size=(64, 96),
        split_ops=0,
        workers=1,
        progress=False,
    )
    return next((root / "test").glob("video_*/video_left.avi"))


# --- one bounded writer ----------------------------------------------------------------------------------


def test_writer_keeps_order_with_one_thread_and_bounds_what_waits():
    done, alive, peak = [], [0], [0]
    lock = threading.Lock()

    def job(i):
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        time.sleep(0.002)
        done.append(i)
        with lock:
            alive[0] -= 1

    with BackgroundWriter(1, depth=3) as w:
        for i in range(50):
            w.put(job, i)
    assert done == list(range(50)) and peak[0] == 1
    alive_frames = [0]

    class Frame:  # counts the frames alive (queued or running in the writer)
        def __init__(self):
            alive_frames[0] += 1

        def __del__(self):
            alive_frames[0] -= 1

    most = 0
    with BackgroundWriter(2, depth=4) as w:
        for i in range(60):
            w.put(lambda f: time.sleep(0.003), Frame())
            most = max(most, alive_frames[0])
    assert 4 <= most <= 2 + 4 + 2, most  # running + waiting (+ those being handed over): not the 60 given


def test_writer_stops_at_the_first_error_and_leaves_no_thread():
    seen = []

    def job(i):
        seen.append(i)
        if i == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        time.sleep(0.001)

    with pytest.raises(OSError, match="No space left"):
        with BackgroundWriter(1, depth=2) as w:
            for i in range(1000):
                w.put(job, i)
    assert 3 in seen and len(seen) < 20, len(seen)
    with pytest.raises(ValueError, match="late"):  # an error after the last put is raised when the block ends
        with BackgroundWriter(2) as w:
            w.put(lambda: (_ for _ in ()).throw(ValueError("late")))
    with pytest.raises(KeyError):  # the caller's own error wins; queued jobs are dropped
        with BackgroundWriter(1, depth=100) as w:
            for i in range(100):
                w.put(time.sleep, 0.01)
            raise KeyError("caller")
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("surgseg-writer")]


def test_every_writer_is_the_one_writer(video, tmp_path, monkeypatch):
    "predict_images, predict_video, predict_split and extraction all write through core.BackgroundWriter."
    import shutil

    shutil.copytree(video.parents[2], tmp_path / "data")
    video = tmp_path / "data" / video.relative_to(video.parents[2])
    made = []

    class Spy(BackgroundWriter):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(inference, "BackgroundWriter", Spy)
    monkeypatch.setattr(data, "BackgroundWriter", Spy)
    v = data.find_videos(video.parents[2])
    data.extract_frames(v, workers=1, progress=False)
    assert len(made) == 2, made  # one per video, in this process (workers=1)
    inference.predict_images(toy(), v[-1].rgb_dir, tmp_path / "im", progress=False)
    inference.predict_video(toy(), video, tmp_path / "v", overlays=True, end=0.5, progress=False)
    inference.predict_split(toy(), v, tmp_path / "s", progress=False)
    assert len(made) == 2 + 1 + 2 + 1
    n_overlays = len(list((tmp_path / "v" / "overlays").glob("*.png")))
    assert n_overlays == len(list((tmp_path / "v" / "masks").glob("*.png"))) == 30
    gone = (
        "_PngWriter",
        "_Writer",
        "_writer",
        "_submit",
        "_drain",
        "_save_overlay",
        "_overlay_frame",
        "_write_outputs",
    )
    for name in gone:
        assert not hasattr(data, name) and not hasattr(inference, name), name


# --- probe_video, the one metadata reader ----------------------------------------------------------------


def test_probe_video_header_only(video):
    full, head = data.probe_video(video), data.probe_video(video, demux=False)
    assert (head.n_frames, head.width, head.height, head.fps) == (full.n_frames, full.width, full.height, full.fps)
    assert (head.width, head.height, head.fps) == (96, 64, 60) and head.n_frames > 100
    assert head.pts == [] and full.pts and head.note == "header only"
    assert not hasattr(inference, "video_info")


def test_predict_video_probes_once(video, tmp_path, monkeypatch):
    "The CLI probes the video once (before loading the model) and predict_video reads its frames with that probe."
    import av

    calls, opens = [], []
    real_probe, real_open = data.probe_video, av.open

    def probe(*a, **k):
        calls.append(a[0])
        return real_probe(*a, **k)

    def counted_open(*a, **k):
        opens.append(a[0])
        return real_open(*a, **k)

    monkeypatch.setattr(data, "probe_video", probe)
    monkeypatch.setattr(inference, "probe_video", probe)
    inference.predict_video(toy(), video, tmp_path / "a", every=30, progress=False)
    assert len(calls) == 1, calls
    pr = real_probe(video)
    calls.clear()
    monkeypatch.setattr(av, "open", counted_open)
    inference.predict_video(toy(), video, tmp_path / "b", every=30, probe=pr, progress=False)
    assert calls == [] and str(video) in opens  # the caller's probe: no second probe
    assert sum(o == str(video) for o in opens) <= 1 + 2 + 1, opens  # decode (+ the seek check's two reads, + seeking)


def test_extraction_rerun_reads_the_header_through_probe_video(video, monkeypatch):
    v = data.find_videos(video.parents[2])
    data.extract_frames(v, workers=1, progress=False)
    seen = []
    real = data.probe_video
    monkeypatch.setattr(data, "probe_video", lambda p, demux=True: seen.append(demux) or real(p, demux))
    assert {r.method for r in data.extract_frames(v, workers=1, progress=False)} == {"done"}
    assert seen == [False] * len(v)


# --- one table of option checks ------------------------------------------------------------------------------

BAD = [
    ("threads", 0),
    ("smooth", 1),
    ("smooth", -0.1),
    ("alpha", 1.5),
    ("alpha", -0.5),
    ("every", 0),
    ("start", -1),
    ("end", 0),
]


@pytest.mark.parametrize("name,bad", BAD)
def test_check_option_names_the_option(name, bad):
    with pytest.raises(OptionError, match=rf"^{name}={bad} is out of range; must be "):
        check_option(name, bad)
    with core.entry_point("cli"):
        with pytest.raises(OptionError, match=rf"^--{name} {bad} is out of range; must be "):
            check_option(name, bad)


def test_option_table_types():
    assert set(OPTION_RULES) == {"threads", "smooth", "alpha", "every", "start", "end"}
    assert check_option("every", "4") == 4 and check_option("alpha", "1") == 1.0 and check_option("alpha", 0) == 0.0
    with pytest.raises(OptionError, match="every=2.5 is not an integer"):
        check_option("every", 2.5)
    with pytest.raises(OptionError, match="alpha='x' is not a number"):
        check_option("alpha", "x")
    assert not set(OPTION_RULES) & set(Config.field_names())  # not Config fields (those have Config's rules)


CLI = {
    "threads": ("predict-image", "i.png", "--out", "o", "--checkpoint", "c"),
    "smooth": ("predict-video", "v.mp4", "--out", "o", "--checkpoint", "c"),
    "alpha": ("predict-video", "v.mp4", "--out", "o", "--checkpoint", "c"),
    "every": ("predict-video", "v.mp4", "--out", "o", "--checkpoint", "c"),
    "start": ("predict-video", "v.mp4", "--out", "o", "--checkpoint", "c"),
    "end": ("predict-video", "v.mp4", "--out", "o", "--checkpoint", "c"),
}


@pytest.mark.parametrize("name,bad", BAD)
def test_cli_refuses_each_option_in_one_line(name, bad, tmp_path):
    "A bad value is argparse's one line naming the flag, exit 2, before any file is opened or the model loaded."
    rc, out, err = run(*CLI[name], f"--{name}", bad)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and out == "", (rc, err)
    want = rf"surgseg {CLI[name][0]}: error: argument --{name}: {re.escape(str(bad))} is out of range; must be "
    assert re.match(want, lines[0]), lines[0]


def test_alpha_outside_0_1_refused_by_the_cli_too(tmp_path):
    rc, _, err = run("predict-image", "i.png", "--out", "o", "--checkpoint", "c", "--alpha", 2)
    assert rc == 2 and "argument --alpha: 2 is out of range; must be in [0, 1]" in err
    rc, _, err = run("export", "r", "--threads", 0)
    assert rc == 2 and "argument --threads: 0 is out of range; must be >= 1" in err


@pytest.mark.parametrize("kw", [dict(alpha=1.5), dict(alpha=-0.01), dict(every=0), dict(start=-2), dict(end=-1)])
def test_predict_video_refuses_each_option(video, tmp_path, kw):
    ((name, bad),) = kw.items()
    with pytest.raises(OptionError, match=rf"^{name}={bad} is out of range"):
        inference.predict_video(toy(), video, tmp_path / "o", progress=False, **kw)
    assert not (tmp_path / "o").exists()


def test_constructors_refuse_options(video, tmp_path):
    with pytest.raises(OptionError, match=r"^smooth=1 is out of range; must be in \[0, 1\)"):
        toy(smooth=1)
    with pytest.raises(OptionError, match=r"^smooth=-0.5 is out of range"):
        inference.ProbSmoother(-0.5)
    rgb = tmp_path / "one.png"
    core.write_png(rgb, np.zeros((8, 8, 3), np.uint8))
    for a in (1.01, -1):
        with pytest.raises(OptionError, match=rf"^alpha={a} is out of range; must be in \[0, 1\]"):
            inference.predict_images(toy(), rgb, tmp_path / "o", progress=False, alpha=a)
    for a in (0, 1):  # the ends are allowed: the frame alone, the colours alone
        inference.predict_images(toy(), rgb, tmp_path / f"ok{a}", progress=False, alpha=a)
    with pytest.raises(OptionError, match="start=1, end=0.5: need start < end"):
        inference.predict_video(toy(), video, tmp_path / "r", start=1, end=0.5, progress=False)
    pytest.importorskip("onnxruntime")
    from surgseg.export import OnnxSegmenter

    with pytest.raises(OptionError, match="threads=0 is out of range"):
        OnnxSegmenter(tmp_path / "one.png", threads=0)


def test_alpha_no_longer_wraps(tmp_path):
    "Before the check, alpha=1.5 blended past the colour and wrapped in the uint8 cast; now the writers refuse it."
    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.full((4, 4), 3, np.uint8)
    wrapped = core._overlay_np(img, mask, 1.5)  # the unchecked blend: 1.5 * 255 - 0.5 * 200 = 282.5 -> wraps to 27
    assert wrapped[0, 0, 2] != 255
    with pytest.raises(OptionError, match="alpha=1.5 is out of range"):
        check_option("alpha", 1.5)


# --- one home for hashing and error lines ------------------------------------------------------------------


def test_helpers_have_one_home():
    src = {p.name: p.read_text() for p in PKG.glob("*.py") if p.name != "_modidx.py"}
    patterns = (
        r"def _sha256\b",
        r"def _first_reason\b",
        r"def _first_line\b",
        r"def _reason\b",
        r"class _PngWriter\b",
        r"splitlines\(\)\[0\]",
        r"hashlib\.sha256\(\)",
    )
    for pattern in patterns:
        where = [n for n, s in src.items() if re.search(pattern, s)]
        assert where in ([], ["core.py"]), (pattern, where)
    assert "def sha256_file" in src["core.py"] and "def first_line" in src["core.py"]
    from surgseg import runs

    assert not hasattr(runs, "_sha256")  # no second name for core's file hash
