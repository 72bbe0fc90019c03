"""A 1080p, 60 fps video through `Predictor` at the default working resolution: how close end-to-end runs to the model.

Prints, asserting nothing (the cores are shared: read the load average printed with the numbers):
  - end-to-end frames/s of `inference.predict_video` for its default outputs (mask PNGs + the overlay video) and for
    every output (mask PNGs + overlay PNGs + the overlay video), for each backend;
  - the bare model's frames/s on the same batches (tensors already at the working resolution, no I/O), and the ratios;
  - the time of each stage (ms per frame and share), from a sequential pass with time.perf_counter around each stage,
    using the functions predict_video uses: decode, resize, model, upsample+argmax, post-processing, mask PNG,
    overlay (blend), overlay video (legend + encode), overlay PNG; the shares are given for the default outputs and for
    every output. On one core the stages cannot overlap, so end-to-end / model can be at most
    model / (sum of the stages) of the outputs written: that bound is printed as the model share;
  - PyTorch vs onnxruntime (the model exported by `export.export_onnx`): frames/s on the same frames and the number
    of mask pixels that differ between the two backends' masks.

Run (one core, as measured below):
  taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python bench/video.py --frames 24 --threads 1 --backend both
Options: [--frames 60] [--backend torch|onnxruntime|both] [--threads 2] [--run RUN] [--video FILE] [--batch-size 4]
         [--json FILE]: also write every number printed to FILE (the records chapters 08 and 08b show:
         bench/results/video-1core.json, as run above with --json, and bench/results/video-2cores.json, the same
         without taskset and OMP_NUM_THREADS, with --threads 2)
Without --run, the untrained default model (`build_model(Config())`: U-Net, ImageNet EfficientNet-Lite0 encoder).
Without --video, a synthetic 1920x1080 60 fps MJPG video of --frames frames is rendered (surgseg.synthetic).
An older checkout can be measured with the same script: PYTHONPATH=OLD_CHECKOUT (the stage pass then falls back to
core.write_mask, core.overlay and PIL's PNG encoder, which the writers used then).

Measured 2026-12-02 on ONE core (taskset -c 1, OMP_NUM_THREADS=1, --threads 1, --frames 24; the other core busy with
training experiments, load average 2-4.5, so absolute numbers wander by +-15 % between runs: read the ratios within a
run), untrained default model at 960x540, batch 4. "Default" = masks + overlay video; "every" = + overlay PNGs.
  Before (commit 2c314c5: PIL PNGs at zlib 6, core.overlay, x264 preset medium, upsampling frame by frame), two runs:
    PyTorch:     bare model 1.15-1.27 frames/s; default 0.50 frames/s, ratio 0.44; every 0.31-0.49 frames/s,
                 ratio 0.27-0.39
                 per frame: model 838-1260 ms, upsample+argmax 105-142, overlay 188-250, mask PNG 96, overlay video 263,
                 overlay PNG 517 ms (the run with per-stage times had the busier neighbour)
    onnxruntime: bare model 1.80-2.13 frames/s; default ratio 0.44; every ratio 0.30-0.33
  After (OpenCV PNG zlib 1 + RLE, inference._blend (core.overlay's exact pixels), x264 veryfast, overlay PNGs only on
  request, upsampling per batch), two runs:
    PyTorch:     bare model 1.19-1.22 frames/s; default 0.80-0.94 frames/s, ratio 0.65-0.79; every 0.75-0.91,
                 ratio 0.61-0.76
                 per frame: model 799-816 ms, upsample+argmax 99-112, mask PNG 20-22, overlay 18-19,
                 overlay video 78-82, overlay PNG 85-90, decode+resize 8-9 ms: the model is 77-78 % of the default
                 outputs' sequential time
    onnxruntime: bare model 1.84-2.03 frames/s; default ratio 0.54-0.64 (model share 62-63 %); every ratio 0.48-0.56
    141 of 49,766,400 mask pixels differ between the backends (24 frames).
  Why not 0.9 here: on one core the stages cannot overlap, so the ratio is at most the model's share of the sequential
  time. Upsampling + argmax to 1080p alone (99-112 ms/frame, models.full_res_masks, kept as is so masks do not change)
  caps it at 0.88 with PyTorch; the overlay video adds 80 ms. With a free second core the work around the model
  (about 220 ms/frame) could hide behind the model's 800 ms; not measurable on this machine (the other core was busy).
  Two idle cores (2026-12-02, after the writers moved to core; --threads 2, --frames 24, load 0.4 before):
    PyTorch:     bare model 2.56 frames/s (390 ms/frame); default outputs 1.94 frames/s, ratio 0.76 (sequential pass
                 576 ms/frame, model share 70 %: upsample+argmax 79 ms, overlay video 49, mask PNG 20, overlay 17);
                 every output ratio 0.71
    onnxruntime: bare model 4.12 frames/s; default ratio 0.61; every output 0.53; 145 of 49,766,400 mask pixels differ.
    With the model on both threads the stages around it still compete for the same two cores: the pipeline hides
    about 60 ms of the 186 ms around the model, not all of it. 0.9 is not reached on this CPU.
  No GPU was available: GPU numbers were not measured.
"""

