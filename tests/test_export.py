"""Tests of surgseg.export: ONNX export with dynamic shapes, parity with PyTorch (<= 1e-4 in float32), the manifest,
never overwriting, and the exported model behind `Predictor` giving the same masks (tiny models, tiny frames)."""

import json

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from surgseg.core import Config, SurgsegError
from surgseg.export import (
    EXPORT_DIR,
    ONNX_FILE,
    OnnxSegmenter,
    export_onnx,
    export_ready,
    export_summary,
    load_onnx,
    onnx_predictor,
    sample_frames,
)
from surgseg.inference import Predictor, predict_video
from surgseg.models import build_model, save_model

UNET = Config(model="unet", encoder="resnet18", weights="none", resolution=0.5)
TINY = Config(model="dinov3", dinov3="tiny", weights="none", finetune="lora", lora_targets=["q_proj", "v_proj"])


def lora_model():
    "The tiny DINOv3 with non-zero LoRA adapters (peft starts them at zero, which would hide a merging error)."
    set_seed(0)
    m = build_model(TINY, pretrained=False).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return m


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "A tiny synthetic dataset (its test frames feed the parity check) and an untrained U-Net saved as a run."
    from surgseg.synthetic import generate

    tmp = tmp_path_factory.mktemp("export")
    root = generate(tmp / "data", n_train=2, n_test=1, seconds=2, size=(64, 96), workers=1)
    frames, where = sample_frames(3, root)
    set_seed(0)
    save_model(build_model(UNET), UNET.update(data_dir=str(root)), tmp / "run" / "best")
    return dict(tmp=tmp, root=root, run=tmp / "run", frames=frames, where=where)


@pytest.fixture(scope="module")
def unet_export(env):
    return export_onnx(env["run"], frames=env["frames"], threads=1)


def test_sample_frames_are_real_when_a_dataset_exists(env, tmp_path):
    assert "annotated frames" in env["where"] and len(env["frames"]) == 3
    assert env["frames"][0].shape == (64, 96, 3) and env["frames"][0].std() > 5
    rnd, where = sample_frames(2, tmp_path)  # an empty folder: random frames, said so
    assert "random" in where and len(rnd) == 2


def test_unet_export_parity_and_manifest(env, unet_export):
    out = env["run"] / EXPORT_DIR / ONNX_FILE
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.onnx"]
    man = json.loads(out.with_suffix(".json").read_text())
    assert man == json.loads(json.dumps(unet_export))
    p = man["parity"]
    assert p["max_abs"] <= 1e-4 and p["within_atol"], p
    assert [c["input"] for c in p["checks"]] == [
        "3x3x32x48",
        "1x3x45x77",
    ]  # working size batch 3, then batch 1 at an odd size
    print(f"unet parity: max |logit diff| {p['max_abs']:.2e}, argmax differing pixels {p['argmax_diff']}")
    f64 = p["float64"]  # both backends measured against float64 logits: onnxruntime is as exact as PyTorch's float32
    assert set(f64) == {"torch", "onnxruntime"} and 0 <= f64["onnxruntime"] <= 1e-4 and 0 <= f64["torch"] <= 1e-4, f64
    assert all(c["onnx_vs_f64"] <= f64["onnxruntime"] for c in p["checks"])
    assert "from float64 logits: PyTorch" in export_summary(man)
    assert man["input"]["shape"] == ["batch", 3, "height", "width"] and man["opset"] == 18
    m = OnnxSegmenter(out, threads=1)
    assert m.input_shape[0] == "batch" and m.input_shape[2:] == ["height", "width"]


def test_export_never_overwrites_silently(env, unet_export, tmp_path):
    with pytest.raises(SurgsegError, match="refusing to overwrite"):
        export_onnx(env["run"], frames=env["frames"])
    user = tmp_path / "mine.onnx"
    user.write_text("a user's file")
    model, cfg = build_model(UNET).eval(), UNET
    with pytest.raises(SurgsegError, match="mine.onnx: already exists"):
        export_onnx((model, cfg), user, frames=env["frames"])
    assert user.read_text() == "a user's file"
    man = export_onnx((model, cfg), user, frames=env["frames"], overwrite=True, threads=1)
    assert man["parity"]["within_atol"] and user.stat().st_size > 1000
    with pytest.raises(SurgsegError, match="pass `out`"):
        export_onnx((model, cfg), frames=env["frames"])
    with pytest.raises(SurgsegError, match="must end in .onnx"):
        export_onnx((model, cfg), tmp_path / "x.pt", frames=env["frames"])


