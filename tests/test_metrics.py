"""The official SAR-RARP50 score (surgseg.metrics, surgseg.evaluate) against independent, obviously-correct references.

Two references are written here from the definition alone, without any of surgseg's code:
- `brute_scores`: pure-Python per-pixel loops (edges from the four neighbours, the outside of the image
  counting as background) and brute-force nearest distances over all pairs of edge pixels: tiny masks only;
- `scipy_scores`: the toolkit's way, on the full uncropped frame (scipy `binary_erosion` with its defaults,
  `distance_transform_edt` of the other edge map's complement).
"""

import io, math, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats

from surgseg.core import write_mask, SurgsegError
from surgseg.metrics import (
    frame_scores,
    ScoreAccumulator,
    edge_points,
    mask_edges,
    surface_dice,
    class_breakdown,
    plot_breakdown,
    BREAKDOWN_COLUMNS,
    crossed_interval,
    paired_differences,
    adjust,
    detectable_effect,
    seeds_needed,
    simulate_coverage,
    presence_auroc,
    detection_table,
)
from surgseg.evaluate import evaluate, check_predictions, PredictionFolderError

C = 10  # class ids 0..9, scored: 1..9


# ---------------------------------------------------------------- the references
def brute_scores(pred, gt, tau=10.0):
    "Per-pixel loops and all-pairs distances, straight from the definition."
    H, W = len(gt), len(gt[0])
    iou, nsd = [], []
    for c in range(1, C):
        P = {(y, x) for y in range(H) for x in range(W) if pred[y][x] == c}
        G = {(y, x) for y in range(H) for x in range(W) if gt[y][x] == c}
        iou.append(len(P & G) / len(P | G) if P | G else 1.0)
        if not P and not G:
            nsd.append(1.0)
            continue
        if not P or not G:
            nsd.append(0.0)
            continue

        def edge(S):  # a pixel of S with a 4-neighbour outside S (outside the image = outside S)
            return [(y, x) for (y, x) in S if any(n not in S for n in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)))]

        ep, eg = edge(P), edge(G)

        def near(a, B):
            return min(math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) for b in B) <= tau

        ok = sum(near(a, eg) for a in ep) + sum(near(b, ep) for b in eg)
        nsd.append(ok / (len(ep) + len(eg)))
    return np.array(iou), np.array(nsd)


def scipy_scores(pred, gt, tau=10.0):
    "The toolkit's computation on the full, uncropped frame."
    iou, nsd = [], []
    for c in range(1, C):
        p, g = pred == c, gt == c
        u = (p | g).sum()
        iou.append((p & g).sum() / u if u else 1.0)
        if not p.any() and not g.any():
            nsd.append(1.0)
            continue
        if not p.any() or not g.any():
            nsd.append(0.0)
            continue
        pe, ge = p ^ ndimage.binary_erosion(p), g ^ ndimage.binary_erosion(g)
        dp, dg = ndimage.distance_transform_edt(~ge)[pe], ndimage.distance_transform_edt(~pe)[ge]
        nsd.append(((dp <= tau).sum() + (dg <= tau).sum()) / (pe.sum() + ge.sum()))
    return np.array(iou), np.array(nsd)


