"""GPU memory and speed of DINOv3 ViT-S/B/L segmenters at 960x540 (random weights, released sizes).

    python bench/dinov3_gpu.py [--sizes vits16 vitb16 vitl16] [--modes frozen lora full] [--head multilayer]
                               [--batch 4] [--steps 10] [--checkpointing on|off|both] [--precision bf16|no]
                               [--json FILE]
    python bench/dinov3_gpu.py --smoke   # tiny model on the CPU: checks that the script runs, nothing more

For each size and fine-tuning mode it builds the surgseg model exactly as training does
(`build_model` with `dinov3=<size>`, `weights=none`: the released architecture with random weights;
the cost does not depend on the weights), then runs training steps on random 960x540 frames: forward
under bf16 autocast, cross-entropy, backward, AdamW step over `param_groups`. After two warm-up steps
it reports peak GPU memory (`torch.cuda.max_memory_allocated`, which includes weights, gradients and
optimizer state) and images per second over --steps steps. A configuration that runs out of memory is
reported as OOM. The DINOv3 seed needed about 30 GB for ViT-L at this resolution; the goal is at most
16 GB at the same batch.

Without CUDA it says so and exits 0 (nothing is measured on the CPU except with --smoke).
"""

import argparse, json, sys, time

import torch
import torch.nn.functional as F

from surgseg.core import Config, NUM_CLASSES
from surgseg.models import build_model, param_counts, param_groups


def run_one(size, mode, head, batch, steps, ckpt, precision, hw, device):
    "Train `steps` steps of one configuration; return a result row (peak memory, images/s) or an OOM row."
    cfg = Config(model="dinov3", dinov3=size, weights="none", finetune=mode, head=head, grad_checkpointing=ckpt)
    row = dict(
        size=size, mode=mode, head=head, batch=batch, checkpointing=ckpt, precision=precision, height=hw[0], width=hw[1]
    )
    model = opt = None
    try:
        torch.manual_seed(0)
        model = build_model(cfg, pretrained=False).to(device).train()
        row["params_M"], row["trainable_M"] = (round(n / 1e6, 2) for n in param_counts(model))
        opt = torch.optim.AdamW(param_groups(model, cfg))
        x = torch.rand(batch, 3, *hw, device=device)
        y = torch.randint(0, NUM_CLASSES, (batch, *hw), device=device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            F.cross_entropy(logits.float(), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row["peak_GB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
        row["images_s"] = round(batch * steps / dt, 2)
        row["step_s"] = round(dt / steps, 3)
    except torch.cuda.OutOfMemoryError:
        row["peak_GB"], row["images_s"], row["step_s"] = "OOM", None, None
    finally:
        model = opt = None  # free them before the next configuration
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes", nargs="+", default=["vits16", "vitb16", "vitl16"], help="DINOv3 sizes (surgseg.models.DINOV3_SIZES)"
    )
    p.add_argument("--modes", nargs="+", default=["frozen", "lora", "full"], help="fine-tuning modes")
    p.add_argument("--head", default="multilayer", help="segmentation head: mlp or multilayer")
    p.add_argument("--batch", type=int, nargs="+", default=[4], help="images per step (several values: one run each)")
    p.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up steps")
    p.add_argument("--size-hw", type=int, nargs=2, default=(540, 960), metavar=("H", "W"), help="frame size")
    p.add_argument("--checkpointing", choices=["on", "off", "both"], default="on", help="gradient checkpointing")
    p.add_argument("--precision", choices=["bf16", "no"], default="bf16", help="autocast precision")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    p.add_argument(
        "--smoke", action="store_true", help="tiny model, 64x96, one step, on the CPU: checks the script only"
    )
    a = p.parse_args(argv)

    if a.smoke:
        device, a.sizes, a.batch, a.steps, a.size_hw, a.precision = (
            torch.device("cpu"),
            ["tiny"],
            [1],
            1,
            (64, 96),
            "no",
        )
    elif not torch.cuda.is_available():
        print(
            "CUDA is not available on this machine: this benchmark measures GPU memory and speed, so nothing was "
            "measured. Run it on a machine with a CUDA GPU (or use --smoke to check that the script runs)."
        )
        return 0
    else:
        device = torch.device("cuda")

    ckpts = {"on": [True], "off": [False], "both": [False, True]}[a.checkpointing]
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke test)"
    print(
        f"DINOv3 segmenter training steps at {a.size_hw[1]}x{a.size_hw[0]}, head {a.head}, "
        f"precision {a.precision}, on {where}"
    )
    print(
        f"{'size':7s} {'mode':7s} {'ckpt':5s} {'batch':>5s} {'params M':>9s} {'train M':>8s} "
        f"{'peak GB':>8s} {'img/s':>7s} {'s/step':>7s}"
    )
    rows = []
    for size in a.sizes:
        for mode in a.modes:
            for ckpt in ckpts:
                for b in a.batch:
                    r = run_one(size, mode, a.head, b, a.steps, ckpt, a.precision, tuple(a.size_hw), device)
                    rows.append(r)
                    print(
                        f"{size:7s} {mode:7s} {str(ckpt):5s} {b:5d} {r.get('params_M', '-')!s:>9s} "
                        f"{r.get('trainable_M', '-')!s:>8s} "
                        f"{r['peak_GB']!s:>8s} {r['images_s']!s:>7s} {r['step_s']!s:>7s}",
                        flush=True,
                    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=where, torch=torch.__version__, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
