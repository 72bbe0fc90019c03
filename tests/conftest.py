"Fixtures shared by the test files."

import contextlib, dataclasses, io, shutil

import pytest

from surgseg.core import Config, choices

SYNTH = ["--n_train", 2, "--n_test", 1, "--seconds", 2, "--width", 96, "--height", 64, "--split-ops", 0, "--workers", 1]
UNET = [
    "--model",
    "unet",
    "--encoder",
    "resnet18",
    "--weights",
    "none",
    "--batch-size",
    1,
    "--no-augment",
    "--log_with",
    "none",
]


def _cli(*argv) -> str:
    "`surgseg ARGV` in this process; its stdout, after asserting exit code 0."
    from surgseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    assert rc == 0, (argv, out.getvalue(), err.getvalue()[-3000:])
    return out.getvalue()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny dataset and a one-step U-Net run, built through the CLI, once per test module; the working folder (the
    tests run inside it): data/ (frames extracted), raw/ (the same dataset, frames not extracted), runs/r (the run)."""
    d = tmp_path_factory.mktemp("ws")
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.setenv("SURGSEG_HOME", str(d / "home"))
    try:
        _cli("synth", "data", *SYNTH)
        shutil.copytree("data", "raw")  # frames not extracted
        _cli("extract", "data", "--workers", 1)
        _cli(
            "train",
            "--data_dir",
            "data",
            "--out_dir",
            "runs",
            "--run_name",
            "r",
            "--epochs",
            1,
            "--max_steps",
            1,
            "--no-decisions",
            *UNET,
        )  # the raw model: tests that want decisions write or tune them
        yield d
    finally:
        mp.undo()


# --- a Config with every field changed (round trips through YAML, strings and the CLI) ---------------------------

ODD = {
    "data_dir": "/data/SAR RARP50",
    "out_dir": "elsewhere/runs",
    "run_name": "r_1",
    "encoder": "resnet18",
    "weights": "none",
    "dinov3": "models/dinov3-local",
    "precision": "bf16",
    "log_with": "wandb",
    "pos_embed_rescale": 2.0,
    "lora_targets": ["q_proj", "k_proj", "v_proj"],
    "min_area": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    "folds": 5,
    "fold": 4,
    "ema": 0.99,
    "crop_weights": "equal",
}  # fold needs folds: no value one above its default alone


def non_default_config() -> Config:
    "A Config with every field set to a valid value that differs from its default."
    from surgseg import losses, models, sampler  # noqa: F401 (registries: names to choose from)

    d, vals = Config(), {}
    for f in dataclasses.fields(Config):
        v = getattr(d, f.name)
        if f.name in ODD:
            vals[f.name] = ODD[f.name]
        elif isinstance(v, bool):
            vals[f.name] = not v
        elif choices(f.name):
            vals[f.name] = next(n for n in reversed(choices(f.name)) if n != v)
        elif isinstance(v, int):
            vals[f.name] = v + 1
        elif isinstance(v, float):
            vals[f.name] = v / 2
        else:
            raise AssertionError(f"no odd value for Config field {f.name!r}: add one to ODD")
    cfg = Config(**vals)
    same = [k for k in Config.field_names() if getattr(cfg, k) == getattr(d, k)]
    assert not same, f"fields left at their default: {same}"
    return cfg