def structured(rng, shape, n=8):
    "Random rectangles, discs, one-pixel dots and thin lines of random classes, often clipped by the border."
    lab = np.zeros(shape, np.uint8)
    H, W = shape
    yy, xx = np.mgrid[:H, :W]
    for _ in range(n):
        c, kind = rng.integers(1, C), rng.integers(4)
        y, x = rng.integers(-3, H + 3), rng.integers(-3, W + 3)
        if kind == 0:
            lab[
                max(y, 0) : max(y + rng.integers(1, H // 2 + 2), 0), max(x, 0) : max(x + rng.integers(1, W // 2 + 2), 0)
            ] = c
        elif kind == 1:
            lab[(yy - y) ** 2 + (xx - x) ** 2 <= rng.integers(0, max(H, W) // 3 + 1) ** 2] = c
        elif kind == 2:
            lab[min(max(y, 0), H - 1), min(max(x, 0), W - 1)] = c
        else:  # a one-pixel-thick straight line
            if rng.random() < 0.5:
                lab[min(max(y, 0), H - 1), max(x, 0) : max(x + rng.integers(1, W + 1), 0)] = c
            else:
                lab[max(y, 0) : max(y + rng.integers(1, H + 1), 0), min(max(x, 0), W - 1)] = c
    return lab


def perturbed(rng, gt):
    "A plausible prediction: the ground truth shifted, with noise and a stray blob."
    p = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1)).copy()
    noise = rng.random(gt.shape) < rng.choice([0.0, 0.02, 0.1])
    p[noise] = rng.integers(0, C, noise.sum())
    return p


def check_all(pred, gt, tau, refs=(scipy_scores,)):
    iou, nsd = frame_scores(pred, gt, tau)
    for ref in refs:
        ri, rn = ref(pred, gt, tau)
        np.testing.assert_allclose(iou, ri, atol=1e-9, rtol=0, err_msg=f"IoU vs {ref.__name__}, tau={tau}")
        np.testing.assert_allclose(nsd, rn, atol=1e-9, rtol=0, err_msg=f"NSD vs {ref.__name__}, tau={tau}")


# ---------------------------------------------------------------- the two references agree with each other
def test_references_agree():
    rng = np.random.default_rng(0)
    for _ in range(6):
        g = structured(rng, (9, 13))
        p = perturbed(rng, g)
        for tau in (0, 1, 2.5):
            for a, b in zip(brute_scores(p.tolist(), g.tolist(), tau), scipy_scores(p, g, tau)):
                np.testing.assert_allclose(a, b, atol=1e-12)


# ---------------------------------------------------------------- one hand-made case per rule
def blank(h=20, w=30):
    return np.zeros((h, w), np.uint8)


def test_both_absent_scores_one():
    iou, nsd = frame_scores(blank(), blank())
    assert (iou == 1).all() and (nsd == 1).all()


def test_only_predicted_and_only_in_gt_score_zero():
    g, p = blank(), blank()
    g[3:6, 3:6] = 2
    p[10:12, 10:12] = 6
    p[3:6, 3:6] = 2
    g[15, 15] = 7  # one pixel of class 7 in the ground truth only
    iou, nsd = frame_scores(p, g)
    assert iou[5] == nsd[5] == 0 and iou[6] == nsd[6] == 0  # class 6 only predicted, class 7 only in gt
    assert iou[1] == nsd[1] == 1


def test_border_touching_hand_count():
    # gt: a 5x5 block in the top-right corner (16 ring pixels, top row and right column on the image border);
    # pred: the same block without its left column (14 ring pixels). At tau 0: 11 + 11 correct of 30.
    g, p = blank(), blank()
    g[0:5, 25:30] = 4
    p[0:5, 26:30] = 4
    assert len(edge_points(g, 4)) == 16 and len(edge_points(p, 4)) == 14
    assert frame_scores(p, g, tau=0)[1][3] == pytest.approx(22 / 30, abs=1e-12)
    assert frame_scores(p, g, tau=1)[1][3] == 1.0
    check_all(p, g, 0, (scipy_scores, brute_scores))


def test_whole_frame_class_has_the_frame_as_outline():
    g = np.full((7, 9), 3, np.uint8)
    assert len(edge_points(g, 3)) == 2 * 7 + 2 * 9 - 4
    p = g.copy()
    p[3, 4] = 0  # a hole adds 4 edge pixels around it to the prediction
    iou, nsd = frame_scores(p, g, tau=0)
    assert iou[2] == pytest.approx(62 / 63) and nsd[2] == pytest.approx((28 + 28) / (28 + 32))
    check_all(p, g, 0, (scipy_scores, brute_scores))


@pytest.mark.parametrize("dist,expected", [((0, 10), 1.0), ((0, 11), 0.0), ((6, 8), 1.0), ((7, 8), 0.0), ((8, 6), 1.0)])
def test_boundary_exactly_at_tau(dist, expected):
    g, p = blank(), blank()
    g[2, 2] = 5
    p[2 + dist[0], 2 + dist[1]] = 5
    assert frame_scores(p, g, tau=10)[1][4] == expected
    check_all(p, g, 10, (scipy_scores, brute_scores))


def test_lines_exactly_tau_apart():
    g, p = blank(30, 40), blank(30, 40)
    g[:, 5] = 8
    p[:, 15] = 8  # two full-height vertical lines, 10 apart: every edge pixel is correct
    assert frame_scores(p, g)[1][7] == 1.0
    p[:, 15] = 0
    p[:, 16] = 8  # 11 apart: none is
    assert frame_scores(p, g)[1][7] == 0.0


def test_one_pixel_objects():
    g, p = blank(), blank()
    g[0, 0] = 1
    p[0, 0] = 1  # same corner pixel: 1, 1
    g[5, 5] = 2
    p[6, 6] = 2  # adjacent diagonally: IoU 0, NSD 1
    g[19, 29] = 3
    p[19, 18] = 3  # 11 px apart in the bottom row: 0, 0
    iou, nsd = frame_scores(p, g)
    assert list(iou[:3]) == [1, 0, 0] and list(nsd[:3]) == [1, 1, 0]
    check_all(p, g, 10, (scipy_scores, brute_scores))


def test_stray_blob_costs_a_point():
    g = blank()
    g[2:8, 2:10] = 1
    p = g.copy()
    p[15:17, 20:22] = 9
    i0, n0 = frame_scores(g, g)
    i1, n1 = frame_scores(p, g)
    assert i0.mean() - i1.mean() == pytest.approx(1 / 9) and n0.mean() - n1.mean() == pytest.approx(1 / 9)


# ---------------------------------------------------------------- the crop is exact
def test_objects_near_crop_edges_and_far_apart():
    # class 2: two components at opposite corners (the box spans the frame), the prediction only near one;
    # class 3: objects whose tight boxes end right next to the other mask's object.
    g, p = blank(40, 60), blank(40, 60)
    g[0:3, 0:4] = 2
    g[37:40, 55:60] = 2
    p[1:4, 1:5] = 2
    g[20:25, 20:22] = 3
    p[20:25, 22:30] = 3
    g[10, 30:50] = 4
    p[11:13, 30:50] = 4
    for tau in (0, 1, 2, 10, 40):
        check_all(p, g, tau, (scipy_scores,))
    check_all(p[:12, :20], g[:12, :20], 3, (scipy_scores, brute_scores))


def test_edges_match_scipy_on_noise():
    rng = np.random.default_rng(1)
    for density in (0.1, 0.5, 0.9):
        m = rng.random((50, 70)) < density
        np.testing.assert_array_equal(mask_edges(m), m ^ ndimage.binary_erosion(m))


def test_edge_points_match_full_frame_edges():
    rng = np.random.default_rng(2)
    for _ in range(20):
        lab = structured(rng, (40, 64))
        for c in range(1, C):
            full = lab == c
            pts = {(int(x), int(y)) for x, y in edge_points(lab, c)}
            want = {(int(x), int(y)) for y, x in zip(*np.nonzero(full ^ ndimage.binary_erosion(full)))}
            assert pts == want


# ---------------------------------------------------------------- cross-checks on many masks
def test_random_small_masks_against_both_references():
    rng = np.random.default_rng(3)
    for k in range(40):
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 14)))
        if k % 2:
            g = rng.integers(0, C, shape).astype(np.uint8)
            p = rng.integers(0, C, shape).astype(np.uint8)
        else:
            g = structured(rng, shape)
            p = perturbed(rng, g)
        check_all(p, g, float(rng.choice([0, 1, 1.5, 2, 3, 10])), (scipy_scores, brute_scores))


