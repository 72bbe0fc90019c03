"Fixtures shared by the test files."

import contextlib, io, shutil

import pytest

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
