"""The shared core API under real processes: locks, atomic folders and SIGKILL, the parallel map, and Config on every
entry."""

import json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import non_default_config  # every Config field changed (tests/conftest.py)
from surgseg.core import (
    CONFIG_SECTIONS,
    Config,
    SurgsegError,
    atomic_folder,
    atomic_write,
    choices,
    clean_partials,
    load_config,
    output_lock,
    parallel_map,
    parse_bool,
    read_mask,
    register_choices,
    save_config,
)

PY = sys.executable


def hold(code: str, ready: Path) -> subprocess.Popen:
    "Start a Python child that runs `code` (which touches `ready` when it is in position) and wait until it is."
    p = subprocess.Popen([PY, "-c", code])
    for _ in range(600):
        if ready.exists():
            return p
        if p.poll() is not None:
            raise AssertionError(f"child exited early with {p.returncode}")
        time.sleep(0.05)
    p.kill()
    raise AssertionError("child never got ready")


def test_lock_names_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    out, ready = tmp_path / "run", tmp_path / "ready"
    child = hold(
        f"from surgseg.core import output_lock; import time, pathlib\n"
        f"with output_lock({str(out)!r}): pathlib.Path({str(ready)!r}).touch(); time.sleep(60)",
        ready,
    )
    try:
        with pytest.raises(SurgsegError) as e:
            with output_lock(out):
                pass
        msg = str(e.value)
        assert msg.startswith(f"{out}: in use by pid {child.pid} on {socket.gethostname()} since ") and "\n" not in msg
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert json.loads((tmp_path / ".run.lock").read_text())["pid"] == child.pid  # a killed holder cannot release it
    with output_lock(out) as lk:  # stale: taken over
        assert json.loads(lk.read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".run.lock").exists()


def test_atomic_folder_survives_sigkill(tmp_path):
    out, ready = tmp_path / "pred", tmp_path / "ready"
    child = hold(
        f"from surgseg.core import atomic_folder; import time, pathlib\n"
        f"with atomic_folder({str(out)!r}) as t:\n"
        f"    (t / 'a.png').write_bytes(b'x' * 1000); pathlib.Path({str(ready)!r}).touch(); time.sleep(60)",
        ready,
    )
    child.send_signal(signal.SIGKILL)
    child.wait()
    ready.unlink()
    assert not out.exists()  # nothing where a user looks
    assert [p.name.endswith(".partial") for p in tmp_path.iterdir()] == [True]  # a hidden leftover
    with atomic_folder(out) as t:
        (t / "a.png").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # the rerun cleaned it up
    assert (out / "a.png").read_bytes() == b"y"


def test_atomic_folder_replace_keeps_old_until_new_is_complete(tmp_path):
    out = tmp_path / "best"
    with atomic_folder(out) as t:
        (t / "w").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out, replace=True) as t:
            (t / "w").write_text("new")
            raise RuntimeError
    assert (out / "w").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    out.rename(tmp_path / ".best.old")  # killed between the two renames of a swap
    clean_partials(tmp_path)
    assert (out / "w").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    with atomic_folder(out, replace=True) as t:
        (t / "w").write_text("new")
    assert (out / "w").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_atomic_write_leftover_of_a_killed_writer_is_cleaned(tmp_path):
    code = (
        f"from surgseg.core import atomic_write; import os, signal\n"
        f"with atomic_write({str(tmp_path / 'table.csv')!r}) as t: "
        "t.write_text('half'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    assert subprocess.run([PY, "-c", code]).returncode == -signal.SIGKILL
    assert len(list(tmp_path.iterdir())) == 1 and not (tmp_path / "table.csv").exists()
    with atomic_write(tmp_path / "mine.csv") as t:  # a live writer's temporary file stays
        t.write_text("x")
        assert [p.name for p in clean_partials(tmp_path, "table.csv")] and t.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv"]


def test_parallel_map_order_errors_and_workers(tmp_path):
    m = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    paths = []
    for i in range(40):
        p = tmp_path / f"{i}.png"
        if i % 7:
            Image.fromarray((m + i % 3) % 10).save(p)
        paths.append(str(p))
    res = parallel_map(read_mask, paths, workers=2, errors="return", progress=False)
    assert [isinstance(r, SurgsegError) for r in res] == [i % 7 == 0 for i in range(40)]
    assert all(int(r[0, 0]) == i % 3 for i, r in enumerate(res) if i % 7)  # in order
    assert str(res[7]) == f"{paths[7]}: mask file is missing"
    with pytest.raises(SurgsegError, match="0.png: mask file is missing"):
        parallel_map(read_mask, paths, workers=2, progress=False)


def test_read_mask_follows_the_toolkit(tmp_path):
    m = np.random.default_rng(0).integers(0, 10, (5, 7)).astype(np.uint8)
    Image.fromarray(np.stack([m] * 3, -1)).save(tmp_path / "grey_in_rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_in_rgb.png", (5, 7), rgb_ok=True), m)
    with pytest.raises(SurgsegError, match="an RGB image; masks must be 8-bit single-channel"):
        read_mask(tmp_path / "grey_in_rgb.png")
    rgb = np.stack([m, m, (m + 1) % 10], -1)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(
        SurgsegError,
        match="colour.png: a colour image whose channels differ: the official toolkit would score its blue channel",
    ):
        read_mask(tmp_path / "colour.png", rgb_ok=True)


