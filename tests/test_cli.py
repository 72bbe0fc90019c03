"""Tests of the `surgseg` command line (surgseg.cli): parsers, conventions, errors, and Config's round trip through
YAML, the CLI and papermill."""

import contextlib, dataclasses, io, subprocess, sys
from pathlib import Path

import pytest

from surgseg import cli
from surgseg.cli import COMMANDS, main, parser, train_config
from conftest import non_default_config  # one "every field changed" Config for the CLI and core tests
from surgseg.core import CONFIG_SECTIONS, Config, choices, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]
SURGSEG = Path(sys.executable).parent / "surgseg"
TRAIN_NB = ROOT / "nbs" / "06_train.ipynb"


def run(*argv):
    "Run `surgseg ARGV` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def one_line_error(rc, err, cmd, *expected):
    """A failure: non-zero exit, exactly one line on stderr, `surgseg CMD: error: ...` containing `expected`, no
    traceback."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc != 0 and len(lines) == 1 and lines[0].startswith(f"surgseg {cmd}: error: "), (rc, err)
    assert "Traceback" not in err
    for e in expected:
        assert e in lines[0], (e, lines[0])


def parse_train(*argv) -> Config:
    return train_config(parser("train").parse_args([str(a) for a in argv]))


# --- the command and its subcommands -----------------------------------------------------------------


def test_top_level_help_is_fast_and_lists_every_command():
    "`surgseg --help` lists the subcommands without importing torch (the chapters are imported per subcommand)."
    code = (
        "import sys; from surgseg.cli import main; rc = main(['--help']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for cmd in COMMANDS:
        assert f"  {cmd} " in r.stdout, cmd
    assert set(COMMANDS) == {
        "synth",
        "unpack",
        "validate",
        "extract",
        "stats",
        "train",
        "evaluate",
        "predict",
        "predict-image",
        "predict-video",
        "export",
    }


def test_version_and_unknown_command():
    from surgseg import __version__

    r = subprocess.run([str(SURGSEG), "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == __version__, (r.stdout, r.stderr)
    rc, out, err = run("trian")
    assert rc == 2 and err.splitlines() == [err.strip()] and "'trian' is not a command" in err and "train" in err, err


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_help(cmd):
    "Every subcommand's --help works (in its own parser) and names the subcommand."
    rc, out, err = run(cmd, "--help")
    assert rc == 0 and out.startswith(f"usage: surgseg {cmd}") and COMMANDS[cmd].help in out, (rc, out, err)


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_every_multiword_flag_has_both_spellings(cmd):
    "Every --a_b flag is also --a-b (and a boolean's --no-a_b is also --no-a-b)."
    for a in parser(cmd)._actions:
        for o in a.option_strings:
            if o.startswith("--") and "_" in o:
                assert o.replace("_", "-") in a.option_strings, (cmd, o, a.option_strings)


def test_dash_and_underscore_spellings_agree():
    assert parse_train("--data-dir", "d", "--out-dir", "o", "--batch-size", 2, "--no-low-res") == parse_train(
        "--data_dir", "d", "--out_dir", "o", "--batch_size", 2, "--no-low_res"
    )
    a = parser("evaluate").parse_args(["r", "p", "--allow-missing"])
    b = parser("evaluate").parse_args(["r", "p", "--allow_missing"])
    assert vars(a) == vars(b) and a.allow_missing is True


def test_required_options():
    "Options a command cannot work without are marked required: argparse refuses before anything runs."
    for cmd, argv, flag in [
        ("unpack", ["a.zip"], "--to"),
        ("predict", ["--data", "d", "--out", "o"], "--checkpoint"),
        ("predict", ["--checkpoint", "c", "--out", "o"], "--data"),
        ("predict-image", ["img.png", "--out", "o"], "--checkpoint"),
        ("predict-video", ["v.mp4", "--checkpoint", "c"], "--out"),
    ]:
        rc, out, err = run(cmd, *argv)
        one_line_error(rc, err, cmd, "required", flag)
        assert rc == 2
    for cmd in ("unpack", "predict", "predict-image", "predict-video"):
        h = run(cmd, "--help")[1]
        usage = h.split("\n\n")[0]
        assert all(f"[{f}" not in usage for f in ("--to ", "--checkpoint ")), (
            usage
        )  # shown as required in the usage line


def test_choices_come_from_the_registries():
    "Registry-backed flags offer exactly the registered names; a wrong one fails naming the flag and the valid names."
    from surgseg import losses, models, sampler  # noqa: F401 (they register their names)

    acts = {a.dest: a for a in parser("train")._actions}
    for key in ("loss", "sampler", "model", "class_weights", "head", "finetune"):
        assert choices(key), f"nothing registered for {key!r}"
        assert list(acts[key].choices) == choices(key), key
    assert list(acts["loss"].choices) == list(losses.LOSSES)
    rc, out, err = run("train", "--model", "nope")
    one_line_error(rc, err, "train", "--model", "invalid choice: 'nope'", "'unet'")
    rc, out, err = run("predict", "--checkpoint", "c", "--data", "d", "--out", "o", "--fill", "nope")
    one_line_error(rc, err, "predict", "--fill", "background")
    from surgseg.data import SPLITS

    assert tuple(next(a for a in parser("unpack")._actions if a.dest == "split").choices) == SPLITS
    rc, out, err = run("unpack", "a.zip", "--to", "x", "--split", "nope")
    one_line_error(rc, err, "unpack", "--split", "'train'")


def test_boolean_pairs():
    "--tta / --no-tta: on, off, or (left out) the run's config; train's booleans also take a value."
    base = ["--checkpoint", "c", "--data", "d", "--out", "o"]
    p = parser("predict")
    assert [p.parse_args(base + f).tta for f in ([], ["--tta"], ["--no-tta"], ["--no_tta"])] == [
        None,
        True,
        False,
        False,
    ]
    v = parser("predict-video")
    assert [
        v.parse_args(["x.mp4", "--checkpoint", "c", "--out", "o"] + f).overlays
        for f in ([], ["--overlays"], ["--no-overlays"])
    ] == [False, True, False]
    assert [parse_train(*f).tta for f in ([], ["--tta"], ["--no-tta"], ["--tta", "false"], ["--tta", "yes"])] == [
        False,
        True,
        False,
        False,
        True,
    ]
    assert parse_train("--augment", "off").augment is False and parse_train("--no-augment").augment is False
    rc, out, err = run("train", "--augment", "maybe")
    one_line_error(rc, err, "train", "--augment", "'maybe' is not a boolean")
    rc, out, err = run("predict", *base, "--tta", "yes")  # predict's --tta takes no value: 'yes' is not an argument
    assert rc == 2


def test_train_groups_follow_config_sections():
    "train --help: one group per Config section holding exactly its fields, each with the field's docment and default."
    from fastcore.docments import docments

    p = parser("train")
    groups = {g.title: [a.dest for a in g._group_actions] for g in p._action_groups}
    for section, names in CONFIG_SECTIONS.items():
        assert groups[section] == names, section
    assert sorted(n for ns in CONFIG_SECTIONS.values() for n in ns) == sorted(Config.field_names())
    docs = docments(Config)
    acts = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(Config):
        assert acts[f.name].help.replace("%%", "%").startswith(docs[f.name]), f.name
        assert "[default: " in acts[f.name].help, f.name
    out = run("train", "--help")[1]
    assert "\ndata:\n" in out and "\noptimisation:\n" in out and "focal loss focusing parameter" in out


@pytest.mark.parametrize(
    "argv,key",
    [
        (["--lr", "-1"], "lr"),
        (["--batch_size", "0"], "batch_size"),
        (["--resolution", "1.5"], "resolution"),
        (["--fps", "7"], "fps"),
        (["--loss", "nope"], "loss"),
        (["--epochs", "2.5"], "epochs"),
    ],
    ids=["lr", "batch_size", "resolution", "fps", "loss", "epochs"],
)
def test_wrong_value_fails_before_any_run_folder(tmp_path, argv, key):
    "A value Config (or a registry) refuses: non-zero exit, one line naming the key, and no run folder."
    out_dir, data = (
        tmp_path / "runs",
        tmp_path / "no-data",
    )  # a missing data folder: a wrongly accepted value fails fast
    rc, out, err = run("train", *argv, "--out_dir", out_dir, "--data_dir", data, "--run_name", "r")
    one_line_error(rc, err, "train", key)
    assert rc == 2
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.rglob("*"))


def test_wrong_value_in_a_real_process(tmp_path):
    "The console script: exit code 2, one line, no traceback, nothing written."
    r = subprocess.run(
        [str(SURGSEG), "train", "--lr", "-1", "--out_dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_line_error(r.returncode, r.stderr, "train", "'lr'", "> 0")
    assert not (tmp_path / "runs").exists()


def test_surgseg_error_is_one_line_exit_1(tmp_path):
    "A problem found while working (a SurgsegError): one line, exit code 1."
    rc, out, err = run("stats", tmp_path / "nope")
    one_line_error(rc, err, "stats", "nope: no such folder")
    assert rc == 1


def test_no_module_cli_wrapper_is_used():
    "The subcommands call the library directly: cli.py names no `*_cli` function of a chapter."
    import re

    src = Path(cli.__file__).read_text()
    found = re.findall(r"\b[A-Za-z_]\w*_cli\b", src)
    assert not found, found


# --- every Config field, round trip ------------------------------------------------------------------


def as_flags(cfg: Config) -> list[str]:
    "The command line that sets every field of `cfg` (alternating underscore and dash spellings)."
    argv = []
    for i, f in enumerate(dataclasses.fields(Config)):
        v, name = getattr(cfg, f.name), (f.name if i % 2 else f.name.replace("_", "-"))
        if isinstance(v, bool):
            argv.append(f"--{name}" if v else f"--no-{name}")
        elif isinstance(v, list):
            argv += [f"--{name}", *map(str, v)]
        else:
            argv += [f"--{name}", str(v)]
    return argv


def test_every_field_round_trips_through_yaml(tmp_path):
    cfg = non_default_config()
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert load_config(tmp_path / "c.yaml").to_dict() == cfg.to_dict()


def test_every_field_round_trips_through_the_cli(tmp_path):
    cfg = non_default_config()
    assert parse_train(*as_flags(cfg)) == cfg
    save_config(cfg, tmp_path / "c.yaml")  # the YAML file under no flags, and under flags
    assert parse_train("--config", tmp_path / "c.yaml") == cfg
    assert parse_train("--config", tmp_path / "c.yaml", *as_flags(Config())) == Config()


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{TRAIN_NB.name}: expected one cell tagged parameters, found {len(cells)}"
    return cells[0]


def _shown(v) -> str:
    return " ".join(map(str, v)) if isinstance(v, list) else repr(v)


def test_papermill_parameters_are_config_fields():
    """06_train's parameters: Config's names, in order, each commented with the field's docment and standing for its
    default.

    papermill cannot parse a parameter line whose comment holds "=", so a docment's " = " reads " means " there. A
    parameter may default to None ("the --config YAML's value, else Config's default"): its comment then ends with
    "(default X)", X being Config's default; otherwise its default is Config's own and the comment is the docment
    alone."""
    import papermill
    from fastcore.docments import docments

    params = papermill.inspect_notebook(str(TRAIN_NB))
    names = [n for n in params if n in Config.field_names()]
    assert names == Config.field_names(), set(Config.field_names()) ^ set(names)
    extra = [n for n in params if n not in Config.field_names()]
    assert extra == ["config", "score_untrained"], f"parameters that are not Config fields: {extra}"
    docs, d = docments(Config), Config()
    for n in names:
        doc, default, help = docs[n].replace(" = ", " means "), eval(params[n]["default"]), params[n]["help"]
        if default is None:
            assert help == f"{doc} (default {_shown(getattr(d, n))})", (n, help, doc)
        else:
            assert (default, help) == (getattr(d, n), doc), (n, default, help)


def _papermill_config(params: dict | None) -> Config:
    """The Config the chapter builds when papermill runs it with `params`: the parameters cell, the injected cell, the
    next cell."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(TRAIN_NB))  # as papermill reads it (every cell given a tags list)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{TRAIN_NB.name}: expected one cell tagged parameters, found {len(cells)}"
    i = nb.cells.index(cells[0])
    if params:
        nb = parameterize_notebook(nb, params)
        i = next(i for i, c in enumerate(nb.cells) if "injected-parameters" in c.metadata.get("tags", []))
    build = next(
        c for c in nb.cells[i + 1 :] if c.cell_type == "code"
    )  # the chapter's cell turning parameters into `cfg`
    ns = {}
    exec("from surgseg.core import *\nfrom surgseg import losses, models, sampler", ns)
    for c in [cells[0]] + ([nb.cells[i]] if params else []) + [build]:
        exec(c.source, ns)
    return ns["cfg"]