def test_structured_masks_against_scipy():
    rng = np.random.default_rng(4)
    for k in range(25):
        g = structured(rng, (96, 160), n=14)
        p = perturbed(rng, g) if k % 3 else structured(rng, (96, 160), n=14)
        check_all(p, g, float(rng.choice([0, 2, 4.5, 10, 25])))


def test_noise_masks_against_scipy():
    rng = np.random.default_rng(5)
    for k in range(6):
        g = rng.choice(C, (60, 90), p=[0.5] + [0.5 / 9] * 9).astype(np.uint8)
        check_all(perturbed(rng, g), g, [10, 1, 0][k % 3])


# ---------------------------------------------------------------- input checks
def test_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        frame_scores(blank(), blank(10, 10))
    with pytest.raises(ValueError, match="outside"):
        frame_scores(blank() + 10, blank())
    with pytest.raises(ValueError, match="outside"):
        frame_scores(blank().astype(int) - 1, blank())
    with pytest.raises(ValueError, match="integer"):
        frame_scores(blank().astype(float), blank())
    assert surface_dice(np.empty((0, 2)), np.empty((0, 2))) == 1.0


# ---------------------------------------------------------------- averaging
def test_accumulator_weights_videos_equally():
    g = blank()
    g[2:8, 2:10] = 1
    bad = blank()
    bad[12:15, 12:15] = 2
    acc = ScoreAccumulator()
    for f in range(9):
        acc.update("video_long", g, g, frame=60 * f)  # 9 perfect frames
    acc.update("video_short", bad, g)  # 1 frame: IoU 7/9 (classes 3..9 absent)
    r = acc.compute()
    vi = frame_scores(bad, g)[0].mean()
    assert r["miou"] == pytest.approx((1 + vi) / 2)  # not (9 + vi) / 10
    assert r["score"] == pytest.approx(math.sqrt(r["miou"] * r["mnsd"]))
    assert np.allclose(r["per_class_iou"].mean(), r["miou"]) and np.allclose(r["per_class_nsd"].mean(), r["mnsd"])
    assert list(r["per_video"].frames) == [9, 1] and r["n_frames"] == 10 and r["n_videos"] == 2
    assert r["per_video"].loc["video_long", "score"] == 1.0


def test_accumulator_missing_and_pooled():
    g = blank()
    g[0:4, 0:5] = 1  # 20 pixels of class 1
    p = blank()
    p[0:4, 0:4] = 1  # 16 of them predicted
    acc = ScoreAccumulator().update("v", p, g).update("v", None, g)
    r = acc.compute()
    assert r["n_missing"] == 1 and r["frames"].missing.tolist() == [False, True]
    assert r["frames"].miou.iloc[1] == 0 and r["frames"].mnsd.iloc[1] == 0  # missing = 0 on every class
    assert r["pooled_iou"][0] == pytest.approx(16 / 40)  # dataset-pooled, not the official one
    assert r["per_class_iou"][0] == pytest.approx((16 / 20 + 0) / 2)
    assert np.isnan(r["pooled_iou"][1])  # class 2 never seen: undefined
    with pytest.raises(ValueError):
        ScoreAccumulator().compute()


