"""A second official-layout world nobody tuned surgseg to, and the default commands run on it (issue 18, target 2).

python bench/second_world.py [--root DIR] [--seed N] [--train-args "--seed 1"] [--predict-args "--min_area tune"]
                             [--tag NAME] [--workers 2]

Independent drawing (numpy + cv2 only, nothing from surgseg.synthetic): 640x360 frames, XVID (MPEG-4 part 2)
AVI at 60 fps, masks at frames 0, 60, 120, ... Mottled tissue under an endoscope's vignette with drifting light,
instruments with per-video colours entering from the border (shaft/wrist/clasper articulated), a needle arc,
a thread curve, and seldom-present classes (suction, needle holder, catheter) in a few videos only.
Steps: generate (skipped when complete) -> surgseg validate -> surgseg train (default recipe) -> predict -> evaluate;
prints the official score, mIoU, mNSD, each present class's pooled IoU, miss and false-alarm rates, and step
times; writes the same to ROOT/summary.json (the latest run) and ROOT/summary_<tag>.json (kept per variant).
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

H, W, FPS, STEP = 360, 640, 60, 60
N_TRAIN, N_TEST, SECONDS = 12, 5, 20
MARKER = "SECOND_WORLD.json"
# per class: which videos show it (by index in the video list: train 0..11, test 12..16)
SELDOM = {6: {2, 7, 13}, 7: {4, 9, 15}, 9: {1, 5, 10, 12, 16}}  # suction, needle holder, catheter
CLAMP_VIDEOS = {0, 3, 6, 8, 11, 12, 14, 15}


def tissue(rng):
    "A mottled tissue texture (float32 HxWx3 in 0..1, BGR), larger than the frame so that it can drift."
    h, w = H + 80, W + 80
    acc = np.zeros((h, w), np.float32)
    for s, a in [(6, 1.0), (20, 0.5), (60, 0.25), (160, 0.12)]:
        acc += a * cv2.resize(
            rng.random((s * h // w + 2, s + 2), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC
        )
    acc = (acc - acc.min()) / (np.ptp(acc) + 1e-6)
    base = np.array(rng.choice([[0.35, 0.42, 0.78], [0.30, 0.55, 0.85], [0.45, 0.40, 0.70], [0.25, 0.35, 0.62]]))
    base = base + rng.normal(0, 0.04, 3)
    vessels = cv2.GaussianBlur((rng.random((h, w)) > 0.9985).astype(np.float32), (0, 0), 1.5)
    vessels = cv2.dilate(vessels, np.ones((3, 9), np.uint8)) * 0.6
    tex = base[None, None, :] * (0.55 + 0.6 * acc[..., None])
    tex[..., 2] += 0.15 * acc
    tex *= 1 - 0.5 * vessels[..., None]
    return np.clip(tex, 0, 1).astype(np.float32)


def vignette(rng):
    "The endoscope's light: bright centre, dark corners (HxW float32)."
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = W * rng.uniform(0.4, 0.6), H * rng.uniform(0.4, 0.6)
    r = np.sqrt(((x - cx) / W) ** 2 + ((y - cy) / H) ** 2)
    return np.clip(1.25 - 1.3 * r**1.5, 0.25, 1.2).astype(np.float32)


def wave(rng, n):
    "A smooth random path in 0..1 of length n (sum of slow sines)."
    t = np.arange(n) / FPS
    out = 0.5 + sum(
        rng.uniform(0.08, 0.18) * np.sin(2 * np.pi * rng.uniform(0.02, 0.15) * t + rng.uniform(0, 6.3))
        for _ in range(3)
    )
    return np.clip(out, 0.05, 0.95)


def border_point(rng):
    "A point on the frame border (x, y)."
    side = rng.integers(4)
    u = rng.uniform(0.15, 0.85)
    return [(u * W, -10), (u * W, H + 10), (-10, u * H), (W + 10, u * H)][side]


def presence(rng, n, share):
    "A per-frame presence track: on for a few long stretches covering about `share` of the frames."
    on = np.zeros(n, bool)
    if share >= 1:
        return ~on
    while on.mean() < share:
        a = rng.integers(0, n)
        on[a : a + rng.integers(FPS * 2, FPS * 8)] = True
    return on


def plan(i, seed):
    "Everything random about video i (deterministic in seed and i)."
    rng = np.random.default_rng([seed, i])
    n = SECONDS * FPS + rng.integers(-60, 60)
    tools = []
    for k in range(2 if rng.random() < 0.7 else 1):
        tools.append(
            dict(
                base=np.array(border_point(rng)),
                tx=wave(rng, n),
                ty=wave(rng, n),
                ang=wave(rng, n),
                open=wave(rng, n),
                width=rng.uniform(22, 34),
                on=presence(rng, n, 1.0 if k == 0 else rng.uniform(0.5, 0.95)),
                colour=rng.choice([[0.12, 0.12, 0.13], [0.75, 0.74, 0.72], [0.2, 0.22, 0.3]]) + rng.normal(0, 0.03, 3),
            )
        )
    p = dict(
        n=n,
        tools=tools,
        tex=int(rng.integers(1 << 30)),
        needle=presence(rng, n, rng.uniform(0.5, 0.9)),
        thread=presence(rng, n, rng.uniform(0.6, 1.0)),
        thread_pts=rng.uniform([0.1, 0.2], [0.9, 0.9], (4, 2)) * [W, H],
        thread_w=wave(rng, n),
        needle_r=rng.uniform(14, 22),
    )
    p["clamps"] = (
        [
            dict(xy=rng.uniform([0.15, 0.15], [0.85, 0.85]) * [W, H], ang=rng.uniform(0, 180))
            for _ in range(rng.integers(1, 4))
        ]
        if i in CLAMP_VIDEOS
        else []
    )
    p["clamp_on"] = presence(rng, n, rng.uniform(0.4, 1.0))
    for c, vids in SELDOM.items():
        p[c] = presence(rng, n, rng.uniform(0.3, 0.7)) if i in vids else np.zeros(n, bool)
    p["suction"] = dict(base=np.array(border_point(rng)), tx=wave(rng, n), ty=wave(rng, n))
    p["holder"] = dict(base=np.array(border_point(rng)), tx=wave(rng, n), ty=wave(rng, n), ang=wave(rng, n))
    p["cath"] = np.array([border_point(rng), *(rng.uniform([0.2, 0.2], [0.8, 0.8], (2, 2)) * [W, H])])
    return p


def quad(a, b, wa, wb):
    "A quadrilateral from a to b, width wa at a and wb at b (int32 points)."
    d = (b - a) / (np.linalg.norm(b - a) + 1e-6)
    nrm = np.array([-d[1], d[0]])
    return np.array([a + nrm * wa / 2, b + nrm * wb / 2, b - nrm * wb / 2, a - nrm * wa / 2]).round().astype(np.int32)


def curve(pts, k=40):
    "A Catmull-Rom-like smooth polyline through pts (int32)."
    pts = np.asarray(pts, np.float64)
    t = np.linspace(0, 1, k)[:, None]
    out = []
    for j in range(len(pts) - 1):
        p0, p1, p2, p3 = pts[max(j - 1, 0)], pts[j], pts[j + 1], pts[min(j + 2, len(pts) - 1)]
        out.append(
            0.5
            * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    return np.concatenate(out).round().astype(np.int32)


def draw_tool(m, t, f, cls=(3, 2, 1)):
    "An articulated instrument: shaft from the border to the wrist, wrist, two clasper jaws; returns the jaw tip."
    tip = np.array([0.1 + 0.8 * t["tx"][f], 0.1 + 0.8 * t["ty"][f]]) * [W, H]
    a = t["base"]
    d = (tip - a) / (np.linalg.norm(tip - a) + 1e-6)
    ang = (t["ang"][f] - 0.5) * 1.2
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    wd = t["width"]
    wrist_a = tip - d * wd * 1.6
    cv2.fillPoly(m, [quad(a, wrist_a, wd * 1.1, wd)], cls[0])
    e = rot @ d
    wrist_b = wrist_a + e * wd * 1.2
    cv2.fillPoly(m, [quad(wrist_a, wrist_b, wd * 0.95, wd * 0.8)], cls[1])
    cv2.circle(m, tuple(wrist_a.round().astype(int)), int(wd * 0.45), cls[1], -1)
    op = 0.1 + 0.5 * t["open"][f]
    jaw_tip = wrist_b
    for s in (-1, 1):
        r = np.array([[np.cos(s * op), -np.sin(s * op)], [np.sin(s * op), np.cos(s * op)]]) @ e
        jaw_tip = wrist_b + r * wd * 1.5
        cv2.fillPoly(m, [quad(wrist_b, jaw_tip, wd * 0.45, wd * 0.15)], cls[2])
    return wrist_b + e * wd * 1.2


def render_mask(p, f):
    "The label mask (uint8 HxW, 0..9) of frame f, in drawing order (later classes occlude earlier ones)."
    m = np.zeros((H, W), np.uint8)
    if p[9][f]:
        c = p["cath"] + 15 * np.sin(f / 90 + np.arange(3))[:, None]
        cv2.polylines(m, [curve(c)], False, 9, 6)
    if p["clamp_on"][f]:
        for cl in p["clamps"]:
            box = cv2.boxPoints(((*cl["xy"],), (16, 8), cl["ang"] + 5 * np.sin(f / 70))).round().astype(np.int32)
            cv2.fillPoly(m, [box], 8)
    if p["thread"][f]:
        pts = p["thread_pts"] + 25 * (p["thread_w"][f] - 0.5) * np.array([[1, -1], [-1, 1], [1, 1], [-1, -1]])
        cv2.polylines(m, [curve(pts)], False, 5, 3)
    if p[6][f]:
        s = p["suction"]
        tip = np.array([0.15 + 0.7 * s["tx"][f], 0.15 + 0.7 * s["ty"][f]]) * [W, H]
        cv2.fillPoly(m, [quad(s["base"], tip, 18, 14)], 6)
        cv2.circle(m, tuple(tip.round().astype(int)), 8, 6, -1)
    tips = [draw_tool(m, t, f) for t in p["tools"] if t["on"][f]]
    if p[7][f]:
        h = dict(p["holder"], width=12.0, open=np.full(p["n"], 0.05))
        tips.append(draw_tool(m, h, f, cls=(7, 7, 7)))
    if p["needle"][f]:
        c = tips[0] if tips else np.array([W / 2, H / 2])
        r = p["needle_r"]
        cv2.ellipse(m, tuple((c + [r * 0.6, 0]).round().astype(int)), (int(r), int(r)), (f * 0.5) % 360, 20, 200, 4, 3)
    return m


def colours(rng, p):
    "BGR colour (0..1) of each class in this video."
    lut = np.zeros((10, 3), np.float32)
    tool = p["tools"][0]["colour"]
    lut[3] = tool
    lut[2] = np.clip(tool * 0.4 + [0.35, 0.3, 0.2] + rng.normal(0, 0.03, 3), 0, 1)
    lut[1] = np.clip([0.8, 0.8, 0.82] + rng.normal(0, 0.04, 3), 0, 1)
    lut[4] = [0.85, 0.88, 0.9]
    lut[5] = rng.choice([[0.6, 0.25, 0.55], [0.85, 0.85, 0.8], [0.3, 0.6, 0.3]])
    lut[6] = [0.9, 0.88, 0.86]
    lut[7] = [0.7, 0.6, 0.45]
    lut[8] = rng.choice([[0.85, 0.45, 0.25], [0.7, 0.7, 0.72]])
    lut[9] = [0.75, 0.9, 0.95]
    return lut


def render_video(args):
    "Write one video folder (video_left.avi, segmentation/*.png, action files) into `folder`."
    i, seed, folder = args
    p = plan(i, seed)
    rng = np.random.default_rng([seed, i, 7])
    tex, vig, lut = tissue(np.random.default_rng(p["tex"])), vignette(rng), colours(rng, p)
    shade = 0.75 + 0.5 * cv2.resize(rng.random((9, 16), dtype=np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    dx, dy, fl = wave(rng, p["n"]), wave(rng, p["n"]), wave(rng, p["n"])
    (folder / "segmentation").mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(folder / "video_left.avi"), cv2.VideoWriter_fourcc(*"XVID"), FPS, (W, H))
    if not vw.isOpened():
        raise SystemExit(f"{folder}: OpenCV cannot write XVID")
    noise = rng.normal(0, 0.025, (4, H, W, 1)).astype(np.float32)
    for f in range(p["n"]):
        m = render_mask(p, f)
        ox, oy = int(80 * dx[f]), int(80 * dy[f])
        img = tex[oy : oy + H, ox : ox + W].copy()
        fg = m > 0
        img[fg] = lut[m[fg]] * shade[fg][:, None]
        img *= (vig * (0.85 + 0.3 * fl[f]))[..., None]
        img += noise[f % 4]
        img = cv2.GaussianBlur(img, (3, 3), 0)
        vw.write(np.clip(img * 255, 0, 255).astype(np.uint8))
        if f % STEP == 0:
            cv2.imwrite(str(folder / "segmentation" / f"{f:09d}.png"), m)
    vw.release()
    (folder / "action_discrete.txt").write_text("".join(f"{f},0\n" for f in range(0, p["n"], 6)))
    (folder / "action_continuous.txt").write_text(f"0,{p['n'] - 1},0\n")
    return folder.name


def names():
    "(split, folder name) of every video, in plan order."
    return [("train", f"video_{k + 1:02d}") for k in range(N_TRAIN)] + [
        ("test", f"video_{41 + k}") for k in range(N_TEST)
    ]


def generate(root, seed, workers):
    "Generate the world into root (skipped when its marker exists); written to a temporary folder, then renamed."
    if (root / MARKER).exists():
        return False
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [(i, seed, tmp / split / name) for i, (split, name) in enumerate(names())]
    with Pool(workers) as pool:
        list(pool.imap_unordered(render_video, jobs))
    (tmp / MARKER).write_text(
        json.dumps(dict(seed=seed, size=[H, W], fps=FPS, codec="XVID", n_train=N_TRAIN, n_test=N_TEST, seconds=SECONDS))
    )
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return True


def class_shares(root):
    "Per split: pixel share and frame presence of each class (from the masks)."
    out = {}
    for split in ("train", "test"):
        px, fr, n = np.zeros(10), np.zeros(10), 0
        vids = {c: set() for c in range(10)}
        for f in sorted((root / split).glob("video_*/segmentation/*.png")):
            m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            b = np.bincount(m.ravel(), minlength=10)[:10]
            px += b
            fr += b > 0
            n += 1
            for c in np.flatnonzero(b):
                vids[int(c)].add(f.parent.parent.name)
        out[split] = {
            str(c): dict(pixel_share=round(px[c] / px.sum(), 5), frame_share=round(fr[c] / n, 4), videos=len(vids[c]))
            for c in range(10)
        }
        out[split]["masks"] = n
    return out


def slug(args: str) -> str:
    "Command-line flags as a folder-name part: `--seed 1` -> `seed_1`."
    return "_".join(args.replace("-", " ").split())


def run_name_for(seed: int, train_args: str = "") -> str:
    "The run folder name of the default train (plus `train_args`) on the world drawn with `seed`."
    return f"default_seed{seed}" + (f"__{slug(train_args)}" if train_args else "")


def sh(cmd, log):
    "Run one command (children inherit our niceness), echo it, fail loudly; return its wall time."
    print("$", shlex.join(cmd), flush=True)
    t = time.time()
    with open(log, "a") as fh:
        r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit(f"step failed (rc {r.returncode}): {shlex.join(cmd)}; see {log}")
    return round(time.time() - t, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path.home() / ".cache/surgseg/second-world-v1"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predict-args", default="", help='extra flags for `surgseg predict`, e.g. "--min_area tune"')
    ap.add_argument(
        "--train-args",
        default="",
        help='extra flags for `surgseg train` (another recipe or training seed, e.g. "--seed 1"); names the run',
    )
    ap.add_argument("--tag", default="", help="name of this predict/evaluate variant (default: from --predict-args)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    a = ap.parse_args()
    root = Path(a.root).expanduser().resolve()
    exe = str(Path(sys.executable).with_name("surgseg"))
    times, log = {}, root.with_name(root.name + ".log")
    t = time.time()
    made = generate(root, a.seed, a.workers)
    times["generate"] = round(time.time() - t, 1) if made else 0.0
    times["validate"] = sh([exe, "validate", str(root)], log)
    run_name = run_name_for(a.seed, a.train_args)
    run = root / "runs" / run_name
    if a.retrain or not (run / "best").exists() and not (run / "last").exists():
        shutil.rmtree(run, ignore_errors=True)
        times["train"] = sh(
            [exe, "train", "--data_dir", str(root), "--out_dir", str(root / "runs"), "--run_name", run_name]
            + shlex.split(a.train_args),
            log,
        )
    tag = a.tag or ("default" if not a.predict_args else slug(a.predict_args))
    pred = root / "pred" / f"{run_name}__{tag}"
    shutil.rmtree(pred, ignore_errors=True)
    times["predict"] = sh(
        [
            exe,
            "predict",
            "--data",
            str(root / "test"),
            "--out",
            str(pred),
            "--checkpoint",
            str(run),
            *shlex.split(a.predict_args),
        ],
        log,
    )
    ev = root / "eval" / f"{run_name}__{tag}"
    times["evaluate"] = sh([exe, "evaluate", str(root / "test"), str(pred), "--out", str(ev)], log)
    import pandas as pd
    from surgseg.metrics import detection_table

    final = pd.read_csv(ev / "final_results.csv").set_index("metric")["value"]
    pc = pd.read_csv(ev / "per_class_results.csv")
    det = detection_table(pd.read_csv(ev / "per_frame_results.csv"))
    name_col = "class" if "class" in pc.columns else pc.columns[0]
    pooled = dict(zip(pc[name_col].astype(str), pc["pooled_iou_not_official"]))
    classes = {}
    for cid, r in det.iterrows():
        if r.frames_present == 0:
            continue
        classes[r["class"]] = dict(
            class_id=int(cid),
            pooled_iou=round(float(pooled.get(r["class"], np.nan)), 4),
            miss_rate=round(float(r.miss_rate), 4),
            false_alarm_rate=round(float(r.false_alarm_rate), 4),
            frames_present=int(r.frames_present),
            videos_present=int(r.videos_present),
        )
    summary = dict(
        root=str(root),
        seed=a.seed,
        train_args=a.train_args,
        predict_args=a.predict_args,
        tag=tag,
        run=str(run),
        score=round(float(final["segmentation_score"]), 4),
        miou=round(float(final["seg_mIoU"]), 4),
        mnsd=round(float(final["seg_mNSD"]), 4),
        classes=classes,
        times_s=times,
        world=json.loads((root / MARKER).read_text()),
        class_shares=class_shares(root),
    )
    print(f"\nsecond world {root} (seed {a.seed}), predict args {a.predict_args!r}")
    print(f"official score {summary['score']:.4f}   mIoU {summary['miou']:.4f}   mNSD {summary['mnsd']:.4f}")
    print(f"{'class':<16}{'pooled IoU':>11}{'miss':>7}{'f.alarm':>9}{'frames':>8}{'videos':>8}")
    for n, c in classes.items():
        print(
            f"{n:<16}{c['pooled_iou']:>11.3f}{c['miss_rate']:>7.2f}{c['false_alarm_rate']:>9.2f}"
            f"{c['frames_present']:>8}{c['videos_present']:>8}"
        )
    print("times (s):", ", ".join(f"{k} {v}" for k, v in times.items()))
    text = json.dumps(summary, indent=1, default=float)
    (root / "summary.json").write_text(text)
    (root / f"summary_{run_name}__{tag}.json").write_text(text)  # kept per variant; summary.json is the latest


if __name__ == "__main__":
    main()
