"""Recipes compared on the second world (bench/second_world.py), paired over training seeds x its test videos.

python bench/second_world_compare.py [--root DIR] [--tag decisions]

Reads the evaluations that `bench/second_world.py --train-args ARGS --tag TAG` wrote (one per recipe and training
seed, run names from the arguments) and prints each run's official score and per-class pooled IoU, then the paired
differences of the recipes to the previous default (`metrics.paired_differences`, intervals about new videos).
Runs it compares (train arguments per recipe; seed 42 is Config's, the others add --seed 1 / --seed 2):
  new default (1024 crops, rarity): ""; previous default: "--samples_per_epoch 512 --crop_weights equal";
  1024 crops, equal: "--crop_weights equal".
"""

import argparse
from pathlib import Path

import pandas as pd

from second_world import run_name_for  # bench/ is on the path when this script runs
from surgseg.metrics import paired_differences

RECIPES = {
    "new: 1024 rarity": "",
    "previous: 512 equal": "--samples_per_epoch 512 --crop_weights equal",
    "1024 equal": "--crop_weights equal",
}
SEEDS = {42: "", 1: "--seed 1", 2: "--seed 2"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path.home() / ".cache/surgseg/second-world-v1"))
    ap.add_argument("--tag", default="decisions", help="the predict variant (second_world.py --tag)")
    a = ap.parse_args()
    root = Path(a.root).expanduser()
    rows, classes = [], []
    for cfg, args in RECIPES.items():
        for seed, seed_args in SEEDS.items():
            ev = root / "eval" / f"{run_name_for(0, ' '.join(x for x in (args, seed_args) if x))}__{a.tag}"
            if not ev.is_dir():
                raise SystemExit(f"{ev}: missing; run bench/second_world.py --train-args ... --tag {a.tag} first")
            pv = pd.read_csv(ev / "per_video_results.csv")
            pv = pv.rename(columns={"video_id": "video", "seg_mIoU": "miou", "seg_mNSD": "mnsd"})
            rows.append(pv.assign(config=cfg, seed=seed))
            score = pd.read_csv(ev / "final_results.csv").set_index("metric")["value"]["segmentation_score"]
            pc = pd.read_csv(ev / "per_class_results.csv")
            iou = dict(zip(pc.iloc[:, 0].astype(str), pc["pooled_iou_not_official"]))
            classes.append(pd.Series(iou | {"score": score}, name=f"{cfg} s{seed}"))
    print("official score and pooled IoU per class (columns: class ids 1-9), per run:")
    print(pd.DataFrame(classes).round(3).to_string())
    cols = ["config", "diff", "low", "high", "n_seeds", "n_videos"]
    print("\npaired differences in the official score to the previous default (95% intervals):")
    print(paired_differences(pd.concat(rows), "score", "previous: 512 equal")[cols].round(3).to_string())


if __name__ == "__main__":
    main()
