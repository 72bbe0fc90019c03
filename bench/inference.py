"""Inference costs at the real frame size (1080x1920), on the CPU (and the GPU when there is one).

Prints per-frame times and ratios; asserts nothing. Run: OMP_NUM_THREADS=1 .venv/bin/python bench/inference.py
  - post-processing (remove_small) on a realistic mask with speckle, per threshold and fill;
  - from working-resolution logits to the full-size mask: models.full_res_masks (bilinear upsampling + argmax,
    or top-2);
  - a whole Predictor on 1080p frames (U-Net ResNet-18 at half resolution), without and with TTA;
  - writing one mask PNG (core.write_mask, which every writer uses, against PIL's default encoder).
"""

import argparse, tempfile, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from surgseg.core import Config, get_device, write_mask
from surgseg.inference import Predictor
from surgseg.models import full_res_masks
from surgseg.postprocess import remove_small


def timeit(fn, n=5):
    "Median seconds of `n` calls after one warm-up."
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def realistic_mask(h=1080, w=1920, seed=0):
    "Large instrument regions, thin diagonal threads and a sprinkle of small spurious blobs."
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    m[200:700, 300:900] = 3
    m[250:400, 850:1050] = 2
    m[300:360, 1000:1200] = 1
    for i in range(800):
        m[100 + i, 1000 + i // 2 : 1003 + i // 2] = 5
    for c, k in [(4, 60), (8, 40), (9, 40), (6, 30)]:
        for y, x, r in zip(rng.integers(0, h - 20, k), rng.integers(0, w - 20, k), rng.integers(1, 12, k)):
            m[y : y + r, x : x + r] = c
    return m


def main(frames=4):
    torch.set_num_threads(1)
    m = realistic_mask()
    second = np.full_like(m, 3)
    print(f"post-processing a 1080x1920 mask ({len(np.unique(m)) - 1} classes present):")
    for thr in (64, 1024):
        t_bg = timeit(lambda: remove_small(m, thr))
        t_nx = timeit(lambda: remove_small(m, thr, second))
        print(
            f"  min_area={thr:5d}: fill=background {t_bg * 1e3:6.1f} ms, fill=next {t_nx * 1e3:6.1f} ms "
            f"(next/background x{t_nx / t_bg:.2f})"
        )

    s = torch.randn(1, 10, 540, 960)
    up = lambda x: F.interpolate(x, size=(1080, 1920), mode="bilinear", align_corners=False)
    t_first = timeit(lambda: up(s)[0].argmax(0), 3)  # class axis outermost
    sl = s.contiguous(memory_format=torch.channels_last)
    t_last = timeit(lambda: up(sl)[0].permute(1, 2, 0).argmax(-1), 3)  # channels-last
    t_frm = timeit(lambda: full_res_masks(s, (1080, 1920)), 3)  # what Predictor.top2 calls
    t_frm2 = timeit(lambda: full_res_masks(s, (1080, 1920), top2=True), 3)
    print(
        f"logits 540x960 -> full-size 1080x1920 mask (upsample + argmax): channels-first {t_first * 1e3:.0f} ms, "
        f"channels-last {t_last * 1e3:.0f} ms (x{t_first / t_last:.1f} faster); "
        f"models.full_res_masks {t_frm * 1e3:.0f} ms, "
        f"with top-2 {t_frm2 * 1e3:.0f} ms"
    )

    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        k = iter(range(100))
        t_w = timeit(
            lambda: Image.fromarray(m, "L").save(Path(d) / f"p{next(k)}.png"), 3
        )  # PIL's default (zlib 6): the old writer
        t_f = timeit(lambda: write_mask(Path(d) / f"f{next(k)}.png", m), 3)  # core.write_mask: OpenCV, zlib 1 + RLE
    print(
        f"1080x1920 mask PNG: PIL default (zlib 6) {t_w * 1e3:.0f} ms, "
        f"core.write_mask (OpenCV, zlib 1 + RLE) {t_f * 1e3:.0f} ms"
    )

    from surgseg.models import build_model

    cfg = Config(model="unet", encoder="resnet18", weights="none", resolution=0.5)
    imgs = [np.random.default_rng(i).integers(0, 255, (1080, 1920, 3), dtype=np.uint8) for i in range(frames)]
    for dev in ["cpu"] + (["cuda"] if get_device() == "cuda" else []):
        res = {}
        for tta in (False, True):
            p = Predictor(build_model(cfg), cfg, device=dev, tta=tta, batch_size=2 if dev == "cpu" else 8)
            res[tta] = timeit(lambda: p.predict_batch(imgs[: p.batch_size]), 2) / p.batch_size
        print(
            f"Predictor {dev} (U-Net ResNet-18 at 540x960, full-size masks): {res[False]:.3f} s/frame, "
            f"TTA {res[True]:.3f} s/frame (x{res[True] / res[False]:.2f})"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4)
    main(**vars(ap.parse_args()))
