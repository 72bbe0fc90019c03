"Run folders (surgseg.runs) on real training runs: finding the newest finished run and loading its checkpoint."

import json, shutil
from pathlib import Path

import pytest
import torch

from surgseg.core import Config, SurgsegError, runs_dir, save_config
from surgseg.runs import find_checkpoint, is_finished, latest_run, load_checkpoint, run_folders, run_progress

NBS = Path(__file__).resolve().parents[1] / "nbs"

TINY = dict(
    model="dinov3",
    dinov3="tiny",
    weights="none",
    batch_size=2,
    val_fraction=0.3,
    log_with="none",
    samples_per_epoch=0,
    epochs=1,
    max_steps=2,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Two finished tiny runs (a U-Net-free DINOv3 one and a second seed) under one out_dir, on a tiny dataset."
    from surgseg.synthetic import generate
    from surgseg.train import fit, prepare_data

    tmp = tmp_path_factory.mktemp("runs")
    data = prepare_data(Config(data_dir=str(generate(tmp / "data", n_train=3, n_test=1, seconds=3, size=(64, 96)))))
    out = tmp / "out"
    a = fit(Config(**TINY, data_dir=str(data), out_dir=str(out), run_name="a"))
    b = fit(Config(**TINY, data_dir=str(data), out_dir=str(out), run_name="b", seed=1, finetune="frozen"))
    return out, a, b


def test_latest_run_and_filters(runs):
    out, a, b = runs
    assert is_finished(a) and is_finished(b)
    assert latest_run(out) == b
    assert latest_run(out, finetune="lora") == a
    assert latest_run([out.parent / "missing", out], seed=1) == b
    assert latest_run(out, model="unet") is None
    p = run_progress(a)
    assert (p["epoch"], p["global_step"]) == (1, 2)


def test_unfinished_runs_are_skipped(runs, tmp_path):
    out, a, _ = runs
    c = tmp_path / "c"
    shutil.copytree(a, c)
    save_config(Config(**{**TINY, "epochs": 3}), c / "config.yaml")  # asks for 3 epochs, has done 1
    assert not is_finished(c) and latest_run(tmp_path) is None


def test_load_checkpoint_of_a_run(runs):
    _, a, _ = runs
    model, cfg, ckpt = load_checkpoint(a)
    assert ckpt == a / "best" and cfg.model == "dinov3" and not model.training
    assert (ckpt / "manifest.json").is_file() and (a / "last" / "manifest.json").is_file()
    m2, _, _ = load_checkpoint(a / "last")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert model(x).shape == m2(x).shape == (1, 10, 64, 96)


def test_damaged_checkpoints_fail_in_one_line(runs, tmp_path):
    _, a, _ = runs
    bad = tmp_path / "bad"
    shutil.copytree(a, bad)
    w = bad / "best" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(SurgsegError, match=r"best/model.safetensors: truncated or corrupt checkpoint file") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    # another model family: a U-Net's config beside DINOv3 weights
    mixed = tmp_path / "mixed"
    shutil.copytree(a / "last", mixed)
    (mixed / "manifest.json").unlink()
    save_config(Config(), mixed / "config.yaml")
    with pytest.raises(SurgsegError, match=r"weights of a 'dinov3' model, but .*config.yaml says model 'unet'"):
        load_checkpoint(mixed)
    # an smp / Hugging Face folder is not a surgseg checkpoint
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "dinov3_vit"}))
    with pytest.raises(SurgsegError, match="not a surgseg checkpoint"):
        find_checkpoint(hf)


def test_nested_runs_are_found(runs, tmp_path):
    """The study's runs sit one level down (runs_dir()/study/<run>): found, unless unfinished; filters apply; a run
    folder's own subfolders are not runs."""
    out, a, b = runs
    store = tmp_path / "store"
    shutil.copytree(a, store / "study" / "a-s0")
    shutil.copytree(b, store / "study" / "deeper" / "b-s1")
    c = store / "study" / "c-s0"
    shutil.copytree(a, c)
    save_config(Config(**{**TINY, "epochs": 3}), c / "config.yaml")  # unfinished: skipped
    shutil.copytree(a, store / "study" / ".hidden")  # hidden folders are not searched
    shutil.copytree(a, store / "study" / "a-s0" / "logs" / "copy")  # nor a run folder's own subfolders
    assert latest_run(store, seed=1) == store / "study" / "deeper" / "b-s1"
    assert latest_run(store, finetune="lora") == store / "study" / "a-s0"
    assert latest_run(store, epochs=3) is None and latest_run(c) is None
    assert sorted(p.relative_to(store).as_posix() for p in run_folders(store)) == [
        "study/a-s0",
        "study/c-s0",
        "study/deeper/b-s1",
    ]


def test_default_run_is_what_the_demo_chapters_find(tmp_path, monkeypatch):
    """Chapter 06 with its default parameters (a default Config, shortened) writes into the run store, and the lookup
    the demo chapters share (`train.default_run`) finds that run, not the study's or another recipe's."""
    import surgseg.data
    from surgseg.synthetic import generate
    from surgseg.train import default_run, fit

    monkeypatch.setenv("SURGSEG_HOME", str(tmp_path / "home"))
    tiny = generate(tmp_path / "tiny", n_train=4, n_test=1, seconds=2, size=(144, 256), workers=1)
    monkeypatch.setattr(
        surgseg.data, "ensure_synthetic", lambda *a, **k: tiny
    )  # the default data ("") without generating it
    short = dict(epochs=1, max_steps=1, samples_per_epoch=8, log_with="none")  # 06's default run, shortened
    run = fit(Config(**short))
    assert run.parent == runs_dir() == tmp_path / "home" / "runs"
    other = fit(
        Config(**short, loss="focal_ce", out_dir=str(runs_dir(sub="study")), run_name="focal-s0")
    )  # newer, not default
    assert is_finished(other) and latest_run() == other
    found, note = default_run()
    assert found == run and note.startswith(f"{run}: the newest finished run of the default recipe in {runs_dir()}"), (
        note
    )


@pytest.mark.parametrize("nb", ["07a_evaluate", "08_inference", "08a_postprocess"])
def test_demo_chapters_use_the_shared_lookup(nb):
    """07a, 08 and 08a find their run with train.default_run (06's default run, else a small one, saying which): no
    lookup of their own."""
    src = "\n".join(
        "".join(c["source"]) for c in json.loads((NBS / f"{nb}.ipynb").read_text())["cells"] if c["cell_type"] == "code"
    )
    assert "default_run(" in src and "print(note)" in src
    assert "latest_run(" not in src and "fit(Config(" not in src