def test_every_field_round_trips_through_papermill():
    "papermill -p for every field gives back the Config; no -p at all gives Config's defaults."
    cfg = non_default_config()
    assert _papermill_config(cfg.to_dict()) == cfg
    typed = {k: " ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in cfg.to_dict().items()}
    assert _papermill_config(typed) == cfg  # every value as the text a shell's `-p key value` gives
    assert _papermill_config(None) == Config()


# --- every subcommand on a tiny dataset ---------------------------------------------------------------


def test_every_subcommand_end_to_end(tmp_path, monkeypatch):
    """synth -> validate -> extract -> stats -> train -> predict -> evaluate -> predict-image -> predict-video, in one
    process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SURGSEG_HOME", str(tmp_path / "home"))

    def ok(*argv):
        rc, out, err = run(*argv)
        assert rc == 0, (argv, out, err[-2000:])
        return out

    assert "wrote 3 videos, 9 masks (96x64, MJPG)" in ok(
        "synth",
        "data",
        "--n_train",
        2,
        "--n_test",
        1,
        "--seconds",
        2,
        "--width",
        96,
        "--height",
        64,
        "--split-ops",
        0,
        "--workers",
        1,
    )
    assert "OK: 3 videos (train: 2, test: 1), 9 masks" in ok("validate", "data", "--workers", 1)
    assert "9 frames written, 0 already there" in ok("extract", "data", "--workers", 1)
    assert "9 masks in 3 videos" in ok("stats", "data", "--workers", 1)
    out = ok(
        "train",
        "--data_dir",
        "data",
        "--out_dir",
        "runs",
        "--run_name",
        "r",
        "--model",
        "unet",
        "--encoder",
        "resnet18",
        "--weights",
        "none",
        "--epochs",
        1,
        "--max_steps",
        1,
        "--batch-size",
        1,
        "--no-augment",
        "--log_with",
        "none",
    )
    run_r = Path.cwd() / "runs" / "r"  # an explicit relative out_dir: from the working folder, printed absolute
    assert out.splitlines()[-1].startswith(f"run folder: {run_r}; best validation score "), out  # last, after tuning
    assert ("decisions tuned on" in out) == Path("runs/r/decisions.json").is_file() and "decisions" in out, (
        out
    )  # the default recipe
    rc, out, err = run(
        "train",
        "--data_dir",
        "data",
        "--out_dir",
        "runs",
        "--run_name",
        "r",
        "--model",
        "unet",
        "--encoder",
        "resnet18",
        "--weights",
        "none",
        "--epochs",
        1,
        "--max_steps",
        1,
        "--batch-size",
        1,
        "--no-augment",
        "--log_with",
        "none",
        "--resume",
    )
    assert rc == 0 and f"resuming {run_r} from {run_r}/last" in err, err[
        -2000:
    ]  # the library's log line, shown by the CLI
    out = ok(
        "train",
        "--data_dir",
        "data",
        "--run_name",
        "r",
        "--model",
        "unet",
        "--encoder",
        "resnet18",
        "--weights",
        "none",
        "--epochs",
        1,
        "--max_steps",
        1,
        "--batch-size",
        1,
        "--no-augment",
        "--log_with",
        "none",
        "--no-decisions",
    )
    assert out.splitlines()[-1].startswith(f"run folder: {tmp_path / 'home' / 'runs' / 'r'}; "), out  # the run store
    assert "wrote 3 masks of 1 videos to pred" in ok(
        "predict", "--checkpoint", "runs/r", "--data", "data/test", "--out", "pred", "--no-tta", "--min_area", 16
    )
    assert "segmentation score" in ok("evaluate", "data/test", "pred", "--workers", 1)
    assert len(list(Path("pred").glob("*.csv"))) >= 6
    rgb = next(Path("data/test").glob("video_*/rgb"))
    assert "wrote 3 masks and overlays to img" in ok(
        "predict-image", rgb, "--checkpoint", "runs/r", "--out", "img", "--tta"
    )
    video = next(Path("data/test").glob("video_*/video_left.avi"))
    assert "masks and vid/video_left_overlay.mp4" in ok(
        "predict-video", video, "--checkpoint", "runs/r", "--out", "vid", "--every", 30, "--no-overlays"
    )
    assert sorted(p.name for p in Path("vid").iterdir()) == ["masks", "video_left_overlay.mp4"]
    assert "wrote 2 masks and vid2/video_left_overlay.mp4" in ok(
        "predict-video",
        video,
        "--checkpoint",
        "runs/r",
        "--out",
        "vid2",
        "--every",
        30,
        "--end",
        1,
        "--smooth",
        0.5,
        "--no-overlays",
        "--no-legend",
    )  # frames 0 and 30 of the first second
    rc, out, err = run("predict-video", video, "--checkpoint", "runs/r", "--out", "vid3", "--smooth", 1)
    one_line_error(rc, err, "predict-video", "argument --smooth: 1 is out of range", "[0, 1)")
    assert rc == 2 and not Path("vid3").exists()


# --- the command lines the book and the README show ---------------------------------------------------


def documented_command_lines() -> list[tuple[str, str]]:
    """(where, command line) of every inline-code `surgseg CMD ARGS` in the README and the notebooks' prose, but those
    with placeholders."""
    import json, re

    texts = [("README.md", (ROOT / "README.md").read_text())]
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        texts += [
            (nb.name, "".join(c["source"])) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown"
        ]
    found = []
    for where, text in texts:
        for line in re.findall(r"`(surgseg [a-z][a-z-]* [^`]+)`", text):  # a subcommand with arguments
            if not re.search(r"[\[\]<>|]|\.\.\.|\$\(", line):
                found.append((where, line))
    return found


def test_documented_command_lines_parse():
    "Every command line the README and the book show is accepted by today's parsers (a renamed flag fails here)."
    import shlex

    lines = documented_command_lines()
    assert len(lines) >= 8, lines
    for where, line in lines:
        cmd, *argv = shlex.split(line)[1:]
        assert cmd in COMMANDS, (where, line)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                parser(cmd).parse_args(argv)
            except SystemExit:
                raise AssertionError(f"{where}: `{line}`: {err.getvalue().strip()}") from None


# --- export and the onnxruntime backend ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(ws):
    """tests/conftest.py's `ws` (a tiny dataset and a one-step U-Net run): (the folder holding data/ and runs/r, the
    run)."""
    return ws, ws / "runs" / "r"


def test_export_flags_parse():
    "export: --format onnx is the default and the only choice; booleans are pairs in both spellings."
    p = parser("export")
    a = p.parse_args(["runs/r"])
    assert (a.run, a.format, a.out, a.opset, a.dynamo, a.merge_lora, a.overwrite, a.threads) == (
        "runs/r",
        "onnx",
        None,
        18,
        False,
        True,
        False,
        None,
    )
    b = p.parse_args(
        [
            "runs/r",
            "--format",
            "onnx",
            "--opset",
            "17",
            "--dynamo",
            "--no-merge-lora",
            "--overwrite",
            "--threads",
            "2",
            "--out",
            "m.onnx",
        ]
    )
    assert (b.opset, b.dynamo, b.merge_lora, b.overwrite, b.threads, b.out) == (17, True, False, True, 2, "m.onnx")
    assert p.parse_args(["r", "--no_merge_lora"]).merge_lora is False and p.parse_args(["r", "--merge-lora"]).merge_lora
    rc, out, err = run("export", "runs/r", "--format", "tflite")
    one_line_error(rc, err, "export", "--format", "'onnx'")
    for cmd, argv in [
        ("predict", ["--data", "d", "--out", "o"]),
        ("predict-image", ["i.png", "--out", "o"]),
        ("predict-video", ["v.mp4", "--out", "o"]),
    ]:
        q = parser(cmd)
        assert q.parse_args(argv + ["--checkpoint", "c"]).backend == "torch"
        a = q.parse_args(argv + ["--checkpoint", "c", "--backend", "onnxruntime", "--threads", "3"])
        assert (a.backend, a.threads) == ("onnxruntime", 3)
    rc, out, err = run("predict-image", "i.png", "--out", "o", "--checkpoint", "c", "--backend", "tensorrt")
    one_line_error(rc, err, "predict-image", "--backend", "'onnxruntime'")


def test_predict_video_streaming_flags_parse():
    a = parser("predict-video").parse_args(["v.mp4", "--out", "o", "--checkpoint", "c"])
    assert (a.start, a.end, a.masks, a.overlay_video, a.legend, a.smooth, a.smooth_centred) == (
        0.0,
        None,
        True,
        True,
        True,
        0.0,
        False,
    )
    a = parser("predict-video").parse_args(
        [
            "v.mp4",
            "--out",
            "o",
            "--checkpoint",
            "c",
            "--start",
            "1.5",
            "--end",
            "3",
            "--no-masks",
            "--no-overlay-video",
            "--no_legend",
            "--smooth",
            "0.6",
            "--smooth-centred",
        ]
    )
    assert (a.start, a.end, a.masks, a.overlay_video, a.legend, a.smooth, a.smooth_centred) == (
        1.5,
        3.0,
        False,
        False,
        False,
        0.6,
        True,
    )


def test_export_then_onnxruntime_predictions(tiny_run, tmp_path):
    "export writes RUN/export/model.onnx + manifest and refuses a second time; onnxruntime's masks are torch's."
    import json
    from surgseg.core import read_mask

    d, r = tiny_run
    rc, out, err = run("export", r, "--format", "onnx", "--threads", 1)
    assert rc == 0, (out, err[-2000:])
    assert (r / "export" / "model.onnx").is_file() and "model.onnx: unet opset 18 (torchscript)" in out, out
    man = json.loads((r / "export" / "model.json").read_text())
    assert man["format"] == "onnx" and man["parity"]["within_atol"], man["parity"]
    before = (r / "export" / "model.onnx").stat().st_mtime_ns
    rc, out, err = run("export", r)
    one_line_error(rc, err, "export", "model.onnx", "already exists", "--overwrite")
    assert rc == 1 and (r / "export" / "model.onnx").stat().st_mtime_ns == before
    rgb = next((d / "data" / "test").glob("video_*/rgb"))
    masks = {}
    for backend in ("torch", "onnxruntime"):
        o = tmp_path / backend
        rc, out, err = run(
            "predict-image",
            rgb,
            "--checkpoint",
            r,
            "--out",
            o,
            "--backend",
            backend,
            "--no-tta",
            "--min_area",
            0,
            "--device",
            "cpu",
            *(["--threads", 1] if backend == "onnxruntime" else []),
        )
        assert rc == 0 and "wrote 3 masks and overlays" in out, (backend, out, err[-2000:])
        masks[backend] = {f.name: read_mask(f) for f in sorted((o / "masks").glob("*.png"))}
    assert len(masks["torch"]) == 3 and masks["torch"].keys() == masks["onnxruntime"].keys()
    differ = sum(int((masks["torch"][k] != masks["onnxruntime"][k]).sum()) for k in masks["torch"])
    total = sum(m.size for m in masks["torch"].values())
    assert differ <= total * 1e-3, f"{differ} of {total} mask pixels differ between torch and onnxruntime"
    rc, out, err = run("predict-image", rgb, "--checkpoint", r, "--out", tmp_path / "t", "--threads", 2)
    one_line_error(rc, err, "predict-image", "--threads", "onnxruntime")
    assert rc == 2


def test_predict_decisions_flag(tiny_run, tmp_path):
    """--decisions run applies RUN/decisions.json (a bad one is one line naming it); off ignores it; hashes show they
    differ."""
    import hashlib

    d, r = tiny_run
    dec = r / "decisions.json"
    assert not dec.exists()

    def masks(out):
        return {
            p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.png"))
        }

    try:
        dec.write_text("{not json")
        rc, out, err = run("predict", "--data", d / "data" / "test", "--out", tmp_path / "bad", "--checkpoint", r)
        assert rc == 1 and len(err.strip().splitlines()) == 1 and "decisions.json" in err, (rc, err)
        assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
        rc, out, err = run(
            "predict", "--data", d / "data" / "test", "--out", tmp_path / "off", "--checkpoint", r, "--decisions", "off"
        )
        assert rc == 0, err
        dec.unlink()
        rc, out, err = run("predict", "--data", d / "data" / "test", "--out", tmp_path / "none", "--checkpoint", r)
        assert rc == 0, err
        assert masks(tmp_path / "off") == masks(tmp_path / "none")  # off: exactly the raw model
        rc, out, err = run("predict", "--data", "x", "--out", "y", "--checkpoint", r, "--decisions", "sometimes")
        one_line_error(rc, err, "predict", "--decisions", "'off'")
    finally:
        if dec.exists():
            dec.unlink()
