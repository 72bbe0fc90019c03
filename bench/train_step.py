"""Cost of fit's training loop over a bare PyTorch loop, and the data loader's speed vs the model's appetite.

1. The median time of one training step of `fit`'s loop (`Trainer.train_step`: Accelerate's `accumulate`,
   `backward`, gradient clipping, optimiser and schedule step, per-step re-seeding, loss logging to the
   trackers, progress bookkeeping) against a bare PyTorch loop (zero_grad, forward, loss, backward,
   clip, AdamW step, schedule step; no logging), on the same model (same initial weights), the same
   batch, loss and optimiser. Steps of the two loops alternate, so a change in the machine's load hits
   both. Target: ratio <= 1.05.
2. The training data loader (as `fit` builds it: dataset, augmentation, sampler, `num_workers`) in
   images/s, against the images/s the model consumes in a training step.

Usage: OMP_NUM_THREADS=2 .venv/bin/python bench/train_step.py [--steps 20] [--batches 20] [key=value ...]
(key=value pairs override Config fields; the default is the default papermill run's Config.)
"""

import argparse, copy, os, statistics, sys, tempfile, time

import torch

from surgseg.core import load_config
from surgseg.models import param_counts
from surgseg.train import make_optimizer, setup_run


def bare_step(model, loss_fn, opt, sched, x, y, clip):
    "The textbook PyTorch training step."
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()
    return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each loop (after 3 warm-up steps)")
    ap.add_argument("--batches", type=int, default=20, help="batches timed from the data loader")
    ap.add_argument("overrides", nargs="*", help="Config overrides key=value")
    a = ap.parse_args()
    over = dict(kv.split("=", 1) for kv in a.overrides)
    out = tempfile.mkdtemp(prefix="bench_train_")
    cfg = load_config(None, {"out_dir": out, "run_name": "bench", **over})
    r = setup_run(cfg)
    tr, cfg = r.trainer, r.trainer.cfg
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {os.getloadavg()}")
    print(
        f"config: model {cfg.model} ({cfg.encoder if cfg.model != 'dinov3' else cfg.dinov3}), loss {cfg.loss}, "
        f"batch {cfg.batch_size}, resolution {cfg.scale}, precision {cfg.precision}, num_workers {cfg.num_workers}, "
        f"trackers {[t.name for t in tr.acc.trackers]}"
    )

    # the data loader alone: images/s over fresh batches (what fit's loop waits for each step)
    r.train_dl.set_epoch(0)
    r.sampler.set_epoch(0)
    it, n_img = iter(r.train_dl), 0
    batch = next(it)  # also the fixed batch of the timing below
    t0 = time.perf_counter()
    for _ in range(min(a.batches, r.steps - 1)):
        n_img += len(next(it)["image"])
    loader_ips = n_img / (time.perf_counter() - t0)
    del it

    # two models with the same initial weights: fit's Trainer and a bare loop
    bare = copy.deepcopy(tr.acc.unwrap_model(tr.model))
    opt, sched = make_optimizer(bare, cfg, r.steps * cfg.epochs)
    x, y = batch["image"], batch["mask"]
    print(
        f"batch {tuple(x.shape)}, parameters {param_counts(bare)[0] / 1e6:.1f} M "
        f"({param_counts(bare)[1] / 1e6:.1f} M trainable)"
    )
    tr.model.train()
    bare.train()
    t_fit, t_bare = [], []
    for i in range(3 + a.steps):
        t = time.perf_counter()
        tr.train_step(batch)
        t1 = time.perf_counter()
        bare_step(bare, tr.loss_fn, opt, sched, x, y, cfg.grad_clip)
        t2 = time.perf_counter()
        if i >= 3:
            t_fit.append(t1 - t)
            t_bare.append(t2 - t1)
    tr.acc.end_training()
    r.stack.close()  # releases the run folder's lock
    mf, mb = statistics.median(t_fit), statistics.median(t_bare)
    print(
        f"training step, median of {a.steps}: fit's loop {mf * 1000:.1f} ms, bare PyTorch {mb * 1000:.1f} ms, "
        f"ratio {mf / mb:.3f} (target <= 1.05)"
    )
    model_ips = cfg.batch_size / mf
    print(
        f"data loader {loader_ips:.1f} images/s vs model consumption {model_ips:.1f} images/s: "
        f"ratio {loader_ips / model_ips:.2f} (>= 1: the loader keeps up"
        + (
            ")"
            if cfg.num_workers
            else "; with num_workers=0 loading adds "
            f"{cfg.batch_size / loader_ips * 1000:.0f} ms to each {mf * 1000:.0f} ms step)"
        )
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
