"""surgseg's `parallel_map` against `fastcore.parallel.parallel` on one of its real jobs: checking mask PNGs.

    python bench/parallel_map.py [--masks 400] [--size 270x480] [--workers 2] [--repeats 3]

Writes synthetic masks into a temporary folder, then maps `core.read_mask` over them with each and prints the best of
`repeats` wall times (pool start-up included, as every call pays it) and the ratio. fastcore runs with its defaults
(the platform's start method: fork on Linux; one item per task) and with spawn (like for like with parallel_map).
Nothing is asserted: the numbers depend on the machine and its load.
"""

import argparse, tempfile, time
from pathlib import Path

import numpy as np
from fastcore.parallel import parallel

from surgseg.core import parallel_map, read_mask, write_mask


def best_of(n, fn):
    "Smallest wall time of `n` calls of fn(), and its last result."
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--masks", type=int, default=400)
    ap.add_argument("--size", default="270x480")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    h, w = map(int, a.size.split("x"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = [Path(d) / f"{i:09d}.png" for i in range(a.masks)]
        for p in paths:
            write_mask(p, rng.integers(0, 10, (h, w)).astype(np.uint8))
        kw = dict(progress=False)
        t_ours, r1 = best_of(a.repeats, lambda: parallel_map(read_mask, paths, workers=a.workers, **kw))
        t_fork, r2 = best_of(a.repeats, lambda: list(parallel(read_mask, paths, n_workers=a.workers, **kw)))
        t_spawn, r3 = best_of(
            a.repeats, lambda: list(parallel(read_mask, paths, n_workers=a.workers, method="spawn", **kw))
        )
        assert all((x == y).all() and (x == z).all() for x, y, z in zip(r1, r2, r3))
    print(f"{a.masks} masks {h}x{w}, {a.workers} workers, best of {a.repeats}")
    print(f"surgseg parallel_map (spawn, chunked):   {t_ours:6.2f} s")
    print(f"fastcore parallel (default: fork, 1/task): {t_fork:6.2f} s  ratio {t_fork / t_ours:.2f}")
    print(f"fastcore parallel (spawn, 1/task):         {t_spawn:6.2f} s  ratio {t_spawn / t_ours:.2f}")


if __name__ == "__main__":
    main()
