"Training (surgseg.train): the CLI, papermill and YAML doors, exact resume, and two CPU processes under Accelerate."

import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from surgseg.core import Config, SurgsegError, load_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "1"}
# a two-layer DINOv3 with random weights (LoRA on q/v) on 64x96 frames: a whole run takes seconds
TINY = dict(
    model="dinov3", dinov3="tiny", weights="none", batch_size=2, val_fraction=0.3, log_with="none", samples_per_epoch=0
)


def run(cmd, **kw):
    "Run a command, returning the CompletedProcess (text output)."
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny synthetic dataset in the official layout with its frames extracted."
    from surgseg.synthetic import generate
    from surgseg.train import prepare_data

    root = generate(tmp_path_factory.mktemp("data") / "tiny", n_train=3, n_test=1, seconds=3, size=(64, 96))
    return str(prepare_data(Config(data_dir=str(root))))


def tiny_cfg(tiny, out, **kw):
    return Config(**{**TINY, "data_dir": tiny, "out_dir": str(out), **kw})


def weights(run_dir):
    """Every tensor a run's last/ holds: the saved model (the EMA's weights with ema), the raw weights and the EMA's
    state."""
    last = Path(run_dir) / "last"
    out = {f"state/{k}": v for k, v in load_file(last / "state" / "model.safetensors").items()}
    out |= {f"model/{k}": v for k, v in load_file(last / "model.safetensors").items()}
    for f in sorted((last / "state").glob("custom_checkpoint_*.pkl")):  # registered objects: the EMA
        out |= {f"{f.stem}/{k}": v for k, v in torch.load(f, weights_only=True).items()}
    return out


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


# --- the three doors -------------------------------------------------------------------------------


def test_cli_help_lists_every_config_field():
    r = run([str(BIN / "surgseg"), "train", "--help"])
    assert r.returncode == 0, r.stderr
    missing = [f for f in ["config"] + Config.field_names() if not any(f"--{f}{end}" in r.stdout for end in " ,\n")]
    assert not missing, f"surgseg train --help lacks {missing}"
    assert "focal loss focusing parameter" in r.stdout