import argparse, dataclasses, json, os, subprocess, tempfile, time
from pathlib import Path

import numpy as np
import torch

from surgseg import inference
from surgseg.core import Config, overlay, read_mask, write_mask
from surgseg.data import probe_video, read_frames
from surgseg.export import export_onnx, load_onnx
from surgseg.inference import Predictor, VideoWriter, draw_legend, predict_video
from surgseg.models import build_model, full_res_masks
from surgseg.postprocess import load_predictor
from surgseg.runs import load_checkpoint

DEFAULT = ("decode", "resize", "model", "upsample+argmax", "post-processing", "mask PNG", "overlay", "overlay video")
STAGES = DEFAULT + ("overlay PNG",)


def _old_png(path, rgb):
    "PIL's PNG encoder at its default level: what the writers used before (for an older checkout)."
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")


# the functions predict_video calls for each output; an older checkout falls back to what it used
import surgseg.core as _core

write_mask_png = getattr(
    inference, "_write_mask", lambda p, m: write_mask(p, m, False)
)  # core.write_mask since the writers moved to core
blend = getattr(inference, "_blend", overlay)  # core.overlay (fast path) since then
write_png = getattr(inference, "_png", getattr(_core, "write_png", _old_png))


def _commit() -> str:
    "The checkout's commit (with `+` when it has changes), or '' outside git."
    root = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+" if head and git("status", "--porcelain", "--untracked-files=no") else "")


def make_video(folder: Path, frames: int) -> Path:
    "Render a synthetic 1920x1080, 60 fps video of `frames` frames (MJPG .avi)."
    from surgseg.synthetic import plan_dataset, write_video

    plan = dataclasses.replace(plan_dataset(1, 0, frames / 60 + 1, (1080, 1920), 0, split_ops=0)[0], n_frames=frames)
    return write_video(plan, folder) / "video_left.avi"


def batches(items, n):
    "Lists of `n` consecutive items (the last may be shorter)."
    b = []
    for it in items:
        b.append(it)
        if len(b) == n:
            yield b
            b = []
    if b:
        yield b