# ---------------------------------------------------------------- where the points go: class_breakdown
def test_breakdown_hand_made():
    g1 = blank()
    g1[2:8, 2:10] = 1  # a 48-pixel clasper
    blob = g1.copy()
    blob[15:17, 20:22] = 6  # + a suction-tool blob the frame does not show
    g7 = g1.copy()
    g7[10:12, 10:12] = 7  # a needle holder that the prediction g1 misses
    gp, pp = blank(), blank()
    gp[0:4, 0:5] = 1
    pp[0:4, 0:4] = 1  # overlap 16 / 20, outlines within tau
    acc = ScoreAccumulator()
    acc.update("v1", blob, g1).update("v1", g1, g7).update("v1", pp, gp).update("v1", blank(), blank())
    acc.update("v2", np.where(blob == 6, 6, 0).astype(np.uint8), g1)  # one frame: clasper missed, blob again
    r = acc.compute()
    bd = class_breakdown(r)
    assert list(bd.columns) == BREAKDOWN_COLUMNS and list(bd.index) == list(range(1, 10))
    assert bd["class"].tolist()[:2] == ["Tool clasper", "Tool wrist"]
    # clasper: v1 (1 + 1 + 0.8 + 1) / 4 = 0.95 with 0.2 / 4 delineation; v2 all miss; then the mean of the videos
    assert bd.loc[1, ["iou", "false_alarm", "miss", "delineation"]].tolist() == pytest.approx(
        [0.475, 0, 0.5, 0.025], abs=1e-15
    )
    assert bd.loc[1, ["nsd", "nsd_false_alarm", "nsd_miss", "nsd_delineation"]].tolist() == pytest.approx(
        [0.5, 0, 0.5, 0], abs=1e-15
    )
    # suction tool: a false alarm in 1 of v1's 4 frames and in v2's only frame: (1/4 + 1) / 2, not 2/5 pooled
    assert bd.loc[6, ["iou", "false_alarm", "miss", "delineation"]].tolist() == pytest.approx(
        [0.375, 0.625, 0, 0], abs=1e-15
    )
    assert bd.loc[7, ["iou", "false_alarm", "miss", "delineation"]].tolist() == pytest.approx(
        [0.875, 0, 0.125, 0], abs=1e-15
    )
    assert bd.loc[1, ["frames_present", "frames_false_alarm", "frames_miss"]].tolist() == [4, 0, 1]
    assert bd.loc[6, ["frames_present", "frames_false_alarm", "frames_miss"]].tolist() == [0, 2, 0]
    assert bd.loc[7, ["frames_present", "frames_false_alarm", "frames_miss"]].tolist() == [1, 0, 1]
    for c in (2, 3, 4, 5, 8, 9):  # absent from both everywhere: nothing lost
        assert bd.loc[c, ["iou", "false_alarm", "miss", "delineation", "nsd", "frames_present"]].tolist() == [
            1,
            0,
            0,
            0,
            1,
            0,
        ]
    assert (bd.iou.to_numpy() == r["per_class_iou"]).all() and (bd.nsd.to_numpy() == r["per_class_nsd"]).all()
    assert r["miou"] == pytest.approx((0.475 + 0.375 + 0.875 + 6) / 9)  # the official numbers are untouched


def test_breakdown_missing_prediction_is_a_miss_of_every_class():
    g = blank()
    g[2:8, 2:10] = 1
    r = ScoreAccumulator().update("v", g, g).update("v", None, g).compute()
    bd = class_breakdown(r)
    assert bd.miss.tolist() == [0.5] * 9 and bd.iou.tolist() == [0.5] * 9  # the toolkit scores all 9 classes 0
    assert bd.frames_miss.tolist() == [1] * 9 and bd.frames_present.tolist() == [2] + [0] * 8
    assert (bd.false_alarm == 0).all() and (bd.delineation == 0).all()


def reference_breakdown(frames_by_video, tau):
    "Shares and delineation per video from the masks with the scipy reference, then the mean over videos."
    per_video = []
    for pairs in frames_by_video.values():
        n, acc = len(pairs), np.zeros((8, C - 1))
        for p, g in pairs:
            iou, nsd = scipy_scores(p if p is not None else np.zeros_like(g), g, tau)
            for c in range(1, C):
                i, k = c - 1, (g == c).any()
                if p is None:
                    acc[2, i] += 1
                    acc[6, i] += 1
                    continue  # scores 0 on every class: a miss
                q = (p == c).any()
                acc[1, i] += q and not k
                acc[2, i] += k and not q
                acc[3, i] += (1 - iou[i]) if (k and q) else 0
                acc[5, i] += q and not k
                acc[6, i] += k and not q
                acc[7, i] += (1 - nsd[i]) if (k and q) else 0
                acc[0, i] += iou[i]
                acc[4, i] += nsd[i]
        per_video.append(acc / n)
    return np.mean(
        per_video, 0
    )  # rows: iou, false_alarm, miss, delineation, nsd, nsd_false_alarm, nsd_miss, nsd_delineation


@pytest.mark.parametrize("tau", [10.0, 3.0])
def test_breakdown_identity_on_random_masks(tau):
    rng = np.random.default_rng(11)
    frames, acc = {}, ScoreAccumulator(tau)
    for v, n in (("video_41", 6), ("video_42", 2), ("video_43", 9), ("video_44", 1)):
        for k in range(n):
            g = structured(rng, (24, 40), 6)
            p = perturbed(rng, g)
            if rng.random() < 0.3:
                p[rng.integers(0, 24), rng.integers(0, 40)] = rng.integers(1, C)  # a one-pixel false alarm
            if v == "video_43" and k == 4:
                p = None  # a missing prediction
            frames.setdefault(v, []).append((p, g))
            acc.update(v, p, g, frame=60 * k)
    r = acc.compute()
    bd = class_breakdown(r)
    np.testing.assert_allclose(bd.false_alarm + bd.miss + bd.delineation, 1 - bd.iou, atol=1e-12, rtol=0)
    np.testing.assert_allclose(bd.nsd_false_alarm + bd.nsd_miss + bd.nsd_delineation, 1 - bd.nsd, atol=1e-12, rtol=0)
    assert (bd.iou.to_numpy() == r["per_class_iou"]).all() and (bd.nsd.to_numpy() == r["per_class_nsd"]).all()
    assert bd.iou.mean() == pytest.approx(r["miou"], abs=1e-15) and bd.nsd.mean() == pytest.approx(r["mnsd"], abs=1e-15)
    assert (bd.nsd_false_alarm == bd.false_alarm).all() and (bd.nsd_miss == bd.miss).all()
    cols = ["iou", "false_alarm", "miss", "delineation", "nsd", "nsd_false_alarm", "nsd_miss", "nsd_delineation"]
    np.testing.assert_allclose(bd[cols].to_numpy().T, reference_breakdown(frames, tau), atol=1e-12, rtol=0)
    allp = [(p, g) for pairs in frames.values() for p, g in pairs]
    assert bd.frames_present.tolist() == [sum((g == c).any() for _, g in allp) for c in range(1, C)]
    assert bd.frames_false_alarm.tolist() == [
        sum(p is not None and (p == c).any() and not (g == c).any() for p, g in allp) for c in range(1, C)
    ]
    assert bd.frames_miss.tolist() == [
        sum(p is None or ((g == c).any() and not (p == c).any()) for p, g in allp) for c in range(1, C)
    ]
    assert bd.false_alarm.max() > 0 and bd.miss.max() > 0 and bd.delineation.max() > 0  # all three kinds occur