def test_parse_bool():
    assert [parse_bool(s) for s in ("yes", "OFF", "1", "False", True, 0)] == [True, False, True, False, True, False]
    with pytest.raises(SurgsegError, match="--tta: 'si' is not a boolean"):
        parse_bool("si", "--tta")


def test_every_field_round_trips_through_yaml_and_strings(tmp_path):
    cfg = non_default_config()  # every field differs from its default (checked there)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    as_text = {
        k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in cfg.to_dict().items()
    }  # as a CLI hands them over
    assert Config().update(as_text) == cfg
    assert [k for ks in CONFIG_SECTIONS.values() for k in ks] == Config.field_names()


@pytest.mark.parametrize(
    "key,value,says",
    [
        ("lr", -1, "must be > 0"),
        ("backbone_lr", 0, "must be > 0"),
        ("batch_size", 0, "must be >= 1"),
        ("resolution", 1.5, "must be in (0, 1]"),
        ("resolution", 0, "must be in (0, 1]"),
        ("fps", 7, "must be a divisor of 60"),
        ("precision", "fp32", "must be one of no, bf16, fp16"),
        ("epochs", 0, "must be >= 1"),
        ("grad_accum", 0, "must be >= 1"),
        ("num_workers", -1, "must be >= 0"),
        ("val_fraction", 1.0, "must be in [0, 1)"),
        ("warmup", 1.0, "must be in [0, 1)"),
        ("max_weight", 0.5, "must be >= 1"),
        ("min_pixels", 0, "must be >= 1"),
        ("seed", -1, "must be in [0, 2**32)"),
        ("lora_dropout", 1.0, "must be in [0, 1)"),
        ("focal_alpha", 2, "or < 0 for off"),
        ("ignore_index", 5, "not a class id"),
        ("pos_embed_rescale", 0.5, "or 0 for off"),
        ("min_area", "1,2,3", "one integer or 9"),
        ("crop_size", "1,2,3", "one integer or 2 (height and width)"),
        ("crop_size", -1, "or 0 for whole frames"),
        ("crop_size", "0,64", "pixels >= 1"),
        ("crop_rare", 1.5, "must be in [0, 1]"),
        ("crop_rare", -0.1, "must be in [0, 1]"),
        ("crop_weights", "inverse", "must be one of equal, rarity"),
        ("log_with", "mlflow", "tensorboard, wandb, none"),
        ("epochs", "two", "is not a number"),
        ("batch_size", 2.5, "is not an integer"),
        ("augment", "perhaps", "is not a boolean"),
    ],
)
def test_config_refuses_nonsense_on_every_entry(tmp_path, key, value, says):
    for make in (lambda: Config(**{key: value}), lambda: Config().update({key: str(value)})):
        with pytest.raises(SurgsegError) as e:
            make()
        assert f"config key {key!r}" in str(e.value) and says in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "c.yaml").write_text(f"{key}: {value}\n")
    with pytest.raises(SurgsegError, match=f"c.yaml: config key '{key}'"):
        load_config(tmp_path / "c.yaml")


def test_registered_names_are_checked():
    register_choices("finetune", ["frozen", "lora", "full"])  # what surgseg.models does at import
    with pytest.raises(
        SurgsegError, match="config key 'finetune': 'lorra' is not a finetune; choose from frozen, lora, full"
    ):
        Config(finetune="lorra")
    assert choices("finetune")[:3] == ["frozen", "lora", "full"]


def test_yaml_duplicate_key_names_file_key_and_line(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("loss: dice_ce\nepochs: 3\n# comment\nloss: focal_ce\n")
    with pytest.raises(SurgsegError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: duplicate key 'loss' on line 4 (first on line 1)"


def _children(pid: int) -> list[int]:
    "Pids of the live processes whose parent is `pid` (Linux /proc)."
    out = []
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = st.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == pid and f[0] != "Z":
            out.append(int(st.parent.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pool_workers_die_with_a_killed_parent():
    "A run killed with SIGKILL leaves no pool worker behind, still writing into its output."
    p = subprocess.Popen(
        [
            PY,
            "-c",
            "import time; from surgseg.core import parallel_map\n"
            "parallel_map(time.sleep, [30, 30, 30], workers=2, progress=False)",
        ]
    )
    try:
        for _ in range(600):
            workers = [k for k in _children(p.pid) if b"spawn_main" in _cmdline(k)]
            if len(workers) >= 2:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # the workers are past their start-up (the death signal is set there)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert len(workers) >= 2
    for _ in range(100):
        alive = [
            k
            for k in workers
            if Path(f"/proc/{k}").exists()
            and "Z" not in Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0]
        ]
        if not alive:
            break
        time.sleep(0.05)
    assert alive == []
