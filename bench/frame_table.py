"""Frame-table speed: serial vs process-pool pixel counting, and a cache hit vs a full count.

    python bench/frame_table.py [--masks 240] [--size 1080x1920] [--workers 2]

Writes synthetic full-HD masks (thin stripes and blobs, like real masks) into a temporary dataset root,
then prints times and ratios. Nothing is asserted: the numbers depend on the machine and its load.
"""

import argparse, os, tempfile, time
from pathlib import Path

import numpy as np

from surgseg.core import write_mask
from surgseg.imbalance import CACHE_FILE, count_masks, frame_table


def make_root(root: Path, n: int, size: tuple) -> list:
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    paths = []
    for i in range(n):
        m = np.zeros(size, np.uint8)
        for c in range(1, 10):
            if rng.random() < 0.6:
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 40, h // 6)
                m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
        p = root / "train" / f"video_{i // 60 + 1:02d}" / "segmentation" / f"{60 * (i % 60):09d}.png"
        write_mask(p, m)
        paths.append(p)
    return paths


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=240)
    ap.add_argument("--size", default="1080x1920")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    a = ap.parse_args()
    size = tuple(int(x) for x in a.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        paths = make_root(root, a.masks, size)
        serial, ts = timed(lambda: count_masks(paths, workers=1))
        par, tp = timed(lambda: count_masks(paths, workers=a.workers))
        assert (serial == par).all()
        _, tfull = timed(lambda: frame_table(root))
        _, tcache = timed(lambda: frame_table(root))
        assert (root / CACHE_FILE).is_file()
    print(f"{a.masks} masks of {size[1]}x{size[0]} on {os.cpu_count()} cores")
    print(f"count serial        {ts:7.2f} s  ({1000 * ts / a.masks:.1f} ms/mask)")
    print(f"count {a.workers} workers     {tp:7.2f} s  speed-up x{ts / tp:.2f}")
    print(f"frame_table (count) {tfull:7.2f} s")
    print(f"frame_table (cache) {tcache:7.2f} s  speed-up x{tfull / tcache:.1f}")