def test_breakdown_from_tables_and_presence():
    rng = np.random.default_rng(12)
    acc, bare = ScoreAccumulator(), ScoreAccumulator()
    for k in range(4):
        g = structured(rng, (24, 40), 5)
        p = perturbed(rng, g)
        iou, nsd, cm = frame_scores(p, g, with_confusion=True)
        acc.add("v", iou, nsd, cm)
        bare.add("v", iou, nsd)  # no confusion: presence unknown
    r = acc.compute()
    bd = class_breakdown(r)
    pd.testing.assert_frame_equal(class_breakdown(acc), bd)
    pd.testing.assert_frame_equal(class_breakdown(r["frames"]), bd)
    buf = io.StringIO()
    r["frames"].to_csv(buf, index=False)
    buf.seek(0)  # per_frame_results.csv read back
    pd.testing.assert_frame_equal(class_breakdown(pd.read_csv(buf)), bd, check_exact=False, atol=1e-15)
    assert "in_gt_1" not in bare.compute()["frames"].columns
    with pytest.raises(ValueError, match="in_gt_1"):
        class_breakdown(bare.compute())
    f = r["frames"]
    gt_p, pr_p = f.filter(like="in_gt_").to_numpy(), f.filter(like="in_pred_").to_numpy()
    again = ScoreAccumulator()
    for i in range(len(f)):
        again.add("v", f.filter(like="iou_").iloc[i], f.filter(like="nsd_").iloc[i], present=(gt_p[i], pr_p[i]))
    pd.testing.assert_frame_equal(class_breakdown(again), bd)


def test_add_refuses_scores_that_break_the_rule():
    present_gt, nothing = np.eye(9, dtype=bool)[0], np.zeros(9, bool)  # class 1 in the ground truth, nothing predicted
    with pytest.raises(ValueError, match="class 1 scores IoU 1.0"):
        ScoreAccumulator().add("v", np.ones(9), np.ones(9), present=(present_gt, nothing))
    with pytest.raises(ValueError, match="class 2"):  # absent from both must score 1
        ScoreAccumulator().add("v", np.r_[1, 0.5, np.ones(7)], np.ones(9), present=(nothing, nothing))
    with pytest.raises(ValueError, match="missing: True"):
        ScoreAccumulator().add("v", np.ones(9), np.ones(9), present=(nothing, nothing), missing=True)
    ScoreAccumulator().add("v", np.r_[0.3, np.ones(8)], np.r_[0.7, np.ones(8)], present=(present_gt, present_gt))


def test_plot_breakdown_bars_add_up_to_one():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = blank()
    g[2:8, 2:10] = 1
    p = g.copy()
    p[2:8, 8:10] = 0
    p[15:17, 20:22] = 6
    bd = class_breakdown(ScoreAccumulator().update("v", p, g).update("v", blank(), g).compute())
    for metric in ("iou", "nsd"):
        ax = plot_breakdown(bd, metric=metric)
        widths = np.array([b.get_width() for b in ax.patches]).reshape(4, 9)  # kept, false alarm, miss, delineation
        np.testing.assert_allclose(widths.sum(0), 1.0, atol=1e-12)
        assert widths[1, 5] == 0.5 and widths[2, 0] == 0.5  # suction: 1 false alarm in 2 frames; clasper: 1 miss
        assert [t.get_text() for t in ax.get_yticklabels()][0] == "Tool clasper"
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="iou or nsd"):
        plot_breakdown(bd, metric="dice")


def test_breakdown_per_video_averages_to_the_breakdown():
    rng = np.random.default_rng(13)
    acc = ScoreAccumulator()
    for v, n in (("video_42", 4), ("video_41", 1), ("video_50", 3)):
        for k in range(n):
            g = structured(rng, (24, 40), 6)
            acc.update(v, perturbed(rng, g), g)
    r = acc.compute()
    bd, pv = class_breakdown(r), class_breakdown(r, per_video=True)
    assert list(pv.columns) == ["video", "class_id", *BREAKDOWN_COLUMNS] and len(pv) == 27
    assert pv.video.tolist()[::9] == ["video_41", "video_42", "video_50"] and pv.class_id.tolist()[:9] == list(
        range(1, 10)
    )
    mean_cols = ["iou", "false_alarm", "miss", "delineation", "nsd", "nsd_false_alarm", "nsd_miss", "nsd_delineation"]
    np.testing.assert_allclose(
        pv.groupby("class_id")[mean_cols].mean().to_numpy(), bd[mean_cols].to_numpy(), atol=1e-15
    )
    count_cols = ["frames_present", "frames_false_alarm", "frames_miss"]
    assert (pv.groupby("class_id")[count_cols].sum().to_numpy() == bd[count_cols].to_numpy()).all()
    np.testing.assert_allclose(
        pv.set_index(["video", "class_id"]).iou.unstack().to_numpy(), r["per_video_iou"].to_numpy(), atol=1e-15
    )


