"The sampler against its own expectations: empirical exposure, distinct frames, rank sharding, Accelerate sharding."

import math, warnings

import numpy as np
import pytest
from torch.utils.data import DataLoader

from surgseg.core import REAL_FRAME_PRESENCE, SurgsegError
from surgseg.sampler import SCHEMES, class_exposure, expected_unique, frame_weights, make_sampler


@pytest.fixture(scope="module")
def presence():
    "2,000 frames, each class present independently at its real frame share (needle holder in about 80 frames)."
    return np.random.default_rng(1).random((2000, 10)) < REAL_FRAME_PRESENCE


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_empirical_exposure_matches_expectation(presence, scheme):
    "Draws containing each class over one long epoch lie within 4 binomial standard deviations of n q_c."
    w = frame_weights(presence, scheme, 0.3, 10)
    n = 40_000
    draws = np.fromiter(make_sampler(w, n, seed=11), np.int64, n)
    ex = class_exposure(presence, w, n)
    seen = presence[draws].sum(0)
    z = (seen - ex["expected"].to_numpy()) / np.maximum(ex["std"].to_numpy(), 1e-9)
    assert np.abs(z).max() <= 4, dict(zip(ex["name"], z.round(2)))
    # and the weights really favour what they claim: the sampler realises the gain of the rarest class
    rare = int(np.argmin(presence.sum(0)))
    if scheme != "none":
        assert seen[rare] > 1.2 * n * presence[:, rare].mean()


@pytest.mark.parametrize("scheme", ["none", "repeat_factor", "class_balanced"])
def test_distinct_frames_match_expectation(presence, scheme):
    "Distinct frames per epoch (N draws) over 5 epochs: each within 4 sd (sum of Bernoulli variances bounds it)."
    w = frame_weights(presence, scheme, 0.3, 10)
    s = make_sampler(w, seed=3)
    p = w / w.sum()
    u = -np.expm1(len(w) * np.log1p(-p))
    tol = 4 * math.sqrt((u * (1 - u)).sum())
    assert expected_unique(w) == pytest.approx(u.sum())
    for epoch in range(5):
        got = len(set(s))  # each pass advances the epoch
        assert abs(got - u.sum()) <= tol, (epoch, got, u.sum(), tol)


def test_weighted_schemes_cost_diversity(presence):
    "Oversampling draws fewer distinct frames than uniform draws with replacement; a shuffle shows them all."
    uni = expected_unique(np.ones(len(presence)))
    for scheme in ["inverse_frequency", "repeat_factor", "class_balanced"]:
        assert expected_unique(frame_weights(presence, scheme)) < uni
    assert sorted(make_sampler(np.ones(len(presence)), replacement=False)) == list(range(len(presence)))


