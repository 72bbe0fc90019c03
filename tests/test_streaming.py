"""The streaming predictor: bounded frames in flight on long iterators, early stop, errors from any stage,
temporal smoothing through `predict_video`, and the video options (time range, masks only, video only)."""

import time

import numpy as np
import pytest
import torch

from surgseg.core import NUM_CLASSES, Config, SurgsegError, read_mask
from surgseg.data import probe_video
from surgseg.inference import Predictor, ProbSmoother, predict_video


class Toy(torch.nn.Module):
    "Class 3 where red > 0.5, class 5 on the left half."

    def forward(self, x):
        B, _, h, w = x.shape
        logits = torch.zeros(B, NUM_CLASSES, h, w)
        logits[:, 3] = (x[:, 0] - 0.5) * 8
        logits[:, 5] = (torch.arange(w) < w / 2).float() * 2 - 1
        return logits


def toy(**kw):
    return Predictor(Toy(), Config(), device="cpu", batch_size=4, **kw)


@pytest.mark.parametrize("smooth,centred", [(0, False), (0.8, False), (0.8, True)])
def test_frames_in_flight_bounded(smooth, centred):
    "However long the stream, the reader is never more than a few queues ahead of the consumer."
    made = [0]
    im = np.zeros((6, 8, 3), np.uint8)

    def frames(n):
        for i in range(n):
            made[0] += 1
            yield i, im

    ahead = [
        made[0] - (k + 1)
        for k, _, _ in toy(smooth=smooth, smooth_centred=centred).predict_stream(frames(2000), progress=False)
    ]
    assert len(ahead) == 2000 and max(ahead) <= 64 + (16 if centred else 0), max(ahead)


def test_early_stop_and_errors():
    "Breaking out stops the reader; an error in the reader reaches the caller with its message."
    made = [0]
    im = np.zeros((6, 8, 3), np.uint8)

    def endless():
        while True:
            made[0] += 1
            yield made[0], im

    for k, _, _ in toy().predict_stream(endless(), progress=False):
        if k == 50:
            break
    time.sleep(0.3)
    assert made[0] < 200

    def bad():
        yield 0, im
        raise SurgsegError("f.png: unreadable image")

    with pytest.raises(SurgsegError, match="f.png: unreadable"):
        list(toy(smooth=0.5).predict_stream(bad(), progress=False))


def test_smoothing_is_a_stream_property():
    "Smoothing on a still stream changes nothing; on a flickering one it reduces changes between frames."
    rng = np.random.default_rng(0)
    still = [(i, np.full((6, 8, 3), 200, np.uint8)) for i in range(10)]
    a = [m for _, _, m in toy().predict_stream(iter(still), progress=False)]
    b = [m for _, _, m in toy(smooth=0.9).predict_stream(iter(still), progress=False)]
    assert all((x == y).all() for x, y in zip(a, b))
    noisy = [(i, np.clip(128 + rng.normal(0, 40, (6, 8, 3)), 0, 255).astype(np.uint8)) for i in range(60)]

    def flips(p):
        m = np.stack([m for _, _, m in p.predict_stream(iter(noisy), progress=False)])
        return (m[1:] != m[:-1]).mean()

    assert flips(toy(smooth=0.8)) < flips(toy()) / 2
    with pytest.raises(SurgsegError, match="smooth=1"):
        ProbSmoother(1)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from surgseg.synthetic import generate

    root = generate(
        tmp_path_factory.mktemp("stream") / "data",
        n_train=1,
        n_test=1,
        seconds=2,
        size=(64, 96),
        split_ops=0,
        workers=1,
        progress=False,
    )
    return next((root / "test").glob("video_*/video_left.avi"))


def test_predict_video_options(video, tmp_path):
    "A time range with masks only, the video only with smoothing, and a refused empty request."
    fps = probe_video(video).fps
    out = predict_video(
        toy(), video, tmp_path / "m", start=0.5, end=1.0, every=2, overlays=False, overlay_video=False, progress=False
    )
    names = sorted(p.name for p in (out / "masks").glob("*.png"))
    assert names == [f"{f:09d}.png" for f in range(round(0.5 * fps), round(fps), 2)]
    assert [p.name for p in out.iterdir()] == ["masks"]
    clip = predict_video(
        toy(smooth=0.7, smooth_centred=True),
        video,
        tmp_path / "v",
        end=1.0,
        masks=False,
        overlays=False,
        progress=False,
    )
    assert [p.name for p in (tmp_path / "v").iterdir()] == [clip.name] and probe_video(clip).n_frames == round(fps)
    plain = predict_video(toy(), video, tmp_path / "p", end=0.2, overlays=False, overlay_video=False, progress=False)
    m = read_mask(plain / "masks" / "000000000.png")
    assert m.shape == (64, 96)
    with pytest.raises(SurgsegError, match="nothing to write"):
        predict_video(toy(), video, tmp_path / "x", masks=False, overlays=False, overlay_video=False)
    assert not (tmp_path / "x").exists()


def test_scoring_annotated_frames_never_smooths(tmp_path):
    "Annotated frames are a second apart: `score_split` ignores a predictor's temporal smoothing."
    from surgseg.synthetic import generate
    from surgseg.postprocess import score_split

    root = generate(tmp_path / "d", n_train=1, n_test=1, seconds=3, size=(64, 96), split_ops=0, progress=False)
    plain = score_split(toy(), root / "test", progress=False)[0]
    smoothed = score_split(toy(smooth=0.9), root / "test", progress=False)[0]
    assert plain["score"] == smoothed["score"] and plain["miou"] == smoothed["miou"]
