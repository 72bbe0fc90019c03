"""Compare surgseg's official score with the organisers' own computation (MONAI 0.9.1), frame by frame.

MONAI 0.9.1 is not a surgseg dependency (the toolkit pins it with numpy < 1.24); it is pure Python and runs
here with today's numpy and torch when installed into a side folder without its dependencies:

    pip install --target /tmp/monai091 monai==0.9.1 --no-deps
    python bench/metric_vs_toolkit.py --monai /tmp/monai091 [--frames 3] [--small 40]

For each frame this reproduces what `sarrarp50/metrics/segmentation.py` (toolkit v0.0.2) does per mask: one-hot
both masks over 10 classes, `MeanIoU(include_background=False, ignore_empty=False)`, and
`SurfaceDiceMetric([10] * 9, include_background=False)` followed by the toolkit's `fix_nans` step (a class
absent from both masks -> 1, any remaining NaN -> 0). It prints the largest per-class differences and the
toolkit's time per 1080p frame.
"""

import argparse, os, sys, time, warnings
from pathlib import Path


def toolkit_frame(monai, torch, pred, gt, tau=10.0):
    "Per-class IoU and NSD of one frame, computed the toolkit's way."
    from monai.networks.utils import one_hot

    ref = one_hot(torch.from_numpy(gt)[None, None], 10, dim=1)
    prd = one_hot(torch.from_numpy(pred)[None, None], 10, dim=1)
    iou = monai.metrics.MeanIoU(include_background=False, reduction="mean", get_not_nans=False, ignore_empty=False)(
        prd, ref
    )
    nsd = monai.metrics.SurfaceDiceMetric([tau] * 9, include_background=False, reduction="mean")(prd, ref)
    both_empty = ((ref.mean(axis=(2, 3)) == 0) & (prd.mean(axis=(2, 3)) == 0))[:, 1:]
    nsd[both_empty] = 1
    nsd = nsd.nan_to_num()
    return iou.reshape(-1).numpy(), nsd.reshape(-1).numpy()


def main(monai_dir=None, frames=3, small=40):
    if monai_dir:
        sys.path.insert(0, str(monai_dir))
    warnings.filterwarnings("ignore")
    try:
        import monai, torch
    except ImportError:
        sys.exit("MONAI is not importable: pip install --target DIR monai==0.9.1 --no-deps, then pass --monai DIR")
    import numpy as np

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent / "tests")]
    from metric import realistic_pair
    from test_metrics import structured, perturbed
    from surgseg.metrics import frame_scores

    rng = np.random.default_rng(0)
    cases = [realistic_pair(rng) for _ in range(frames)]
    for _ in range(small):
        g = structured(rng, (int(rng.integers(5, 80)), int(rng.integers(5, 120))), 10)
        cases.append((perturbed(rng, g), g))
    worst_iou = worst_nsd = 0.0
    times = []
    for p, g in cases:
        t = time.perf_counter()
        ti, tn = toolkit_frame(monai, torch, p, g)
        dt = time.perf_counter() - t
        if p.shape == (1080, 1920):
            times.append(dt)
        fi, fn = frame_scores(p, g)
        worst_iou, worst_nsd = max(worst_iou, np.abs(ti - fi).max()), max(worst_nsd, np.abs(tn - fn).max())
    print(f"MONAI {monai.__version__}; {len(cases)} frames ({frames} of 1920x1080, {small} small structured)")
    print(f"largest |IoU difference| {worst_iou:.2e}  (MONAI computes IoU in float32)")
    print(f"largest |NSD difference| {worst_nsd:.2e}")
    if times:
        print(f"toolkit time per 1080p frame: {np.median(times):.2f} s (median of {len(times)})")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--monai", help="folder holding monai 0.9.1 (pip install --target)")
    ap.add_argument("--frames", type=int, default=3, help="realistic 1920x1080 frames")
    ap.add_argument("--small", type=int, default=40, help="small structured frames")
    a = ap.parse_args()
    main(a.monai, a.frames, a.small)
