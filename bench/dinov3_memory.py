"""CPU peak memory of one DINOv3 LoRA training step at 960x544, ViT-S, batch 1: gradient checkpointing x bf16 autocast.

    nice -n 10 python bench/dinov3_memory.py [--size vits16] [--hw 544 960] [--threads 2] [--csv FILE]
    python bench/dinov3_memory.py --smoke   # tiny model at 64x96: checks that the script runs, nothing more

Each configuration runs in a fresh Python process (so one cannot inherit another's allocator pools): it
builds the model exactly as `surgseg train --config configs/dinov3_lora.yaml` does (LoRA on q/v, the
multi-layer head), with the released ViT-S architecture and random weights (`dinov3=vits16`,
`weights=none`; the cost does not depend on the weights), resets the process's peak resident set size
(Linux `/proc/self/clear_refs`) and runs two training steps (forward under the autocast setting,
cross-entropy, backward, AdamW step over `param_groups`). It reports the RSS before them (Python, torch,
the weights and the inputs), the peak RSS during them, and their difference: the memory the training
step itself needs (activations kept for backward, gradients, optimizer state, temporaries), plus the
ratios to the plain fp32 step and the second step's time. Results go to stdout as a table and, with --csv,
to a CSV file.
"""

import argparse, csv, gc, json, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [(False, "no"), (True, "no"), (False, "bf16"), (True, "bf16")]  # (gradient checkpointing, autocast)


def _status_mb(field: str) -> float:
    "A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    "Reset the process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(size: str, hw: tuple, ckpt: bool, precision: str, threads: int) -> dict:
    "One configuration, in this process: peak RSS over its first two training steps."
    import torch
    import torch.nn.functional as F
    from surgseg.core import NUM_CLASSES, load_config
    from surgseg.models import build_model, param_counts, param_groups

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(
        ROOT / "configs/dinov3_lora.yaml",
        dict(dinov3=size, weights="none", grad_checkpointing=ckpt, precision=precision),
    )
    model = build_model(cfg, pretrained=False).train()
    opt = torch.optim.AdamW(param_groups(model, cfg))
    x, y = torch.rand(1, 3, *hw), torch.randint(0, NUM_CLASSES, (1, *hw))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    gc.collect()
    before = _status_mb("VmRSS")  # model, optimizer, inputs: everything before the first step
    exact = _reset_peak()
    step()  # the first step also allocates the optimizer state
    t1 = time.perf_counter()
    step()  # a second: the steady state, should it need more than the first
    dt = time.perf_counter() - t1
    peak = _status_mb("VmHWM")
    total, trainable = param_counts(model)
    return dict(
        size=size,
        height=hw[0],
        width=hw[1],
        checkpointing=ckpt,
        autocast=precision,
        params_M=round(total / 1e6, 2),
        trainable_M=round(trainable / 1e6, 3),
        rss_before_MB=round(before),
        peak_MB=round(peak),
        step_MB=round(peak - before),
        step_s=round(dt, 1),
        peak_reset=exact,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="vits16", help="DINOv3 size name (surgseg.models.DINOV3_SIZES)")
    p.add_argument(
        "--hw", type=int, nargs=2, default=(544, 960), metavar=("H", "W"), help="frame size (540 pads to 544)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--csv", default="", help="also write the rows to this CSV file")
    p.add_argument("--smoke", action="store_true", help="tiny model at 64x96: checks the script only")
    p.add_argument(
        "--one", default="", help=argparse.SUPPRESS
    )  # internal: run one configuration, print its row as JSON
    a = p.parse_args(argv)
    if a.smoke:
        a.size, a.hw = "tiny", (64, 96)
    if a.one:
        ckpt, precision = a.one.split(",")
        print(json.dumps(measure(a.size, tuple(a.hw), ckpt == "1", precision, a.threads)))
        return 0
    rows = []
    for ckpt, precision in CONFIGS:
        cmd = [
            sys.executable,
            __file__,
            "--size",
            a.size,
            "--hw",
            *map(str, a.hw),
            "--threads",
            str(a.threads),
            "--one",
            f"{int(ckpt)},{precision}",
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            sys.exit(f"configuration checkpointing={ckpt} autocast={precision} failed:\n{r.stderr[-2000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for r in rows:
        r["peak_ratio"] = round(r["peak_MB"] / base["peak_MB"], 2)
        r["step_ratio"] = round(r["step_MB"] / base["step_MB"], 2)
    cols = ["checkpointing", "autocast", "rss_before_MB", "peak_MB", "step_MB", "peak_ratio", "step_ratio", "step_s"]
    print(
        f"DINOv3 {a.size} LoRA (configs/dinov3_lora.yaml), batch 1, {a.hw[0]}x{a.hw[1]}, CPU, {a.threads} threads; "
        f"{base['params_M']} M parameters, {base['trainable_M']} M trainable"
    )
    print(" | ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" | ".join(f"{str(r[c]):>13}" for c in cols))
    if not all(r["peak_reset"] for r in rows):
        print("note: the peak RSS could not be reset: peaks are lifetime peaks")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
