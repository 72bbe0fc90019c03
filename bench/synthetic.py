"""Time `surgseg.synthetic.generate` with its defaults (6 training operations, one split; 2 test videos; 20 s
each at 480x270, MJPG) on N worker processes, and print wall time, CPU time and the ratio to the one-minute target.

    OMP_NUM_THREADS=1 python bench/synthetic.py [--workers 2] [--codec MJPG] [--size 270x480] [--seconds 20]

CPU time (parent + workers) divided by the number of workers is what the wall time would be on that many
otherwise idle cores; on a shared machine the wall time is larger. Not a test: nothing is asserted.
"""

import argparse, os, resource, tempfile, time
from pathlib import Path

import cv2
from surgseg.synthetic import generate, plan_dataset, Scene, calibration


def cpu_s():
    "CPU seconds used so far by this process and its finished children."
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--codec", default="MJPG")
    ap.add_argument("--size", default="270x480", help="HxW")
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    plans = plan_dataset(seconds=a.seconds, size=size)
    frames = sum(p.n_frames for p in plans)

    cv2.setNumThreads(1)
    sc = Scene(plans[0])
    t = time.process_time()
    for f in range(300):
        sc.render(f)
    render_ms = (time.process_time() - t) / 300 * 1e3
    t = time.perf_counter()
    calibration(seconds=a.seconds, size=size)
    calib_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as d:
        c0, t0 = cpu_s(), time.perf_counter()
        generate(Path(d) / "syn", seconds=a.seconds, size=size, codec=a.codec, workers=a.workers)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        mb = sum(p.stat().st_size for p in (Path(d) / "syn").rglob("*") if p.is_file()) / 2**20
    print(f"dataset: {len(plans)} videos, {frames} frames at {size[1]}x{size[0]}, codec {a.codec}, {mb:.0f} MB")
    print(
        f"render one frame (no encoding): {render_ms:.2f} ms CPU;  "
        f"masks-only calibration of the training split: {calib_s:.2f} s"
    )
    print(
        f"generate, {a.workers} workers: wall {wall:.1f} s, CPU {cpu:.1f} s "
        f"({frames / cpu:.0f} frames per CPU second), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"on {a.workers} idle cores: about {cpu / a.workers:.1f} s = {cpu / a.workers / 60:.2f} x the 60 s target "
        f"(measured wall: {wall / 60:.2f} x)"
    )


if __name__ == "__main__":
    main()
