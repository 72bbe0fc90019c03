"""A 1080p, 60 fps video through `Predictor` at the default working resolution: how close end-to-end runs to the model.

Prints, asserting nothing (the cores are shared: read the load average printed with the numbers):
  - end-to-end frames/s of `inference.predict_video` (decode, resize, model, upsample + argmax, post-processing,
    mask PNGs, overlays, overlay video: the streaming API as it is), for each backend;
  - the bare model's frames/s on the same batches (tensors already at the working resolution, no I/O), and the ratio;
  - the time share of each stage, from a sequential pass with time.perf_counter around each stage
    (decode, resize, model, upsample+argmax, post-processing, overlay, write);
  - PyTorch vs onnxruntime (the model exported by `export.export_onnx`): frames/s on the same frames and the number
    of mask pixels that differ between the two backends' masks.

Run:  .venv/bin/python bench/video.py [--frames 60] [--backend both] [--threads 2] [--run RUN] [--video FILE]
Without --run, the untrained default model (`build_model(Config())`: U-Net, ImageNet EfficientNet-Lite0 encoder).
Without --video, a synthetic 1920x1080 60 fps MJPG video of --frames frames is rendered (surgseg.synthetic).

Measured 2026-12-02 before the streaming predict_video (commit 3ab1104; rerun to get after), `--frames 24 --threads 2`, untrained default model at 960x540, 2 shared cores, load average ~7:
  PyTorch:     end-to-end 0.29 frames/s, bare model 0.44 frames/s, ratio 0.64; model 60%, upsample+argmax 7%, overlay 9%, write 23%
  onnxruntime: end-to-end 0.34 frames/s, bare model 1.05 frames/s, ratio 0.32; model 38%, upsample+argmax 12%, overlay 18%, write 31%
  onnxruntime / PyTorch: bare model x2.36, end-to-end x1.18; 145 of 49,766,400 mask pixels differ (24 frames)
After the streaming predict_video (commit c276203), same command, load average ~4-6 (one other job running):
  PyTorch:     end-to-end 0.59 frames/s, bare model 0.84 frames/s, ratio 0.70 (sequential pass: model 59%, upsample+argmax 6%,
               overlay 12%, write 23%)
  onnxruntime: end-to-end 0.48 frames/s, bare model 1.59 frames/s, ratio 0.30
  onnxruntime / PyTorch: bare model x1.90, end-to-end x0.81; 145 of 49,766,400 mask pixels differ (24 frames)
  At 1080p the overlay and PNG/video writing (about a third of the sequential time) compete with the model for the same
  2 cores, so overlapping the stages cannot reach the 0.9x target here.
"""
import argparse, dataclasses, os, tempfile, time
from pathlib import Path

import numpy as np
import torch

from surgseg.core import Config, overlay, read_mask, write_mask
from surgseg.data import read_frames
from surgseg.export import export_onnx, load_onnx
from surgseg.inference import Predictor, VideoWriter, predict_video, video_info
from surgseg.models import build_model, full_res_masks
from surgseg.postprocess import load_predictor
from surgseg.runs import load_checkpoint


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
        if len(b) == n: yield b; b = []
    if b: yield b


