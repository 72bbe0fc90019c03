"""CPU cost per model family: one forward pass and one training pass (forward, cross-entropy, backward).

    OMP_NUM_THREADS=1 python bench/models.py [--size 270 480] [--batch 2] [--steps 3] [--threads 1]
                                             [--only TEXT] [--large]

The families are `surgseg.models.FAMILIES` (smp architectures on the default Lite0 encoder, DINOv3
ViT-S/B with both heads and all fine-tuning modes; ViT-L only with --large). Weights are random (the
cost does not depend on them), frames are random. The clock is the process's CPU time
(time.process_time): with one thread it equals wall time on an idle machine and is not inflated by
other programs on shared cores. The median of --steps timed repetitions after one warm-up is reported,
with each family's ratio to the default model (U-Net / Lite0).
"""

import argparse, os, sys

import torch

from surgseg.core import Config
from surgseg.models import FAMILIES, build_model, param_counts, time_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(270, 480), metavar=("H", "W"), help="frame size")
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--steps", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--only", default="", help="measure only families whose label contains this text")
    p.add_argument("--large", action="store_true", help="include DINOv3 ViT-L (slow on a CPU)")
    a = p.parse_args(argv)
    print(
        f"CPU seconds (process time) per batch of {a.batch} random frames of {a.size[0]}x{a.size[1]}, "
        f"{a.threads} thread(s), median of {a.steps}; torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"{'model':34s} {'total M':>8s} {'train M':>8s} {'forward s':>10s} {'train s':>8s} {'train x default':>16s}")
    base = None
    for label, overrides in FAMILIES.items():
        if a.only.lower() not in label.lower() or ("ViT-L" in label and not a.large):
            continue
        torch.manual_seed(0)
        model = build_model(Config(weights="none").update(overrides), pretrained=False)
        total, trainable = param_counts(model)
        r = time_model(model, tuple(a.size), batch=a.batch, steps=a.steps, threads=a.threads)
        if base is None and label == next(iter(FAMILIES)):
            base = r["train_s"]
        ratio = f"{r['train_s'] / base:.2f}" if base else "-"
        print(
            f"{label:34s} {total / 1e6:8.2f} {trainable / 1e6:8.3f} {r['forward_s']:10.3f} {r['train_s']:8.3f} "
            f"{ratio:>16s}",
            flush=True,
        )
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
