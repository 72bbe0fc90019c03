"Run folders (surgseg.runs) on real training runs: finding the newest finished run and loading its checkpoint."
import json, shutil

import pytest
import torch

from surgseg.core import Config, SurgsegError, save_config
from surgseg.runs import find_checkpoint, is_finished, latest_run, load_checkpoint, run_progress

TINY = dict(model="dinov3", dinov3="tiny", weights="none", batch_size=2, val_fraction=0.3, log_with="none", samples_per_epoch=0,
            epochs=1, max_steps=2)


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
    c = tmp_path / "c"; shutil.copytree(a, c)
    save_config(Config(**{**TINY, "epochs": 3}), c / "config.yaml")  # asks for 3 epochs, has done 1
    assert not is_finished(c) and latest_run(tmp_path) is None


def test_load_checkpoint_of_a_run(runs):
    _, a, _ = runs
    model, cfg, ckpt = load_checkpoint(a)
    assert ckpt == a / "best" and cfg.model == "dinov3" and not model.training
    assert (ckpt / "manifest.json").is_file() and (a / "last" / "manifest.json").is_file()
    m2, _, _ = load_checkpoint(a / "last")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad(): assert model(x).shape == m2(x).shape == (1, 10, 64, 96)


def test_damaged_checkpoints_fail_in_one_line(runs, tmp_path):
    _, a, _ = runs
    bad = tmp_path / "bad"; shutil.copytree(a, bad)
    w = bad / "best" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(SurgsegError, match=r"best/model.safetensors: truncated or corrupt checkpoint file") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    # another model family: a U-Net's config beside DINOv3 weights
    mixed = tmp_path / "mixed"; shutil.copytree(a / "last", mixed); (mixed / "manifest.json").unlink()
    save_config(Config(), mixed / "config.yaml")
    with pytest.raises(SurgsegError, match=r"weights of a 'dinov3' model, but .*config.yaml says model 'unet'"):
        load_checkpoint(mixed)
    # an smp / Hugging Face folder is not a surgseg checkpoint
    hf = tmp_path / "hf"; hf.mkdir(); (hf / "config.json").write_text(json.dumps({"model_type": "dinov3_vit"}))
    with pytest.raises(SurgsegError, match="not a surgseg checkpoint"):
        find_checkpoint(hf)