def stage_pass(p: Predictor, video: Path, n: int, out: Path) -> dict:
    "One sequential pass over the video with a timer around each stage; seconds per stage."
    t = dict.fromkeys(["decode", "resize", "model", "upsample+argmax", "post-processing", "overlay", "write"], 0.0)
    it = read_frames(video, list(range(n)))
    out.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out / "overlay.mp4", 60) as vw:
        while True:
            t0 = time.perf_counter()
            batch = [im for _, (_, im) in zip(range(p.batch_size), it)]
            t["decode"] += time.perf_counter() - t0
            if not batch: break
            t0 = time.perf_counter()
            x = torch.from_numpy(np.stack([p.resize(im) for im in batch])).permute(0, 3, 1, 2).float().div_(255)
            t["resize"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            with torch.inference_mode(): logits = p.model(x).float()
            t["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            top1 = full_res_masks(logits, batch[0].shape[:2])
            t["upsample+argmax"] += time.perf_counter() - t0
            for i, (im, m) in enumerate(zip(batch, top1)):
                t0 = time.perf_counter(); m = p.finish(m); t["post-processing"] += time.perf_counter() - t0
                t0 = time.perf_counter(); ov = overlay(im, m); t["overlay"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                write_mask(out / f"m{i}.png", m)
                from PIL import Image
                Image.fromarray(ov).save(out / f"o{i}.png")
                vw.write(ov)
                t["write"] += time.perf_counter() - t0
    return t


def bare_model(model, xs: list) -> float:
    "Seconds for the model alone on pre-built working-resolution batches (after one warm-up batch)."
    with torch.inference_mode():
        model(xs[0])
        t0 = time.perf_counter()
        for x in xs: model(x)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="frames of the rendered video (ignored with --video)")
    ap.add_argument("--video", help="a video to use instead of a rendered one (all its frames are processed)")
    ap.add_argument("--run", help="a trained run or checkpoint folder (default: the untrained default model)")
    ap.add_argument("--backend", choices=["torch", "onnxruntime", "both"], default="both")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime CPU threads")
    ap.add_argument("--batch-size", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    video = Path(a.video) if a.video else make_video(tmp / "data", a.frames)
    info = video_info(video)
    n = info["frames"] or a.frames
    if a.run: model, cfg, _ = load_checkpoint(a.run)
    else: cfg = Config(); torch.manual_seed(0); model = build_model(cfg).eval()
    p_torch = load_predictor(a.run, device="cpu", batch_size=a.batch_size) if a.run else \
        Predictor(model, cfg, device="cpu", batch_size=a.batch_size)
    h, w = p_torch.working_size(info["height"], info["width"])
    print(f"video {video.name}: {info['width']}x{info['height']} at {info['fps']:.0f} fps, {n} frames; model {cfg.model} "
          f"({'run ' + a.run if a.run else 'untrained default'}) at {w}x{h} (resolution {cfg.scale}); "
          f"batch {a.batch_size}, {a.threads} threads; load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    frames = [im for _, im in read_frames(video, list(range(n)))]
    xs = [torch.from_numpy(np.stack([p_torch.resize(im) for im in b])).permute(0, 3, 1, 2).float().div_(255)
          for b in batches(frames, a.batch_size)]
    backends = {}
    if a.backend in ("torch", "both"): backends["PyTorch"] = p_torch
    if a.backend in ("onnxruntime", "both"):
        t0 = time.perf_counter()
        man = export_onnx((model, cfg), tmp / "export" / "model.onnx", frames=frames[:4], threads=a.threads)
        print(f"exported to ONNX in {time.perf_counter() - t0:.1f} s; parity on 4 frames: max |logit diff| "
              f"{man['parity']['max_abs']:.2e} (logits up to {man['parity']['logit_scale']:.1f}), "
              f"{man['parity']['argmax_diff']} argmax pixels differ")
        om, ocfg = load_onnx(tmp / "export" / "model.onnx", threads=a.threads)
        backends["onnxruntime"] = Predictor(om, ocfg, device="cpu", batch_size=a.batch_size, postprocess=p_torch.postprocess)
    rows, masks = {}, {}
    for name, p in backends.items():
        model_s = bare_model(p.model, xs)
        t0 = time.perf_counter()
        predict_video(p, video, tmp / f"pred_{name}", progress=False)
        e2e_s = time.perf_counter() - t0
        stages = stage_pass(p, video, n, tmp / f"stages_{name}")
        masks[name] = tmp / f"pred_{name}" / "masks"
        rows[name] = (n / e2e_s, n / model_s, stages)
        total = sum(stages.values())
        print(f"\n{name}: end-to-end {n / e2e_s:.2f} frames/s (predict_video), bare model {n / model_s:.2f} frames/s "
              f"(same batches, no I/O): ratio end-to-end / model {model_s / e2e_s:.2f}")
        print(f"  sequential pass with a timer per stage: {n / total:.2f} frames/s; share of time: " +
              ", ".join(f"{k} {v / total:.0%} ({v / n * 1e3:.0f} ms/frame)" for k, v in stages.items()))
    if len(rows) == 2:
        pt, ox = rows["PyTorch"], rows["onnxruntime"]
        files = sorted(masks["PyTorch"].glob("*.png"))
        diff = sum(int((read_mask(f) != read_mask(masks["onnxruntime"] / f.name)).sum()) for f in files)
        print(f"\nonnxruntime vs PyTorch: bare model x{ox[1] / pt[1]:.2f}, end-to-end x{ox[0] / pt[0]:.2f}; "
              f"differing mask pixels {diff} of {len(files) * info['width'] * info['height']} ({len(files)} frames)")
    load1 = os.getloadavg()
    print(f"load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (on {os.cpu_count()} cores); files in {tmp}")


if __name__ == "__main__":
    main()