@pytest.mark.parametrize("world_size,n", [(1, 97), (2, 97), (3, 97), (4, 8), (5, 3)])
def test_rank_shards_are_disjoint_and_cover_the_stream(world_size, n):
    "Explicit ranks: equal lengths; interleaved back, the shards are exactly the padded single-process stream."
    w = np.random.default_rng(0).random(50)
    full = make_sampler(w, n, seed=9).stream().tolist()
    total = math.ceil(n / world_size) * world_size
    padded = (full * math.ceil(total / n))[:total]
    for epoch in range(3):
        shards = []
        for r in range(world_size):
            s = make_sampler(w, n, seed=9, rank=r, world_size=world_size)
            s.set_epoch(epoch)
            shards.append(list(s))
        assert {len(x) for x in shards} == {total // world_size}
        interleaved = [x for tup in zip(*shards) for x in tup]
        ref = make_sampler(w, n, seed=9).stream(epoch).tolist()
        assert interleaved == (ref * math.ceil(total / n))[:total]
        if epoch == 0:
            assert interleaved == padded


def test_epochs_differ_and_resume_replays():
    "Draws depend on (seed, epoch) only: a new sampler set to epoch 3 draws what the 4th pass of another drew."
    w = np.ones(100)
    a = make_sampler(w, seed=1)
    passes = [list(a) for _ in range(4)]
    assert len({tuple(p) for p in passes}) == 4
    b = make_sampler(w, seed=1)
    b.set_epoch(3)
    assert list(b) == passes[3]


@pytest.mark.parametrize("num_processes", [2, 3])
def test_accelerate_sharding_uses_each_draw_once(num_processes):
    "Through Accelerate's own sharding every process draws the same stream and takes disjoint batches of it."
    from accelerate.data_loader import prepare_data_loader

    w = np.random.default_rng(2).random(30)
    n, bs = 60, 4  # 15 batches: not a multiple of the process count, so Accelerate pads by wrapping
    dl = DataLoader(np.arange(30), batch_size=bs, sampler=make_sampler(w, n, seed=7))
    loaders = [
        prepare_data_loader(dl, num_processes=num_processes, process_index=r, put_on_device=False)
        for r in range(num_processes)
    ]
    for epoch in range(2):
        shards = [[b.tolist() for b in ld] for ld in loaders]  # each pass calls set_epoch(iteration)
        stream = make_sampler(w, n, seed=7).stream(epoch).tolist()
        batches = [stream[i : i + bs] for i in range(0, n, bs)]
        order = [b for tup in zip(*shards) for b in tup]
        assert order[: len(batches)] == batches  # batch k went to process k % num_processes
        assert all(b in batches[:num_processes] for b in order[len(batches) :])  # only the wrap-around padding repeats


def test_bad_input():
    with pytest.raises(
        SurgsegError,
        match="'bogus' is not a sampler scheme; choose from none, inverse_frequency, repeat_factor, class_balanced",
    ):
        frame_weights(np.ones((3, 2), bool), "bogus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SurgsegError, match="frame weights are zero"):
            frame_weights(np.zeros((3, 2), bool), "class_balanced")
    with pytest.warns(UserWarning, match="Needle Holder never occur"):
        p = np.ones((4, 10), bool)
        p[:, 7] = False
        w = frame_weights(p, "repeat_factor")
    assert np.isfinite(w).all() and w.mean() == pytest.approx(1)
    with pytest.raises(SurgsegError, match="threshold must be positive"):
        frame_weights(np.ones((3, 2), bool), "repeat_factor", threshold=0)
    with pytest.raises(SurgsegError, match="finite and non-negative"):
        make_sampler(np.array([1.0, -1.0]))


def test_registry_checks_config_sampler_names():
    from surgseg.core import Config, choices

    assert choices("sampler") == list(SCHEMES)
    with pytest.raises(
        SurgsegError,
        match=(
            "config key 'sampler': 'rfs' is not a sampler scheme; "
            "choose from none, inverse_frequency, repeat_factor, class_balanced"
        ),
    ):
        Config(sampler="rfs")


# ---------------------------------------------------------------- exposure in pixels (frames x crops)


@pytest.fixture(scope="module")
def masks():
    "40 masks of 40x60: a shaft band in most, a 4x4 catheter (class 9) in a few, somewhere different each time."
    rng = np.random.default_rng(0)
    out = []
    for i in range(40):
        m = np.zeros((40, 60), np.uint8)
        if i % 4:
            m[5:12, :] = 3
        if i % 5 == 0:
            y, x = rng.integers(0, 36), rng.integers(0, 56)
            m[y : y + 4, x : x + 4] = 9
        out.append(m)
    return out


def test_pixel_exposure_whole_frames_is_exact(masks):
    from surgseg.sampler import pixel_exposure

    counts = np.stack([np.bincount(m.ravel(), minlength=10) for m in masks]).astype(float)
    np.testing.assert_allclose(pixel_exposure(masks), counts.sum(0))
    w = np.arange(1, 41, dtype=float)
    np.testing.assert_allclose(pixel_exposure(masks, w, num_samples=100), 100 * (w / w.sum()) @ counts)


@pytest.mark.parametrize("rare", [0.0, 0.5, 1.0])
def test_pixel_exposure_matches_a_simulated_epoch(masks, rare):
    "The expectation against a long run of what training does: frame draws from the sampler, crops from crop_window."
    from surgseg.data import crop_pad, crop_window
    from surgseg.sampler import pixel_exposure

    presence = np.stack([np.bincount(m.ravel(), minlength=10) > 0 for m in masks])
    w = frame_weights(presence, "repeat_factor", 0.3, 10)
    n = 20_000
    rng = np.random.default_rng(3)
    seen = np.zeros(10)
    for i in make_sampler(w, n, seed=5):
        y, x, _ = crop_window(masks[i], (16, 16), rare, rng)
        seen += np.bincount(crop_pad(masks[i], y, x, (16, 16)).ravel(), minlength=10)
    want = pixel_exposure(masks, w, 16, rare, num_samples=n, draws=500, seed=1)
    assert abs(seen.sum() - n * 256) < 1e-6
    np.testing.assert_allclose(
        seen[[0, 3, 9]], want[[0, 3, 9]], rtol=0.1
    )  # over 3 standard deviations for the catheter


def test_centred_crops_raise_the_share_of_small_classes(masks):
    from surgseg.sampler import pixel_exposure

    rand, rare = (pixel_exposure(masks, crop_size=16, crop_rare=r, draws=64) for r in (0.0, 1.0))
    assert rare[9] / rare.sum() > 2 * rand[9] / rand.sum()
    assert rare[0] < rand[0]
