"""Benchmark: surgseg's extraction of the annotated frames vs a plain sequential decode.

For each codec, writes a 1080p 60 fps synthetic video (panning tissue texture from surgseg.synthetic and
moving instrument-like shapes, so frames differ and compress like real ones), then times
  - surgseg: `extract_frames` (`read_frames`: PyAV seeking, proven exact per video; one video, so one
    process whose spare cores encode PNGs),
  - sequential: decode every frame in order with PyAV (frame threading on) and write every 60th
    frame as PNG, which is what the organisers' `unpack` does (optionally also with OpenCV's VideoCapture),
checks that surgseg's PNGs are pixel-identical to the sequential ones, and prints times and ratios, both
with PNG writing (both sides write the same PNGs with the same settings) and for decoding alone (the
target frames in memory), which isolates what seeking saves from the PNG encoding that every method pays.

  python bench/extract.py [--seconds 60] [--codecs MJPG,mp4v,h264,h264-g60] [--out DIR] [--keep] [--cv2]
"""

import argparse, math, shutil, sys, tempfile, time
from pathlib import Path

import av
import cv2
import numpy as np

from surgseg.data import VIDEO_FILE, PNG_PARAMS, extract_frames, load_video, probe_video, read_frames
from surgseg.core import MASK_STEP, write_mask

H, W = 1080, 1920


def background(seed=0):
    "A large tissue-like texture to pan over (surgseg.synthetic's, else smoothed noise)."
    rng = np.random.default_rng(seed)
    try:
        from surgseg.synthetic import tissue_texture

        return cv2.cvtColor(tissue_texture(rng, (H + 240, W + 400), 4.0), cv2.COLOR_RGB2BGR)
    except Exception as e:  # the synthetic module's API moved: any texture will do for timing
        print(f"(texture fallback: {type(e).__name__}: {e})")
        return cv2.GaussianBlur(rng.integers(0, 255, (H + 240, W + 400, 3), dtype=np.uint8), (0, 0), 6)


def frames(n, bg):
    "n different frames: the texture pans slowly; two 'instruments' swing; the frame number is burnt in."
    for i in range(n):
        t = i / 60
        x, y = int(200 + 180 * math.sin(t / 3)), int(120 + 100 * math.sin(t / 5))
        f = bg[y : y + H, x : x + W].copy()
        for k, (cx, cy) in enumerate([(0, H), (W, H)]):
            a = math.pi * (0.25 + 0.1 * math.sin(t * (1 + k))) if k == 0 else math.pi * (0.75 - 0.1 * math.sin(t * 1.3))
            ex, ey = int(cx + math.cos(a) * 1000 * (1 if k == 0 else 1)), int(cy - math.sin(a) * 800)
            cv2.line(f, (cx, cy), (ex, ey), (60, 60, 70), 70, cv2.LINE_AA)
            cv2.circle(f, (ex, ey), 45, (150, 150, 160), -1, cv2.LINE_AA)
        cv2.putText(f, str(i), (60, 120), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        yield f


def write_video(path, n, codec, bg):
    "cv2.VideoWriter for MJPG / mp4v; PyAV libx264 for h264 (default GOP) and h264-g60 (a keyframe per second)."
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec.startswith("h264"):
        with av.open(str(path), "w", format="mp4") as c:
            s = c.add_stream("libx264", rate=60)
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            s.codec_context.options = {
                "preset": "veryfast",
                "crf": "20",
                **({"g": "60"} if codec == "h264-g60" else {}),
            }
            for f in frames(n, bg):
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    else:
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 60, (W, H))
        if not vw.isOpened():
            raise SystemExit(f"cv2 cannot write {codec}")
        for f in frames(n, bg):
            vw.write(f)
        vw.release()


def sequential_pyav(video, out):
    "Decode every frame with PyAV (frame threads) and write every 60th: the plain method."
    out.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "AUTO"
        for i, fr in enumerate(c.decode(s)):
            if i % MASK_STEP == 0:
                cv2.imwrite(str(out / f"{i:09d}.png"), fr.to_ndarray(format="bgr24"), PNG_PARAMS)


def sequential_cv2(video, out):
    "The same with OpenCV's VideoCapture (read every frame, keep every 60th)."
    out.mkdir(parents=True, exist_ok=True)
    cap, i = cv2.VideoCapture(str(video)), 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i % MASK_STEP == 0:
            cv2.imwrite(str(out / f"{i:09d}.png"), f, PNG_PARAMS)
        i += 1
    cap.release()


