"""Peak host memory (RSS) of `inference.predict_video` on a long video and `inference.predict_images` on a big folder.

Issue 20 asks that host memory stay bounded for arbitrarily long videos and large prediction folders. This script
segments a short and a four times longer synthetic input, each in a fresh Python process, and prints each process's
peak RSS (`ru_maxrss` of that child, from os.wait4) and the ratio long / short: bounded memory means a ratio near 1.0
(a pipeline that kept every frame, mask or pending write would grow about 4x with the input).

Run:
  .venv/bin/python bench/memory_video.py                       # 600 vs 2400 frames at 160x128, 600 vs 2400 images
  .venv/bin/python bench/memory_video.py --short 300 --long 1200 --width 320 --height 256
Options: [--short 600] [--long 2400] [--width 160] [--height 128] [--batch-size 4] [--threads 1]

The model is a 1x1 convolution (3 -> 10 classes): the memory of the stages around the model (decoding, the prefetch
queues, upsampling, the background writer with its masks, overlay PNGs and the overlay video) is what is measured; a
real model adds its own constant weights and activations. predict_video writes masks, overlay PNGs and the overlay
video (every output); predict_images writes masks and overlays. Each child prints the RSS after its imports (the
baseline) as well; "growth" is peak minus baseline.

Measured 2026-12-06 on this machine (2 cores shared with two other jobs, load average 4.3-4.9; defaults: --threads 1,
600 vs 2400 frames at 160x128, batch 4; peak RSS in MiB, "growth" = peak - RSS after imports):
                                          600 frames          2400 frames        ratio peak (growth)
  before (be624ec: inference._writer pools, data._PngWriter; pending writes drained past 64):
    predict_video, every output           960.1 (211.4)       946.0 (197.2)      0.985 (0.933)
    predict_images, masks + overlays      939.3 (191.0)       949.1 (200.3)      1.010 (1.049)
  after (one core.BackgroundWriter per output kind, at most 16 writes waiting):
    predict_video, every output           962.2 (213.6)       944.2 (195.5)      0.981 (0.915)
    predict_images, masks + overlays      963.5 (215.1)       954.3 (205.8)      0.990 (0.957)
  Bounded in both: four times the frames, the same peak (within 2 %). The ~200 MiB above the imports is the first
  forward pass, the codecs and the thread pools, not frames (a 160x128 frame + mask is 80 KB). frames/s wander with
  the load (107-188) and are not a speed measurement.
"""

import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path


def make_video(path: Path, n: int, w: int, h: int, fps: int = 60) -> Path:
    "An MJPG .avi of `n` frames of moving noise-textured gradients (no two frames alike)."
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for i in range(n):
        y, x = (i * 3) % h, (i * 5) % w
        vw.write(np.ascontiguousarray(base[y : y + h, x : x + w]))
    vw.release()
    return path


def make_images(folder: Path, n: int, w: int, h: int) -> Path:
    "A folder of `n` PNG images."
    import numpy as np
    from surgseg.core import write_png

    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8)
    for i in range(n):
        y, x = (i * 3) % h, (i * 7) % w
        write_png(folder / f"img_{i:06d}.png", base[y : y + h, x : x + w])
    return folder


def child(kind: str, src: str, out: str, batch_size: int, threads: int):
    "In a fresh process: segment `src` and print JSON: frames/s and the RSS baseline after imports."
    import torch
    from surgseg.core import Config
    from surgseg.inference import Predictor, predict_images, predict_video

    torch.set_num_threads(threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    p = Predictor(torch.nn.Conv2d(3, 10, 1), Config(), device="cpu", batch_size=batch_size, tta=False)
    t = time.perf_counter()
    if kind == "video":
        predict_video(p, src, out, overlays=True, progress=False)
    else:
        predict_images(p, src, out, progress=False)
    n = len(list((Path(out) / "masks").glob("*.png")))
    print(json.dumps(dict(baseline_kib=base, masks=n, seconds=time.perf_counter() - t)))


def measure(kind: str, src: Path, out: Path, a) -> dict:
    "Run `child` in a fresh interpreter; its peak RSS (KiB) from os.wait4 plus what it printed."
    argv = [
        sys.executable,
        __file__,
        "--child",
        kind,
        str(src),
        str(out),
        "--batch-size",
        str(a.batch_size),
        "--threads",
        str(a.threads),
    ]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
    text = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{kind} {src}: child failed with exit code {p.returncode}")
    return {**json.loads(text.strip().splitlines()[-1]), "peak_kib": ru.ru_maxrss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--short", type=int, default=600, help="frames (images) of the short input")
    ap.add_argument("--long", type=int, default=2400, help="frames (images) of the long input")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the children")
    a = ap.parse_args()
    if a.child:
        return child(*a.child, a.batch_size, a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    print(
        f"inputs {a.width}x{a.height}, {a.short} vs {a.long} frames; batch {a.batch_size}, {a.threads} thread(s); "
        f"load average {os.getloadavg()[0]:.2f}; scratch {tmp}"
    )
    for kind in ("video", "images"):
        rows = {}
        for n in (a.short, a.long):
            if kind == "video":
                src = make_video(tmp / f"v{n}.avi", n, a.width, a.height)
            else:
                src = make_images(tmp / f"im{n}", n, a.width, a.height)
            r = rows[n] = measure(kind, src, tmp / f"out_{kind}_{n}", a)
            fn = {
                "video": "predict_video (masks, overlay PNGs, overlay video)",
                "images": "predict_images (masks, overlays)",
            }[kind]
            print(
                f"{fn:52s} {n:6d} frames: peak RSS {r['peak_kib'] / 1024:7.1f} MiB (after imports "
                f"{r['baseline_kib'] / 1024:6.1f} MiB, "
                f"growth {(r['peak_kib'] - r['baseline_kib']) / 1024:6.1f} MiB), "
                f"{r['masks']} masks, {r['masks'] / r['seconds']:.0f} frames/s"
            )
        s, l = rows[a.short], rows[a.long]
        gs, gl = s["peak_kib"] - s["baseline_kib"], l["peak_kib"] - l["baseline_kib"]
        print(
            f"  {kind}: peak RSS ratio {a.long} / {a.short} frames = {l['peak_kib'] / s['peak_kib']:.3f}; "
            f"growth ratio {gl / max(gs, 1):.3f} (input ratio {a.long / a.short:.1f})"
        )


if __name__ == "__main__":
    main()
