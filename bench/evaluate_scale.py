"""`surgseg evaluate` at the size of the real test set: wall time, frames/s and peak memory.

Writes (once, then reused) a reference and a prediction folder in the official layout with the real test
split's shape: 10 videos (video_41..video_50) with their real mask counts (3,252 in all), 1080x1920.
Masks are realistic in kind: large instrument blobs (shaft, wrist, clasper), thin curved threads, small
needles, clamps and catheters, rare classes in few frames; each prediction is the ground truth perturbed
(boundaries shifted, a class dropped now and then, thin parts broken, a few false blobs). Then it runs the
command a user runs, `surgseg evaluate REF PRED --workers N`, as a subprocess, and samples the resident
memory of its whole process tree (the command and its worker processes) every 0.1 s.

Memory must not grow with the number of frames: the script also scores a tenth of the set (the first
video's worth of frames, same workers) and prints both peaks. Prints numbers and ratios; asserts nothing.

Run: .venv/bin/python bench/evaluate_scale.py [--root DIR] [--workers 2] [--frames 3252]
"""

import argparse, os, subprocess, sys, tempfile, time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEST_COUNTS = {
    "video_41": 238,
    "video_42": 358,
    "video_43": 198,
    "video_44": 143,
    "video_45": 117,  # the released test split
    "video_46": 633,
    "video_47": 334,
    "video_48": 301,
    "video_49": 687,
    "video_50": 243,
}
H, W = 1080, 1920