def decode_only(video, targets):
    "Seconds to get the target frames into memory, without writing: (read_frames incl. probe and check, sequential)."
    t = time.perf_counter()
    r = read_frames(video, targets)
    why = r.note
    if not why:
        list(r)
    t_seek = time.perf_counter() - t
    t = time.perf_counter()
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "AUTO"
        for i, fr in enumerate(c.decode(s)):
            if i % MASK_STEP == 0:
                fr.to_ndarray(format="bgr24")
    return (None if why else t_seek), time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="video length (60 fps)")
    ap.add_argument("--codecs", default="MJPG,mp4v,h264,h264-g60", help="comma-separated: MJPG, mp4v, h264, h264-g60")
    ap.add_argument("--out", default="", help="work folder (default: a temporary one)")
    ap.add_argument("--cv2", action="store_true", help="also time the OpenCV VideoCapture baseline")
    ap.add_argument("--keep", action="store_true", help="keep the videos and frames")
    a = ap.parse_args()
    work = Path(a.out or tempfile.mkdtemp(prefix="surgseg-bench-extract-"))
    n = int(a.seconds * 60) + 1
    print(
        f"1080p, {n} frames ({a.seconds:g} s at 60 fps), {len(range(0, n, MASK_STEP))} annotated frames per video; "
        f"work folder {work}"
    )
    bg = background()
    rows = []
    for codec in a.codecs.split(","):
        d = work / codec / "video_01"
        if not (d / VIDEO_FILE).exists():
            t = time.perf_counter()
            write_video(d / VIDEO_FILE, n, codec, bg)
            print(
                f"{codec}: wrote {(d / VIDEO_FILE).stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s"
            )
        for f in range(0, n, MASK_STEP):
            write_mask(d / "segmentation" / f"{f:09d}.png", np.zeros((H, W), np.uint8))
        pr = probe_video(d / VIDEO_FILE)
        for sub in ("rgb", "seq_pyav", "seq_cv2"):
            shutil.rmtree(d / sub, ignore_errors=True)
        _ = (d / VIDEO_FILE).read_bytes()  # same page cache for every method
        t = time.perf_counter()
        (r,) = extract_frames([load_video(d)], workers=1, progress=False)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        sequential_pyav(d / VIDEO_FILE, d / "seq_pyav")
        t_seq = time.perf_counter() - t
        t_cv2 = None
        if a.cv2:
            t = time.perf_counter()
            sequential_cv2(d / VIDEO_FILE, d / "seq_cv2")
            t_cv2 = time.perf_counter() - t
        names = sorted(p.name for p in (d / "seq_pyav").iterdir())
        same = names == sorted(p.name for p in (d / "rgb").iterdir()) and all(
            np.array_equal(
                cv2.imread(str(d / "rgb" / k), cv2.IMREAD_UNCHANGED),
                cv2.imread(str(d / "seq_pyav" / k), cv2.IMREAD_UNCHANGED),
            )
            for k in names
        )
        cv2_same = (
            None
            if t_cv2 is None
            else all(np.array_equal(cv2.imread(str(d / "rgb" / k)), cv2.imread(str(d / "seq_cv2" / k))) for k in names)
        )
        d_seek, d_seq = decode_only(d / VIDEO_FILE, list(range(0, n, MASK_STEP)))
        rows.append(
            (codec, pr.codec, len(pr.keyframes) or "-", r.method, t_ours, t_seq, t_cv2, same, cv2_same, d_seek, d_seq)
        )
        print(
            f"{codec}: surgseg {t_ours:.1f} s ({r.method}{', ' + r.note if r.note else ''}), "
            f"sequential PyAV {t_seq:.1f} s"
            + (f", sequential cv2 {t_cv2:.1f} s" if t_cv2 else "")
            + f", identical pixels: {same}; decoding only: "
            + (f"seeking {d_seek:.1f} s" if d_seek else "seeking refused")
            + f", sequential {d_seq:.1f} s",
            flush=True,
        )
    print(f"\nwith PNG writing (what a user waits for):{'':24}decoding only (frames in memory):")
    print(
        f"{'codec':9} {'decoder':7} {'keyframes':>9} {'method':10} {'surgseg s':>9} {'seq PyAV s':>10} {'ratio':>6} "
        f"{'seek s':>7} {'seq s':>7} {'ratio':>6}  {'seq cv2 s':>9} {'ratio':>6}  identical"
    )
    for codec, dec, keys, m, to, ts, tc, same, csame, ds, dq in rows:
        print(
            f"{codec:9} {dec:7} {keys!s:>9} {m:10} {to:9.2f} {ts:10.2f} {ts / to:5.1f}x "
            + (f"{ds:7.2f} {dq:7.2f} {dq / ds:5.1f}x" if ds else f"{'-':>7} {dq:7.2f} {'-':>6}")
            + (f"  {tc:9.2f} {tc / to:5.1f}x" if tc else f"  {'-':>9} {'-':>6}")
            + f"  {same}"
            + (f" (cv2: {csame})" if tc else "")
        )
    if not a.keep and not a.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r[7] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