# ---------------------------------------------------------------- paired differences in a crossed seed x video design
def study_table(diff, configs=("base", "new"), seeds=2, videos=5):
    "A table of configurations x seeds x videos whose value x differs from the baseline by diff(seed, video)."
    return pd.DataFrame(
        [
            dict(config=c, seed=s, video=f"video_{41 + v}", x=0.5 + (diff(s, v) if c != "base" else 0.0))
            for c in configs
            for s in range(seeds)
            for v in range(videos)
        ]
    )


def test_coverage_simulation_is_nominal():
    # >= 1,000 simulated studies per cell: 3 and 10 seeds, 10 videos, four variance regimes, both populations
    cov = simulate_coverage(n_studies=2000, seeds=(3, 10), n_videos=10, rng_seed=1)
    assert len(cov) == 4 * 2 * 2
    bad = cov[~cov.coverage.between(0.93, 0.97)]
    assert bad.empty, bad


def test_crossed_interval_equals_paired_t_for_these_videos():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.03, (4, 1)) + rng.normal(0, 0.02, (1, 10)) + rng.normal(0, 0.01, (4, 10))
    r = crossed_interval(d, "seeds")
    per_seed = d.mean(1)
    t = stats.ttest_1samp(per_seed, 0)
    assert r["p"] == pytest.approx(t.pvalue) and r["df"] == 3
    half = stats.t.ppf(0.975, 3) * per_seed.std(ddof=1) / 2
    assert (r["low"], r["high"]) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    # about new videos too: the video term counts, so it is not narrower (up to the t quantile of its larger df)
    v = crossed_interval(d, "videos")
    assert v["se"] >= r["se"] and v["df"] >= r["df"]
    assert v["high"] - v["low"] >= 0.8 * (r["high"] - r["low"])


def test_smoke_study_primary_interval_vs_paired_t_on_scores():
    # 4 seeds x 2 configurations: the interval about these videos is the paired t on per-seed official scores
    # (within 20%), the one about new videos is wider
    rng = np.random.default_rng(5)
    rows = []
    vid = rng.normal(0, 0.05, 10)
    for c, mu in (("base", 0.0), ("new", 0.02)):
        for s in range(4):
            a = rng.normal(0, 0.02)
            for v in range(10):
                rows.append(
                    dict(
                        config=c,
                        seed=s,
                        video=v,
                        miou=0.6 + mu + a + vid[v] + rng.normal(0, 0.01),
                        mnsd=0.7 + mu + vid[v] + rng.normal(0, 0.01),
                    )
                )
    df = pd.DataFrame(rows)
    sc = df.groupby(["config", "seed"]).apply(lambda g: math.sqrt(g.miou.mean() * g.mnsd.mean()), include_groups=False)
    per_seed = (sc["new"] - sc["base"]).to_numpy()
    t_half = stats.t.ppf(0.975, 3) * per_seed.std(ddof=1) / 2
    these = paired_differences(df, "score", "base", population="seeds").iloc[0]
    new = paired_differences(df, "score", "base").iloc[0]
    assert these["diff"] == pytest.approx(per_seed.mean(), abs=1e-12)
    assert (these.high - these.low) / 2 == pytest.approx(t_half, rel=0.2)
    assert new.high - new.low >= 0.8 * (these.high - these.low) and new.se >= these.se


def test_paired_differences_pairs_on_shared_seeds_and_errors():
    more = study_table(lambda s, v: 0.1 * s, seeds=6)
    few = study_table(lambda s, v: 0.05, configs=("other",), seeds=3)
    t = paired_differences(pd.concat([more, few]), "x", "base").set_index("config")
    assert t.n_seeds.to_dict() == {"new": 6, "other": 3}
    assert t.loc["other", "diff"] == pytest.approx(0.05) and t.loc["other", "se"] == pytest.approx(0, abs=1e-12)
    rows = [
        dict(config=c, seed=s, video=v, miou=m, mnsd=0.8)
        for c, m in (("base", 0.5), ("b", 0.7), ("a", 0.6))
        for s in range(2)
        for v in ("video_41", "video_42")
    ]
    t = paired_differences(pd.DataFrame(rows), ["score", "miou"], "base")
    assert t.config.tolist() == ["b", "b", "a", "a"] and t.value.tolist() == ["score", "miou", "score", "miou"]
    assert t["diff"].tolist() == pytest.approx(
        [math.sqrt(0.56) - math.sqrt(0.4), 0.2, math.sqrt(0.48) - math.sqrt(0.4), 0.1]
    )
    long = pd.concat([study_table(lambda s, v, k=k: 0.1 * k).assign(class_id=k) for k in (6, 8)])
    t = paired_differences(long, "x", "base", by="class_id")
    assert t.class_id.tolist() == [6, 8] and t["diff"].tolist() == pytest.approx([0.6, 0.8])
    with pytest.raises(SurgsegError, match="baseline 'dice_ce'"):
        paired_differences(long, "x", "dice_ce")
    with pytest.raises(SurgsegError, match="every run needs every test video"):
        paired_differences(study_table(lambda s, v: 0).iloc[1:], "x", "base")
    with pytest.raises(SurgsegError, match="appears twice"):
        paired_differences(long, "x", "base")  # class rows without by=
    with pytest.raises(SurgsegError, match="no column 'miss'"):
        paired_differences(long, "miss", "base", by="class_id")
    with pytest.raises(SurgsegError, match="choose from videos, seeds"):
        paired_differences(long, "x", "base", "ops")