class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("cannot trace this")


def test_failed_export_leaves_nothing(env, tmp_path):
    with pytest.raises(SurgsegError, match="export of 'unet' failed .*cannot trace this"):
        export_onnx((Broken(), UNET), tmp_path / "b" / "model.onnx", frames=env["frames"])
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize("merge", [True, False])
def test_dinov3_lora_exports_merged_and_unmerged(env, tmp_path, merge):
    m = lora_model()
    man = export_onnx((m, TINY), tmp_path / "d.onnx", frames=env["frames"], merge_lora=merge, threads=1)
    assert man["lora_merged"] == merge and man["parity"]["max_abs"] <= 1e-4, man["parity"]
    print(f"dinov3 tiny lora merged={merge}: max |logit diff| {man['parity']['max_abs']:.2e}")


def test_merge_changes_nothing_but_the_adapters():
    m = lora_model()
    merged = export_ready(m)
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        assert (m(x) - merged(x)).abs().max() < 1e-4
    assert any("lora" in n for n, _ in m.named_parameters()) and not any(
        "lora" in n for n, _ in merged.named_parameters()
    )


def test_load_onnx_and_errors(env, unet_export, tmp_path):
    model, cfg = load_onnx(env["run"], threads=1)
    assert cfg.model == "unet" and cfg.encoder == "resnet18" and cfg.data_dir == str(env["root"])
    assert load_onnx(env["run"] / "best")[0].path == model.path == load_onnx(model.path)[0].path
    with pytest.raises(SurgsegError, match="no such ONNX file"):
        load_onnx(tmp_path / "missing")
    with pytest.raises(SurgsegError, match="no exported model"):
        load_onnx(tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(SurgsegError, match="bad.onnx: not a loadable ONNX model"):
        load_onnx(tmp_path / "bad.onnx")
    with pytest.raises(SurgsegError, match="expected float images"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_predictor_same_masks_on_a_video(env, unet_export, tmp_path):
    "predict_video with the exported model (unchanged Predictor) writes the same masks as with PyTorch."
    video = next(env["root"].glob("test/video_*/video_left.avi"))
    from surgseg.runs import load_checkpoint

    model, cfg, _ = load_checkpoint(env["run"])
    predict_video(Predictor(model, cfg, device="cpu"), video, tmp_path / "pt", every=10, overlays=False, progress=False)
    predict_video(
        onnx_predictor(env["run"], threads=1), video, tmp_path / "ox", every=10, overlays=False, progress=False
    )
    a, b = sorted((tmp_path / "pt" / "masks").glob("*.png")), sorted((tmp_path / "ox" / "masks").glob("*.png"))
    assert [p.name for p in a] == [p.name for p in b] and len(a) >= 5
    from surgseg.core import read_mask

    diff = sum(int((read_mask(p) != read_mask(q)).sum()) for p, q in zip(a, b))
    print(f"differing mask pixels over {len(a)} frames: {diff}")
    assert diff == 0


def test_onnx_predictor_applies_post_processing(env, unet_export):
    p = onnx_predictor(env["run"], threads=1, min_area=5)
    assert p.postprocess is not None and p.device.type == "cpu"
    masks = p.predict_batch(env["frames"])
    assert all(m.shape == (64, 96) and m.dtype == np.uint8 for m in masks)
    with pytest.raises(SurgsegError, match="fill 'x'"):
        onnx_predictor(env["run"], fill="x")


def test_dynamo_exporter_on_tiny_dinov3(env, tmp_path):
    m = lora_model()
    man = export_onnx((m, TINY), tmp_path / "dyn.onnx", frames=env["frames"], dynamo=True, threads=1)
    assert man["exporter"] == "dynamo" and man["parity"]["max_abs"] <= 1e-4, man["parity"]