def stage_pass(p: Predictor, video: Path, n: int, out: Path) -> dict:
    "One sequential pass over the video with a timer around each stage (predict_video's functions); seconds per stage."
    t = dict.fromkeys(STAGES, 0.0)
    it = read_frames(video, list(range(n)))
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    with VideoWriter(out / "overlay.mp4", 60) as vw:
        while True:
            t0 = time.perf_counter()
            batch = [im for _, (_, im) in zip(range(p.batch_size), it)]
            t["decode"] += time.perf_counter() - t0
            if not batch:
                break
            t0 = time.perf_counter()
            x = torch.from_numpy(np.stack([p.resize(im) for im in batch])).permute(0, 3, 1, 2).float().div_(255)
            t["resize"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            with torch.inference_mode():
                logits = p.model(x).float()
            t["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            top1 = full_res_masks(logits, batch[0].shape[:2])
            t["upsample+argmax"] += time.perf_counter() - t0
            for im, m in zip(batch, top1):
                k += 1
                t0 = time.perf_counter()
                m = p.finish(m)
                t["post-processing"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                write_mask_png(out / f"m{k}.png", m)
                t["mask PNG"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                ov = blend(im, m, 0.5)
                t["overlay"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                vw.write(draw_legend(ov))
                t["overlay video"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                write_png(out / f"o{k}.png", ov)
                t["overlay PNG"] += time.perf_counter() - t0
        t0 = time.perf_counter()
    t["overlay video"] += time.perf_counter() - t0  # flushing the encoder
    return t


def bare_model(model, xs: list) -> float:
    "Seconds for the model alone on pre-built working-resolution batches (after one warm-up batch)."
    with torch.inference_mode():
        model(xs[0])
        t0 = time.perf_counter()
        for x in xs:
            model(x)
    return time.perf_counter() - t0


def end_to_end(p: Predictor, video: Path, out: Path, overlays: bool) -> float:
    "Seconds of one predict_video call writing the masks and the overlay video (and the overlay PNGs if `overlays`)."
    t0 = time.perf_counter()
    predict_video(p, video, out, overlays=overlays, overlay_video=True, progress=False)
    return time.perf_counter() - t0


def shares(stages: dict, names: tuple, n: int) -> str:
    "Each stage's ms per frame and share of the stages `names`."
    total = sum(stages[k] for k in names)
    return ", ".join(f"{k} {stages[k] / n * 1e3:.0f} ms ({stages[k] / total:.0%})" for k in names)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="frames of the rendered video (ignored with --video)")
    ap.add_argument("--video", help="a video to use instead of a rendered one (all its frames are processed)")
    ap.add_argument("--run", help="a trained run or checkpoint folder (default: the untrained default model)")
    ap.add_argument("--backend", choices=["torch", "onnxruntime", "both"], default="both")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime CPU threads")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", help="write the numbers to this JSON file too (replaced whole, atomically)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    video = Path(a.video) if a.video else make_video(tmp / "data", a.frames)
    pr = probe_video(video, demux=False)
    info = dict(frames=pr.n_frames, height=pr.height, width=pr.width, fps=pr.fps)
    n = info["frames"] or a.frames
    if a.run:
        model, cfg, _ = load_checkpoint(a.run)
    else:
        cfg = Config()
        torch.manual_seed(0)
        model = build_model(cfg).eval()
    p_torch = (
        load_predictor(a.run, device="cpu", batch_size=a.batch_size)
        if a.run
        else Predictor(model, cfg, device="cpu", batch_size=a.batch_size)
    )
    h, w = p_torch.working_size(info["height"], info["width"])
    print(
        f"video {video.name}: {info['width']}x{info['height']} at {info['fps']:.0f} fps, {n} frames; model {cfg.model} "
        f"({'run ' + a.run if a.run else 'untrained default'}) at {w}x{h} (resolution {cfg.scale}); "
        f"batch {a.batch_size}, {a.threads} threads, {cores} usable cores; load average before "
        f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )

    frames = [im for _, im in read_frames(video, list(range(n)))]
    xs = [
        torch.from_numpy(np.stack([p_torch.resize(im) for im in b])).permute(0, 3, 1, 2).float().div_(255)
        for b in batches(frames, a.batch_size)
    ]
    backends = {}
    if a.backend in ("torch", "both"):
        backends["PyTorch"] = p_torch
    if a.backend in ("onnxruntime", "both"):
        t0 = time.perf_counter()
        man = export_onnx((model, cfg), tmp / "export" / "model.onnx", frames=frames[:4], threads=a.threads)
        print(
            f"exported to ONNX in {time.perf_counter() - t0:.1f} s; parity on 4 frames: max |logit diff| "
            f"{man['parity']['max_abs']:.2e} (logits up to {man['parity']['logit_scale']:.1f}), "
            f"{man['parity']['argmax_diff']} argmax pixels differ"
        )
        om, ocfg = load_onnx(tmp / "export" / "model.onnx", threads=a.threads)
        backends["onnxruntime"] = Predictor(
            om, ocfg, device="cpu", batch_size=a.batch_size, postprocess=p_torch.postprocess
        )
    rows, masks = {}, {}
    record = dict(
        date=time.strftime("%Y-%m-%d %H:%M"),
        commit=_commit(),
        video=info | dict(name=video.name, processed=n),
        model=cfg.model,
        encoder=cfg.encoder,
        trained=bool(a.run),
        working_size=[w, h],
        batch_size=a.batch_size,
        threads=a.threads,
        usable_cores=cores,
        load_before=list(load0),
        backends={},
    )
    for name, p in backends.items():
        model_s = bare_model(p.model, xs)
        default_s = end_to_end(p, video, tmp / f"pred_{name}", overlays=False)
        all_s = end_to_end(p, video, tmp / f"pred_all_{name}", overlays=True)
        st = stage_pass(p, video, n, tmp / f"stages_{name}")
        masks[name] = tmp / f"pred_{name}" / "masks"
        rows[name] = (n / default_s, n / model_s)
        print(
            f"\n{name}: bare model {n / model_s:.2f} frames/s ({model_s / n * 1e3:.0f} ms/frame; same batches, no I/O)"
        )
        for label, secs, names in (
            ("default outputs (masks + overlay video)", default_s, DEFAULT),
            ("every output (masks + overlay PNGs + overlay video)", all_s, STAGES),
        ):
            seq = sum(st[k] for k in names)
            print(
                f"  {label}: end-to-end {n / secs:.2f} frames/s ({secs / n * 1e3:.0f} ms/frame), "
                f"ratio end-to-end / model {model_s / secs:.2f}; sequential pass {seq / n * 1e3:.0f} ms/frame, "
                f"model share {st['model'] / seq:.0%}"
            )
            print(f"    stages: {shares(st, names, n)}")
        record["backends"][name] = dict(
            model_fps=n / model_s,
            default_fps=n / default_s,
            every_fps=n / all_s,
            default_ratio=model_s / default_s,
            every_ratio=model_s / all_s,
            stage_ms={k: st[k] / n * 1e3 for k in STAGES},
            default_stages=list(DEFAULT),
        )
    if len(rows) == 2:
        pt, ox = rows["PyTorch"], rows["onnxruntime"]
        files = sorted(masks["PyTorch"].glob("*.png"))
        diff = sum(int((read_mask(f) != read_mask(masks["onnxruntime"] / f.name)).sum()) for f in files)
        record["mask_pixels_differing"] = [diff, len(files) * info["width"] * info["height"], len(files)]
        print(
            f"\nonnxruntime vs PyTorch: bare model x{ox[1] / pt[1]:.2f}, "
            f"end-to-end (default outputs) x{ox[0] / pt[0]:.2f}; "
            f"differing mask pixels {diff} of {len(files) * info['width'] * info['height']} ({len(files)} frames)"
        )
    load1 = os.getloadavg()
    if a.json:
        record["load_after"] = list(load1)
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        part.write_text(json.dumps(record, indent=1) + "\n")
        part.replace(out)  # whole or not at all
    print(
        f"load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({cores} usable cores of {os.cpu_count()}); "
        f"files in {tmp}"
    )


if __name__ == "__main__":
    main()