def test_holm_adjusted_intervals_match_holm_decisions():
    rng = np.random.default_rng(2)
    for _ in range(200):
        m = int(rng.integers(1, 8))
        t = pd.DataFrame(dict(diff=rng.normal(0, 0.03, m), se=rng.uniform(0.005, 0.02, m), df=rng.uniform(2, 20, m)))
        t["p"] = 2 * stats.t.sf(np.abs(t["diff"] / t.se), t.df)
        a = adjust(t)
        assert (a.real == (a.p_holm <= 0.05)).all()
        assert ((a.high_adj - a.low_adj) >= 2 * stats.t.ppf(0.975, t.df) * t.se - 1e-12).all()


def test_power_planning():
    mde = detectable_effect(0.03**2, 0, 0, 3, 10)
    assert 0.09 < mde < 0.12  # the 3-seed figure for a per-seed SD of 0.03
    assert detectable_effect(0.03**2, 0, 0, 10, 10) < mde
    n = seeds_needed(0.02, 0.03**2, 0, 0, 10)
    assert detectable_effect(0.03**2, 0, 0, n, 10) <= 0.02 < detectable_effect(0.03**2, 0, 0, n - 1, 10)
    assert seeds_needed(0.005, 0, 0.02**2, 0, 10) == float("inf")  # the video term alone exceeds it


def test_presence_auroc_and_detection_table():
    assert presence_auroc([0.9, 0.2, 0.4, 0.1], [True, False, True, False]) == 1.0
    assert presence_auroc([0.1, 0.2, 0.3, 0.4], [True, True, False, False]) == 0.0
    # against the definition: all pairs
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3
    pairs = [(a > b) + 0.5 * (a == b) for a in x[y] for b in x[~y]]
    assert presence_auroc(x, y) == pytest.approx(np.mean(pairs))
    acc = ScoreAccumulator()
    g = np.zeros((8, 8), np.uint8)
    g[:2, :2] = 6
    p = np.zeros_like(g)
    acc.update("video_41", p, g, frame=0)  # class 6 missed
    acc.update("video_41", g, np.zeros_like(g), frame=60)  # class 6 false alarm
    fr = acc.compute()["frames"]
    ev = fr[["video", "frame"]].assign(**{f"p_{c}": 0.1 for c in range(1, 10)})
    ev.loc[ev.frame == 0, "p_6"] = 0.4
    dt = detection_table(fr, ev)
    assert dt.loc[6, ["frames_present", "videos_present", "frames_absent"]].tolist() == [1, 1, 1]
    assert dt.loc[6, ["miss_rate", "false_alarm_rate", "auroc"]].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="no evidence row"):
        detection_table(fr, ev.iloc[:1])


# ---------------------------------------------------------------- prediction folders and the command
def make_pair(root, rng, videos=(("video_41", 3), ("video_11_1", 2)), shape=(24, 40)):
    acc = ScoreAccumulator()
    for v, n in videos:
        for f in range(n):
            g = structured(rng, shape, 5)
            p = perturbed(rng, g)
            write_mask(root / "ref" / v / "segmentation" / f"{60 * f:09d}.png", g)
            write_mask(root / "pred" / v / "segmentation" / f"{60 * f:09d}.png", p)
            acc.update(v, p, g, frame=60 * f)
    return acc.compute()