def test_papermill_lists_every_config_field():
    r = run([str(BIN / "papermill"), "--help-notebook", "nbs/06_train.ipynb"])
    assert r.returncode == 0, r.stderr
    listed = {
        l.split(":")[0].strip()
        for l in r.stdout.splitlines()
        if l.startswith("  ") and ": " in l and "(default None)" in l
    }
    assert listed == set(Config.field_names()) | {"config"}, listed ^ (set(Config.field_names()) | {"config"})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_files_list_only_differences(path):
    """Each YAML experiment loads, sets only values that differ from the defaults (the loss may be named), one comment
    each."""
    raw = yaml.safe_load(path.read_text())
    cfg, d = load_config(path), Config()
    same = [k for k in raw if k != "loss" and getattr(d, k) == getattr(cfg, k)]
    assert not same, f"{path.name}: {same} repeat the defaults"
    lines = [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
    assert len(lines) == len(raw) and all(" # " in l for l in lines), f"{path.name}: one commented line per key"
    expected = {
        "dice_ce": dict(loss="dice_ce"),
        "focal_ce": dict(loss="focal_ce"),
        "wce": dict(loss="wce"),
        "dinov3_lora": dict(model="dinov3", finetune="lora"),
    }[path.stem]
    assert {k: getattr(cfg, k) for k in expected} == expected
    if cfg.class_weights != "none" or cfg.loss == "wce":
        from surgseg.losses import build_loss

        build_loss(cfg, [100.0] * 10, [1000.0] * 10)  # the loss and its weights are well-formed


def test_papermill_parameters_cell_is_generated():
    "The parameters cell of 06 holds exactly papermill_parameters(): every Config field, its docment and default."
    import nbformat
    from fastcore.docments import docments
    from surgseg.train import papermill_parameters

    cell = next(
        c
        for c in nbformat.read(ROOT / "nbs" / "06_train.ipynb", as_version=4).cells
        if "parameters" in c.metadata.get("tags", [])
    )
    assert cell.source == papermill_parameters()
    docs = docments(Config, full=True, returns=False)
    for f in Config.field_names():
        line = next(l for l in cell.source.splitlines() if l.startswith(f"{f}: "))
        assert docs[f].docment.replace(" = ", " means ") in line, f


def test_config_files_cover_the_study():
    assert {p.stem for p in CONFIGS} >= {"dice_ce", "focal_ce", "wce", "dinov3_lora"}


def test_cli_trains_with_yaml_and_overrides(tiny, tmp_path):
    "YAML values stay unless a flag overrides them; the summary names the run folder."
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(yaml.safe_dump({**TINY, "loss": "focal_ce", "focal_gamma": 3.0, "epochs": 5}))
    r = run(
        [
            str(BIN / "surgseg"),
            "train",
            "--config",
            str(cfg_file),
            "--data_dir",
            tiny,
            "--out_dir",
            str(tmp_path / "runs"),
            "--epochs",
            "1",
            "--max_steps",
            "1",
            "--augment",
            "false",
            "--run_name",
            "cli",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"run folder: {tmp_path / 'runs' / 'cli'}" in r.stdout
    cfg = load_config(tmp_path / "runs" / "cli" / "config.yaml")
    assert (cfg.loss, cfg.focal_gamma, cfg.epochs, cfg.max_steps, cfg.augment, cfg.model) == (
        "focal_ce",
        3.0,
        1,
        1,
        False,
        "dinov3",
    )
    assert len(pd.read_csv(tmp_path / "runs" / "cli" / "metrics.csv")) == 1
    # the same run folder again: refused with one line naming it, nothing overwritten
    again = run(
        [
            str(BIN / "surgseg"),
            "train",
            "--config",
            str(cfg_file),
            "--data_dir",
            tiny,
            "--out_dir",
            str(tmp_path / "runs"),
            "--epochs",
            "1",
            "--max_steps",
            "1",
            "--run_name",
            "cli",
        ]
    )
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith("surgseg train: error: ")
    assert "run folder exists" in again.stderr


def test_papermill_trains_focal_ce(tiny, tmp_path):
    "`papermill nbs/06_train.ipynb out.ipynb -p loss focal_ce` trains with Focal+CE and prints both scores."
    out = tmp_path / "focal.ipynb"
    params = dict(
        TINY, data_dir=tiny, out_dir=str(tmp_path / "runs"), loss="focal_ce", epochs=1, max_steps=1, run_name="pm"
    )
    cmd = [str(BIN / "papermill"), "nbs/06_train.ipynb", str(out), "-k", "python3", "--log-level", "WARNING"]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    r = run(cmd, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_config(tmp_path / "runs" / "pm" / "config.yaml").loss == "focal_ce"
    import nbformat

    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert "validation score untrained" in text and "validation score trained" in text


# --- resume ----------------------------------------------------------------------------------------


class Kill(Exception):
    "Stands in for the process being killed."


def kill_at(step):
    def on_step(tr, batch):
        if tr.global_step == step:
            raise Kill()

    return on_step


@pytest.mark.parametrize(
    "kw,kill,ckpt",
    [
        (dict(save_every=2), 7, (1, 2, 6)),  # killed mid-epoch, resumed from a mid-epoch checkpoint
        (dict(save_every=0), 6, (1, 0, 4)),  # killed mid-epoch, resumed from the epoch's start
        (dict(save_every=1, grad_accum=2), 6, (1, 1, 5)),  # gradient accumulation: resumed after an optimiser step
        (dict(save_every=2, ema=0.9), 7, (1, 2, 6)),  # an EMA of the weights: its state resumed too
        (dict(save_every=0, ema=0.5, grad_accum=2), 6, (1, 0, 4)),  # EMA with accumulation, from the epoch's start
    ],
    ids=["mid-epoch-checkpoint", "epoch-checkpoint", "grad-accum", "ema-mid-epoch", "ema-grad-accum"],
)
def test_resume_is_bit_identical(tiny, tmp_path, kw, kill, ckpt):
    from surgseg.train import fit

    c = tiny_cfg(
        tiny, tmp_path, epochs=2, max_steps=4, batch_size=1 if kw.get("grad_accum") else 2, **kw
    )  # augmentation on
    a = fit(c.update(run_name="a"))
    with pytest.raises(Kill):
        fit(c.update(run_name="b"), on_step=kill_at(kill))
    p = json.loads((tmp_path / "b" / "last" / "progress.json").read_text())
    assert (p["epoch"], p["step"], p["global_step"]) == ckpt
    b = fit(c.update(run_name="b", resume=True))
    assert same_weights(a, b)
    wa = weights(a)
    if c.ema:  # the saved model is the average (updated once per optimiser step), not the raw weights
        assert any(k.startswith("custom_checkpoint_0/") for k in wa)
        assert wa["custom_checkpoint_0/n_averaged"].item() == 8  # 2 epochs x 4 optimiser steps
        assert any(not torch.equal(wa[f"model/{k[6:]}"], wa[k]) for k in wa if k.startswith("state/"))
    else:
        assert all(torch.equal(wa[f"model/{k[6:]}"], wa[k]) for k in wa if k.startswith("state/"))
    ma, mb = (pd.read_csv(r / "metrics.csv").drop(columns="seconds") for r in (a, b))
    pd.testing.assert_frame_equal(ma, mb)


def test_resume_refuses_other_settings(tiny, tmp_path):
    from surgseg.train import fit

    c = tiny_cfg(tiny, tmp_path, epochs=1, max_steps=1, run_name="r")
    fit(c)
    with pytest.raises(SurgsegError, match="made with loss='dice_ce', not 'focal_ce'"):
        fit(c.update(resume=True, loss="focal_ce"))
    run2 = fit(c.update(resume=True, epochs=2))  # more epochs is allowed: the run continues
    assert pd.read_csv(run2 / "metrics.csv")["epoch"].tolist() == [1, 2]


# --- real processes killed with SIGKILL ---------------------------------------------------------------

TRAIN_SCRIPT = textwrap.dedent("""
    import logging, sys
    from surgseg.core import load_config
    from surgseg.train import fit
    if __name__ == "__main__":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        fit(load_config(sys.argv[1]))
""")


def start(cfg, tmp, pause=None):
    """Start a real training process on `cfg`. Without `pause` wait for it (returns stderr); with one, return it
    paused there."""
    f = tmp / f"{cfg.run_name}-{time.monotonic_ns()}.yaml"
    f.write_text(yaml.safe_dump(cfg.to_dict()))
    marker, env = tmp / f"{f.stem}.paused", dict(ENV)
    if pause:
        env |= {"SURGSEG_PAUSE_AT": pause, "SURGSEG_PAUSE_FILE": str(marker)}
    p = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(f)],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if not pause:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        return err
    deadline = time.time() + 600
    while not marker.exists():
        if p.poll() is not None:
            raise AssertionError(f"ended before reaching {pause}: {p.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"{pause} not reached"
        time.sleep(0.05)
    return p


def sigkill(p):
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL


def tensors(run_dir) -> dict:
    "Every tensor and number of a run's checkpoints: last/state (model, optimiser, schedule) and best/'s model."
    out = {}

    def walk(prefix, x):
        if isinstance(x, dict):
            [walk(f"{prefix}.{k}", v) for k, v in x.items()]
        elif isinstance(x, (list, tuple)):
            [walk(f"{prefix}.{i}", v) for i, v in enumerate(x)]
        else:
            out[prefix] = x

    files = sorted((Path(run_dir) / "last" / "state").iterdir()) + [
        Path(run_dir) / "best" / "model.safetensors",
        Path(run_dir) / "last" / "model.safetensors",
    ]
    for f in files:
        if f.suffix == ".safetensors":
            walk(f"{f.parent.name}/{f.name}", dict(load_file(f)))
        elif f.suffix == ".bin" or f.name.startswith("custom_checkpoint_"):  # custom_checkpoint_*.pkl: the EMA
            walk(f"{f.parent.name}/{f.name}", torch.load(f, weights_only=True))
    return out


def identical(a, b):
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb)
    diff = [k for k in ta if not (torch.equal(ta[k], tb[k]) if isinstance(ta[k], torch.Tensor) else ta[k] == tb[k])]
    assert not diff, f"{len(diff)} of {len(ta)} differ, e.g. {diff[:3]}"
    ma, mb = (pd.read_csv(Path(r) / "metrics.csv").drop(columns="seconds") for r in (a, b))
    pd.testing.assert_frame_equal(ma, mb)
    return len(ta)


KILL = dict(epochs=2, max_steps=4, save_every=2)  # augmentation on (the default)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    "The uninterrupted run (one real process, 0 loader workers) every killed run must reproduce bit for bit."
    tmp = tmp_path_factory.mktemp("ref")
    start(tiny_cfg(tiny, tmp / "runs", run_name="ref", num_workers=0, **KILL), tmp)
    return tmp / "runs" / "ref"


@pytest.fixture(scope="module")
def reference_ema(tiny, tmp_path_factory):
    "The uninterrupted run with an EMA of the weights."
    tmp = tmp_path_factory.mktemp("ref_ema")
    start(tiny_cfg(tiny, tmp / "runs", run_name="ref", num_workers=0, ema=0.8, **KILL), tmp)
    return tmp / "runs" / "ref"


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "workers,pause,resumed_from,ema",
    [
        (0, "step:3", (0, 2, 2), 0.0),  # mid-epoch, after the step-2 checkpoint
        (0, "save:last:2", (0, 2, 2), 0.0),  # inside the epoch-end checkpoint write: the previous last/ stays whole
        (2, "step:6", (1, 0, 4), 0.0),  # two loader workers, mid-epoch 2
        (0, "step:7", (1, 2, 6), 0.8),  # an EMA of the weights, killed mid-epoch 2: the averaged weights resume exactly
    ],
    ids=["mid-epoch", "during-checkpoint-write", "workers2-mid-epoch", "ema-mid-epoch"],
)
def test_sigkill_then_resume_is_bit_identical(tiny, tmp_path, request, workers, pause, resumed_from, ema):
    reference = request.getfixturevalue("reference_ema" if ema else "reference")
    c = tiny_cfg(tiny, tmp_path / "runs", run_name="k", num_workers=workers, ema=ema, **KILL)
    run = tmp_path / "runs" / "k"
    sigkill(start(c, tmp_path, pause))
    p = json.loads((run / "last" / "progress.json").read_text())
    assert (p["epoch"], p["step"], p["global_step"]) == resumed_from
    err = start(c.update(resume=True), tmp_path)
    assert f"resuming {run} from {run / 'last'} (epoch {resumed_from[0] + 1}, step {resumed_from[1]}" in err
    assert identical(reference, run) > 50
    left = [q.name for q in list(run.iterdir()) + list(run.parent.iterdir()) if q.name.startswith(".")]
    assert not left, f"left behind: {left}"  # no partial checkpoint, no old copy, no lock


def test_second_process_refused_then_stale_lock_taken_over(tiny, tmp_path):
    c = tiny_cfg(tiny, tmp_path / "runs", run_name="l", epochs=1, max_steps=2)
    p = start(c, tmp_path, "step:1")  # holds the run's lock
    from surgseg.train import fit

    with pytest.raises(SurgsegError, match=rf"runs/l: in use by pid {p.pid} on \S+ since \d{{4}}-") as e:
        fit(c.update(resume=True))
    assert "\n" not in str(e.value)
    sigkill(p)  # its lock is now stale
    run = fit(c.update(resume=True))
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1]
    assert not (tmp_path / "runs" / ".l.lock").exists()


def test_refused_runs_leave_no_folder(tiny, tmp_path):
    from surgseg.train import fit

    for bad in (dict(fps=7), dict(lr=-1), dict(batch_size=0), dict(resolution=1.5)):
        with pytest.raises(SurgsegError, match=f"config key '{next(iter(bad))}'"):
            fit(tiny_cfg(tiny, tmp_path, run_name="r", **bad))
    with pytest.raises(SurgsegError, match="no full step"):
        fit(tiny_cfg(tiny, tmp_path, run_name="r", batch_size=1000))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint_is_named_on_resume(tiny, tmp_path):
    from surgseg.train import fit

    c = tiny_cfg(tiny, tmp_path, run_name="c", epochs=2, max_steps=1)
    with pytest.raises(Kill):
        fit(c, on_step=kill_at(2))
    opt = tmp_path / "c" / "last" / "state" / "optimizer.bin"
    opt.write_bytes(opt.read_bytes()[:100])
    with pytest.raises(
        SurgsegError, match=r"last/state/optimizer.bin: truncated or corrupt checkpoint file \(100 bytes"
    ) as e:
        fit(c.update(resume=True))
    assert "\n" not in str(e.value) and (tmp_path / "c" / "metrics.csv").is_file()  # the run folder is kept


# --- two processes ---------------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from accelerate import PartialState
    from surgseg.core import load_config
    from surgseg.train import fit

    out = Path(sys.argv[2])
    seen = []
    def on_step(tr, batch):
        seen.append([tr.epoch, tr.global_step, batch["index"].tolist()])
    if __name__ == "__main__":
        run = fit(load_config(sys.argv[1]), on_step=on_step)
        rank = PartialState().process_index
        (out / f"rank{rank}.json").write_text(json.dumps({"run": str(run), "seen": seen}))
""")


@pytest.mark.timeout(600)
def test_two_processes_see_disjoint_frames_and_save_once(tiny, tmp_path):
    from surgseg.data import SegDataset
    from surgseg.models import load_model
    from surgseg.train import make_splits, validation_scores
    from torch.utils.data import DataLoader

    cfg = tiny_cfg(
        tiny,
        tmp_path / "runs",
        sampler="none",
        epochs=2,
        batch_size=1,
        run_name="ddp",
        augment=False,
        model="unet",
        encoder="tu-tf_efficientnet_lite0",
    )  # BatchNorm under DDP, too
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    # two CPU processes under torchrun (what `accelerate launch --multi_gpu` runs); ACCELERATE_USE_CPU keeps them on CPU
    # (`accelerate launch --cpu` alone starts one process; several CPU processes need torchrun or MPI)
    r = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(tmp_path / "ddp.py"),
            str(tmp_path / "cfg.yaml"),
            str(tmp_path),
        ],
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["run"] == ranks[1]["run"] == str(tmp_path / "runs" / "ddp")
    train_v, _ = make_splits(cfg, Path(tiny))
    n = len(SegDataset(train_v))
    for epoch in (0, 1):
        got = [[i for e, _, b in rk["seen"] if e == epoch for i in b] for rk in ranks]
        assert not set(got[0]) & set(got[1]), f"epoch {epoch}: both ranks saw {set(got[0]) & set(got[1])}"
        assert len(got[0]) == len(got[1]) == n // 2 and len(set(got[0]) | set(got[1])) == 2 * (n // 2)
        assert [s for e, s, _ in ranks[0]["seen"] if e == epoch] == [s for e, s, _ in ranks[1]["seen"] if e == epoch]
    run_dir = tmp_path / "runs" / "ddp"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]  # one run folder
    m = pd.read_csv(run_dir / "metrics.csv")
    assert m["epoch"].tolist() == [1, 2]  # one row per epoch, written once
    assert sorted(p.name for p in (run_dir / "last" / "state").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    assert not list(run_dir.glob(".*.tmp")) and not list(run_dir.glob(".*.old"))  # no half-written checkpoint left
    # the score both processes computed together is the score of the saved model on the whole validation split
    model, _ = load_model(run_dir / "last")
    _, val_v = make_splits(cfg, Path(tiny))
    res = validation_scores(model, DataLoader(SegDataset(val_v, scale=cfg.scale), batch_size=2))
    assert res["score"] == pytest.approx(m["val_score"].iloc[-1], abs=1e-6)


# --- folds -------------------------------------------------------------------------------------------


def test_folds_tile_the_operations_and_are_deterministic(tiny):
    "The k folds' validation parts are disjoint, cover every training video once, keep operations whole, and repeat."
    from surgseg.train import run_splits
    from surgseg.data import find_videos

    videos = [v for v in find_videos(tiny) if v.split != "test"]
    for seed in (0, 7):
        parts = [run_splits(Config(data_dir=tiny, folds=3, fold=k, seed=seed)) for k in range(3)]
        vals = [sorted(v.name for v in va) for _, va in parts]
        assert sorted(sum(vals, [])) == sorted(v.name for v in videos)  # each video validated exactly once
        for tr, va in parts:
            assert va and not {v.operation for v in tr} & {v.operation for v in va}
        assert vals == [
            sorted(v.name for v in run_splits(Config(data_dir=tiny, folds=3, fold=k, seed=seed))[1]) for k in range(3)
        ]


@pytest.mark.parametrize(
    "flags,says,code",
    [
        (["--folds", "1"], "config key 'folds': 1 is out of range; must be >= 2", 2),
        (["--folds", "3", "--fold", "3"], "config key 'fold': 3 is out of range; must be < folds (3)", 2),
        (["--fold", "2"], "config key 'fold': 2 is out of range; must be 0 while folds is 0", 2),
        (["--folds", "4"], "config key 'folds': 4 is out of range; must be <= the number of training operations (3", 1),
    ],
    ids=["one-fold", "fold-past-folds", "fold-without-folds", "more-folds-than-operations"],
)
def test_bad_folds_are_one_line_naming_the_key(tiny, tmp_path, capsys, flags, says, code):
    from surgseg.cli import main

    args = [
        "train",
        "--data_dir",
        tiny,
        "--out_dir",
        str(tmp_path / "runs"),
        "--model",
        "dinov3",
        "--dinov3",
        "tiny",
        "--weights",
        "none",
        "--log_with",
        "none",
        "--epochs",
        "1",
        "--max_steps",
        "1",
        "--run_name",
        "f",
        *flags,
    ]
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("surgseg train: error: ") and says in err[0], err
    assert not (tmp_path / "runs" / "f").exists()  # a refused run leaves nothing


def test_fold_run_validates_on_its_fold(tiny, tmp_path):
    "`surgseg train --folds 3 --fold k` validates on fold k's operations: the frames validated are that fold's."
    from surgseg.cli import main
    from surgseg.train import run_splits

    args = [
        "train",
        "--data_dir",
        tiny,
        "--out_dir",
        str(tmp_path / "runs"),
        "--model",
        "dinov3",
        "--dinov3",
        "tiny",
        "--weights",
        "none",
        "--log_with",
        "none",
        "--batch_size",
        "2",
        "--samples_per_epoch",
        "0",
        "--epochs",
        "1",
        "--max_steps",
        "1",
        "--folds",
        "3",
        "--fold",
        "2",
        "--run_name",
        "k2",
    ]
    assert main(args) == 0
    cfg = load_config(tmp_path / "runs" / "k2" / "config.yaml")
    assert (cfg.folds, cfg.fold) == (3, 2)
    _, val = run_splits(cfg)
    from surgseg.runs import load_checkpoint
    from surgseg.train import validation_scores
    from surgseg.data import SegDataset
    from torch.utils.data import DataLoader

    model, _, _ = load_checkpoint(tmp_path / "runs" / "k2")
    res = validation_scores(model, DataLoader(SegDataset(val, scale=cfg.scale, train=False), batch_size=2))
    m = pd.read_csv(tmp_path / "runs" / "k2" / "metrics.csv")
    assert res["frames"] == sum(len(v.frames) for v in val) and m["val_score"].iloc[0] == pytest.approx(
        res["score"], abs=1e-12
    )