def gt_mask(rng: np.random.Generator) -> np.ndarray:
    "One ground-truth frame: instrument blobs, a thread, a needle, and the rare classes now and then."
    m = np.zeros((H, W), np.uint8)
    for _ in range(rng.integers(1, 3)):  # one or two instruments: shaft -> wrist -> clasper along a line
        x0, y0 = int(rng.integers(0, W)), int(rng.integers(H // 2, H))
        ang = rng.uniform(-np.pi, 0)
        dx, dy = np.cos(ang), np.sin(ang)
        L = rng.integers(300, 700)
        x1, y1 = int(x0 + dx * L), int(y0 + dy * L)
        cv2.line(m, (x0, y0), (x1, y1), 3, int(rng.integers(60, 120)))
        x2, y2 = int(x1 + dx * 120), int(y1 + dy * 120)
        cv2.line(m, (x1, y1), (x2, y2), 2, int(rng.integers(50, 90)))
        cv2.ellipse(
            m,
            (int(x2 + dx * 50), int(y2 + dy * 50)),
            (int(rng.integers(30, 60)), int(rng.integers(15, 30))),
            float(np.degrees(ang)),
            0,
            360,
            1,
            -1,
        )
    if rng.random() < 0.9:  # thread: a thin polyline, 2-4 px
        pts = np.cumsum(rng.normal(0, 40, (12, 2)), 0) + [rng.integers(200, W - 200), rng.integers(200, H - 200)]
        cv2.polylines(m, [pts.astype(np.int32)], False, 5, int(rng.integers(2, 5)))
    if rng.random() < 0.78:  # needle: a small arc
        cv2.ellipse(
            m,
            (int(rng.integers(100, W - 100)), int(rng.integers(100, H - 100))),
            (40, 25),
            float(rng.uniform(0, 180)),
            0,
            200,
            4,
            5,
        )
    for c, p, r in ((8, 0.6, (20, 40)), (9, 0.2, (10, 25)), (6, 0.09, (60, 120)), (7, 0.04, (40, 80))):
        if rng.random() < p:
            cv2.ellipse(
                m,
                (int(rng.integers(0, W)), int(rng.integers(0, H))),
                (int(rng.integers(*r)), int(rng.integers(*r)) // 2),
                float(rng.uniform(0, 180)),
                0,
                360,
                c,
                -1,
            )
    return m


def perturb(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    "A plausible prediction: boundaries moved by a few pixels, a class dropped or broken now and then, false specks."
    p = gt.copy()
    k = np.ones((5, 5), np.uint8)
    for c in np.unique(gt)[1:]:
        sel = (gt == c).astype(np.uint8)
        op = rng.integers(0, 4)
        if op == 1:
            sel = cv2.dilate(sel, k)
        elif op == 2:
            sel = cv2.erode(sel, k)
        elif op == 3 and rng.random() < 0.15:
            sel[:] = 0  # missed entirely
        p[(gt == c) & (sel == 0)] = 0
        p[(sel == 1) & (p == 0)] = c
    if rng.random() < 0.5:  # break the thread in places
        for _ in range(5):
            y, x = rng.integers(0, H - 30), rng.integers(0, W - 30)
            p[y : y + 30, x : x + 30][p[y : y + 30, x : x + 30] == 5] = 0
    for _ in range(rng.integers(0, 4)):  # false specks of random classes
        y, x, r = rng.integers(0, H - 20), rng.integers(0, W - 20), rng.integers(2, 15)
        p[y : y + r, x : x + r] = rng.integers(1, 10)
    return p


def write_video(args):
    "Write the ground truth and prediction PNGs of one video (skips files already there)."
    root, video, n, seed = args
    rng = np.random.default_rng(seed)
    for i in range(n):
        g, p = (
            root / "ref" / video / "segmentation" / f"{60 * i:09d}.png",
            root / "pred" / video / "segmentation" / f"{60 * i:09d}.png",
        )
        gt = gt_mask(rng)
        pr = perturb(gt, rng)
        if g.exists() and p.exists():
            continue
        for path, m in ((g, gt), (p, pr)):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp.png")
            cv2.imwrite(str(tmp), m, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            os.replace(tmp, path)
    return n


def tree_rss(pid: int) -> int:
    "Resident bytes of a process and all its descendants (Linux /proc)."
    kids, total = {}, 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo += kids.get(p, [])
    return total


def run_evaluate(ref: Path, pred: Path, out: Path, workers: int) -> tuple[float, int, str]:
    "Run `surgseg evaluate` as a user would; (wall seconds, peak tree RSS in bytes, stdout)."
    exe = Path(sys.executable).parent / "surgseg"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "evaluate", str(ref), str(pred), "--out", str(out), "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"surgseg evaluate failed ({proc.returncode}):\n{stderr[-2000:]}")
    return wall, peak, stdout


def subset(root: Path, videos: list[str], name: str) -> tuple[Path, Path]:
    "A reference/prediction pair of folders holding only `videos` (symlinks)."
    ref, pred = root / f"{name}_ref", root / f"{name}_pred"
    for base, src in ((ref, root / "ref"), (pred, root / "pred")):
        base.mkdir(exist_ok=True)
        for v in videos:
            if not (base / v).exists():
                (base / v).symlink_to(src / v)
    return ref, pred


def main(root: str = "", workers: int = 2, frames: int = 3252):
    root = Path(root) if root else Path(tempfile.gettempdir()) / "surgseg_evaluate_scale"
    scale = frames / sum(TEST_COUNTS.values())
    counts = {v: max(1, round(n * scale)) for v, n in TEST_COUNTS.items()}
    n = sum(counts.values())
    t0 = time.perf_counter()
    jobs = [(root, v, c, 41 + i) for i, (v, c) in enumerate(counts.items())]
    with get_context("fork").Pool(workers) as pool:
        pool.map(write_video, jobs, chunksize=1)
    print(
        f"data: {n} frames of {len(counts)} videos at {W}x{H} under {root} "
        f"(written or checked in {time.perf_counter() - t0:.0f} s)"
    )
    load0 = os.getloadavg()
    small_videos = ["video_45"]  # 117 of 3,252 frames: the smallest video
    ref_s, pred_s = subset(root, small_videos, "small")
    out_s = Path(tempfile.mkdtemp(prefix="eval_small_"))
    wall_s, peak_s, _ = run_evaluate(ref_s, pred_s, out_s, workers)
    out = Path(tempfile.mkdtemp(prefix="eval_full_"))
    wall, peak, stdout = run_evaluate(root / "ref", root / "pred", out, workers)
    load1 = os.getloadavg()
    n_s = counts["video_45"]
    print(stdout.strip().splitlines()[-3] if stdout.strip() else "")
    print(
        f"surgseg evaluate --workers {workers}, {n} frames: {wall:.1f} s wall, {n / wall:.1f} frames/s, "
        f"peak RSS of the process tree {peak / 2**20:.0f} MiB (target: under 120 s)"
    )
    print(
        f"  {n_s} frames (one video):        {wall_s:.1f} s wall, {n_s / wall_s:.1f} frames/s, "
        f"peak RSS {peak_s / 2**20:.0f} MiB"
    )
    print(f"  frames x{n / n_s:.1f} -> peak memory x{peak / peak_s:.2f}; time x{wall / wall_s:.1f}")
    print(
        f"  load average before {load0[0]:.2f}, after {load1[0]:.2f} (cores: {os.cpu_count()}; "
        "shared machines inflate the times)"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="", help="where to write (and reuse) the folders; default: a fixed temp folder")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=3252, help="total frames (the real test set has 3,252)")
    main(**vars(ap.parse_args()))
