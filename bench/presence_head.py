"""Does a frame-level presence head separate the rare classes better than the segmentation's own evidence?

python bench/presence_head.py [--seeds 42 1 2] [--weight 1.0] [--pooling max] [--out DIR] [--json FILE]

Rerun with the same --out, it keeps the runs that finished and continues an interrupted one.

Issue 18 lists a presence head (multi-label, trained jointly, gating classes at inference) among the ways to make
rare classes learnable. Before building one into models, train, inference and export, this measures whether it
could help: per training seed it trains the default recipe twice on the synthetic default,

- plain: exactly `surgseg train`'s default;
- head: the same model with smp's `ClassificationHead` (pooling over the encoder's deepest features, 10 outputs)
  trained jointly, loss = the default loss + weight x BCE(head, which classes the training crop contains),

then scores every validation and test frame and compares the frame-level presence AUROC of each class
(`metrics.presence_auroc`, the measure that tells "not learned" from "not chosen"): the plain model's maximum
probability (`inference.presence_evidence`, what `postprocess.Decisions` gates on), the head model's maximum
probability, and the head's sigmoid. A head is worth building only if its AUROC beats the plain evidence on the
rare classes. The head is attached by wrapping `train.build_model` and `train.build_loss` in this script, not in
the package: it is an experiment, kept out of the default until it wins.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.base import ClassificationHead

import surgseg.train as T
from surgseg.core import CLASS_NAMES, NUM_CLASSES, load_config, read_mask
from surgseg.data import find_videos, resolve_data_dir
from surgseg.inference import Predictor, presence_evidence, split_frames
from surgseg.metrics import presence_auroc
from surgseg.models import read_tensors
from surgseg.postprocess import validation_videos
from surgseg.runs import is_finished

BUILD_MODEL, BUILD_LOSS = T.build_model, T.build_loss


class HeadLoss(nn.Module):
    "The run's loss plus `weight` x BCE of the model's presence logits against the classes each crop contains."
    def __init__(self, base: nn.Module, model: nn.Module, weight: float):
        super().__init__()
        self.base, self.model, self.weight = base, [model], weight  # a list: not a submodule of the loss

    def forward(self, logits, target):
        present = torch.stack([(target == c).flatten(1).any(1) for c in range(NUM_CLASSES)], 1).float()
        return self.base(logits, target) + self.weight * F.binary_cross_entropy_with_logits(
            self.model[0].presence_logits, present)


def with_head(model, pooling: str):
    "Give an smp model a presence head on its deepest encoder features; each forward stores `presence_logits`."
    net = model.net
    model.presence = ClassificationHead(in_channels=net.encoder.out_channels[-1], classes=NUM_CLASSES,
                                        pooling=pooling)

    def segment(x):
        features = net.encoder(x.contiguous(memory_format=torch.channels_last))
        model.presence_logits = model.presence(features[-1])
        return net.segmentation_head(net.decoder(features))
    model.segment = segment
    return model


def train(name: str, seed: int, out: Path, weight: float, pooling: str):
    "Train the default recipe (with a presence head when weight > 0); the model at its best checkpoint, and its Config."
    built = {}

    def build_model(cfg, *a, **k):
        built["model"] = m = BUILD_MODEL(cfg, *a, **k)
        return with_head(m, pooling) if weight > 0 else m
    T.build_model = build_model
    T.build_loss = lambda *a, **k: (HeadLoss(BUILD_LOSS(*a, **k), built["model"], weight) if weight > 0
                                    else BUILD_LOSS(*a, **k))
    cfg = load_config(None, dict(out_dir=str(out), run_name=name, log_with="none", decisions=False, seed=seed))
    run = out / name
    try:
        if is_finished(run):  # a rerun after an interruption (a full disk, a kill) keeps the runs that finished
            build_model(cfg)
            print(f"{name}: finished already", flush=True)
        else:  # new, or continued from its last checkpoint if a full disk stopped it (`train.fit`)
            t0 = time.perf_counter()
            run = T.fit(cfg)
            print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        T.build_model, T.build_loss = BUILD_MODEL, BUILD_LOSS
    m = built["model"]
    m.load_state_dict(read_tensors(run / "best"), strict=True)
    return m.eval(), cfg


def evidence(model, cfg) -> pd.DataFrame:
    "Per validation and test frame: each class's maximum probability, the head's sigmoid (if any), ground-truth pixels."
    p, rows = Predictor(model, cfg, device="cpu", tta=False, batch_size=1), []
    for split, videos in (("val", validation_videos(cfg)), ("test", find_videos(resolve_data_dir("") / "test"))):
        for (v, f, mask_path), im in split_frames(videos):
            with torch.inference_mode():
                logits = p.scores([im])  # one forward: it also sets the head's `presence_logits` for this frame
            head = torch.sigmoid(model.presence_logits)[0].numpy() if hasattr(model, "presence") else None
            pmax, gt = presence_evidence(logits)[0], read_mask(mask_path, im.shape[:2])
            rows.append(dict(split=split, video=v.name, frame=f)
                        | {f"pmax_{c}": pmax[c] for c in range(NUM_CLASSES)}
                        | ({f"head_{c}": head[c] for c in range(NUM_CLASSES)} if head is not None else {})
                        | {f"gt_{c}": int((gt == c).sum()) for c in range(NUM_CLASSES)})
    return pd.DataFrame(rows)


def aurocs(plain: pd.DataFrame, head: pd.DataFrame, seed: int) -> pd.DataFrame:
    "Presence AUROC per split and class: plain model's pmax, head model's pmax, the head."
    key = ["split", "video", "frame"]
    assert plain[key].equals(head[key]), "both runs of a seed score the same frames (same split)"
    out = []
    for split in ("val", "test"):
        a, b = plain[plain.split == split], head[head.split == split]
        for c in range(1, NUM_CLASSES):
            y = a[f"gt_{c}"].to_numpy() > 0
            out.append(dict(seed=seed, split=split, cls=CLASS_NAMES[c], frames=int(y.sum()),
                            plain_pmax=presence_auroc(a[f"pmax_{c}"], y),
                            head_model_pmax=presence_auroc(b[f"pmax_{c}"], y), head=presence_auroc(b[f"head_{c}"], y)))
    return pd.DataFrame(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    ap.add_argument("--weight", type=float, default=1.0, help="weight of the head's BCE in the loss")
    ap.add_argument("--pooling", default="max", choices=["max", "avg"], help="the head's pooling of the features")
    ap.add_argument("--out", default="", help="folder for the runs (default: a temporary one)")
    ap.add_argument("--json", default="", help="also write the table and the summary to this JSON file")
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="presence-head-"))
    tables = []
    for seed in a.seeds:
        plain_model, cfg = train(f"plain-s{seed}", seed, out, 0.0, a.pooling)
        plain = evidence(plain_model, cfg)
        head_model, cfg = train(f"head-{a.pooling}-w{a.weight:g}-s{seed}", seed, out, a.weight, a.pooling)
        tables.append(aurocs(plain, evidence(head_model, cfg), seed))
    t = pd.concat(tables, ignore_index=True)
    pd.set_option("display.width", 160)
    print(t.round(3).to_string(index=False))
    ok = t.dropna(subset=["plain_pmax", "head"])
    summary = {split: dict(pairs=int(len(g)), head_above_plain=int((g["head"] > g["plain_pmax"]).sum()),
                           head_model_pmax_above_plain=int((g["head_model_pmax"] > g["plain_pmax"]).sum()),
                           mean_head_minus_plain=float((g["head"] - g["plain_pmax"]).mean()),
                           mean_head_model_pmax_minus_plain=float((g["head_model_pmax"] - g["plain_pmax"]).mean()))
               for split, g in ok.groupby("split")}
    for split, s in summary.items():
        print(f"{split}: the head's AUROC is above the plain model's evidence in {s['head_above_plain']} of "
              f"{s['pairs']} (seed, class) pairs, mean difference {s['mean_head_minus_plain']:+.3f}; the head "
              f"model's own pmax in {s['head_model_pmax_above_plain']} of {s['pairs']}, mean "
              f"{s['mean_head_model_pmax_minus_plain']:+.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(args=vars(a), argv=sys.argv[1:], summary=summary,
                                                table=t.replace({np.nan: None}).to_dict("records")), indent=1))


if __name__ == "__main__":
    main()