def surgseg(*args):
    exe = Path(sys.executable).parent / "surgseg"
    return subprocess.run([str(exe), "evaluate", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_evaluate_matches_accumulator_serial_and_parallel(tmp_path):
    want = make_pair(tmp_path, np.random.default_rng(6))
    for workers in (1, 2):
        r = evaluate(tmp_path / "ref", tmp_path / "pred", workers=workers, progress=False)
        assert r["score"] == pytest.approx(want["score"], abs=1e-12)
        pd.testing.assert_frame_equal(r["per_video"], want["per_video"])
        assert r["files"] == []
    (tmp_path / "root").mkdir()
    (tmp_path / "ref").rename(tmp_path / "root" / "test")  # a root holding test/
    assert evaluate(tmp_path / "root", tmp_path / "pred", workers=1, progress=False)["score"] == pytest.approx(
        want["score"]
    )


def test_cli_scores_and_writes_csvs(tmp_path):
    want = make_pair(tmp_path, np.random.default_rng(7))
    res = surgseg(tmp_path / "ref", tmp_path / "pred", "--out", tmp_path / "out", "--workers", 1)
    assert res.returncode == 0, res.stderr
    assert "segmentation score" in res.stdout and f"{want['score']:.4f}" in res.stdout
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert (
        {
            "per_video_results.csv",
            "final_results.csv",
            "per_class_results.csv",
            "per_video_class_iou.csv",
            "per_video_class_nsd.csv",
            "per_frame_results.csv",
        }
        <= names
        <= {
            "per_video_results.csv",
            "final_results.csv",
            "per_class_results.csv",
            "per_video_class_iou.csv",
            "per_video_class_nsd.csv",
            "per_frame_results.csv",
            "per_class_breakdown.csv",
        }
    )
    if "per_class_breakdown.csv" in names:  # written by evaluate from class_breakdown(results)
        bd = pd.read_csv(tmp_path / "out" / "per_class_breakdown.csv")
        assert list(bd.columns) == BREAKDOWN_COLUMNS and len(bd) == 9
        np.testing.assert_allclose(bd.iou, want["per_class_iou"], atol=1e-12)
    final = pd.read_csv(tmp_path / "out" / "final_results.csv").set_index("metric").value
    assert final["segmentation_score"] == pytest.approx(want["score"], abs=1e-12)
    pv = pd.read_csv(tmp_path / "out" / "per_video_results.csv", dtype={"video_id": str})
    assert pv.video_id.tolist() == ["11_1", "41"] and pv.frames.tolist() == [2, 3]
    pc = pd.read_csv(tmp_path / "out" / "per_class_results.csv")
    assert "pooled_iou_not_official" in pc.columns and len(pc) == 9
    assert len(pd.read_csv(tmp_path / "out" / "per_frame_results.csv")) == 5
    # default output folder: the prediction folder, like the toolkit
    assert surgseg(tmp_path / "ref", tmp_path / "pred", "--workers", 1).returncode == 0
    assert (tmp_path / "pred" / "final_results.csv").is_file()


def test_cli_lists_every_violation(tmp_path):
    make_pair(tmp_path, np.random.default_rng(8))
    s41, s11 = tmp_path / "pred/video_41/segmentation", tmp_path / "pred/video_11_1/segmentation"
    (s41 / "000000060.png").unlink()
    Image.fromarray(np.zeros((24, 40), np.uint8)).convert("P").save(s41 / "000000000.png")
    Image.fromarray(np.zeros((24, 40), np.uint16)).save(s41 / "000000120.png")
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[..., 1] = 1  # channels differ (equal ones are read as grey)
    Image.fromarray(rgb).save(s11 / "000000000.png")
    Image.fromarray(np.full((24, 40), 10, np.uint8)).save(s11 / "000000060.png")
    (s11 / "notes.txt").write_text("x")
    write_mask(tmp_path / "pred/video_50/segmentation/000000000.png", np.zeros((24, 40)))
    res = surgseg(tmp_path / "ref", tmp_path / "pred", "--out", tmp_path / "out", "--workers", 1)
    assert res.returncode == 1
    err = res.stderr.splitlines()
    head = next(i for i, l in enumerate(err) if "7 problem(s)" in l and "nothing was scored or written" in l)
    lines = [l.strip() for l in err[head + 1 :]]  # (a progress bar may come before the report)
    assert len(lines) == 7, res.stderr
    for want in [
        "video_50: not a video",
        "video_41/segmentation/000000060.png: missing prediction",
        "video_41/segmentation/000000000.png: a palette",
        "video_41/segmentation/000000120.png: a 16-bit",
        "video_11_1/segmentation/000000000.png: a colour image whose channels differ",
        "video_11_1/segmentation/000000060.png: value 10",
        "video_11_1/segmentation/notes.txt: no ground-truth mask",
    ]:
        assert sum(want in l for l in lines) == 1, (want, res.stderr)
    assert not (tmp_path / "out").exists()
    problems = check_predictions(tmp_path / "ref", tmp_path / "pred", workers=1, progress=False)
    assert len(problems) == 7
    with pytest.raises(PredictionFolderError, match="7 problem") as e:
        evaluate(tmp_path / "ref", tmp_path / "pred", workers=1, progress=False)
    assert len(e.value.problems) == 7 and "\n" not in str(e.value)


def test_cli_wrong_size_missing_video_and_allow_missing(tmp_path):
    make_pair(tmp_path, np.random.default_rng(9))
    write_mask(tmp_path / "pred/video_41/segmentation/000000000.png", np.zeros((24, 41)))
    import shutil

    shutil.rmtree(tmp_path / "pred/video_11_1")
    res = surgseg(tmp_path / "ref", tmp_path / "pred", "--workers", 1)
    assert res.returncode == 1 and "size 41x24, expected 40x24" in res.stderr
    assert "video_11_1/segmentation: missing (the reference has 2 masks" in res.stderr
    write_mask(tmp_path / "pred/video_41/segmentation/000000000.png", np.zeros((24, 40)))
    res = surgseg(tmp_path / "ref", tmp_path / "pred", "--workers", 1, "--allow_missing")
    assert res.returncode == 0, res.stderr
    assert "2 missing" in res.stdout
    pv = pd.read_csv(tmp_path / "pred/per_video_results.csv", dtype={"video_id": str}).set_index("video_id")
    assert pv.loc["11_1", "seg_mIoU"] == 0 and pv.loc["11_1", "missing_predictions"] == 2


def test_cli_bad_reference_is_one_line(tmp_path):
    res = surgseg(tmp_path / "nothing", tmp_path / "pred")
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and "reference folder not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = surgseg(tmp_path / "empty", tmp_path / "empty")
    assert res.returncode == 1 and "no ground-truth masks" in res.stderr


def test_evaluate_results_give_the_breakdown(tmp_path):
    want = make_pair(tmp_path, np.random.default_rng(9))
    r = evaluate(tmp_path / "ref", tmp_path / "pred", out=tmp_path / "out", workers=1, progress=False)
    bd = class_breakdown(r)  # what evaluate writes as per_class_breakdown.csv
    pd.testing.assert_frame_equal(bd, class_breakdown(want))
    np.testing.assert_allclose(bd.false_alarm + bd.miss + bd.delineation, 1 - bd.iou, atol=1e-12, rtol=0)
    back = class_breakdown(pd.read_csv(tmp_path / "out" / "per_frame_results.csv"))
    pd.testing.assert_frame_equal(back, bd, check_exact=False, atol=1e-15)
