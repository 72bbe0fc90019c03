"""Cross-checks of surgseg.models beyond the notebook: every model family at awkward sizes, save/load of every DINOv3
mode, unsafe files, the bench scripts."""

import importlib.util, pickle
from pathlib import Path

import pytest
import torch

from surgseg.core import Config, SurgsegError, NUM_CLASSES
from surgseg.models import (
    DINOV3_SIZES,
    FINETUNE,
    HEADS,
    build_model,
    dinov3_config,
    load_model,
    param_counts,
    param_groups,
    read_tensors,
    save_model,
)

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dinov3(tmp_path_factory):
    "A tiny random DINOv3 saved with save_pretrained: the local-folder path of real checkpoints."
    from transformers import DINOv3ViTModel

    d = tmp_path_factory.mktemp("dinov3_tiny")
    torch.manual_seed(0)
    DINOv3ViTModel(dinov3_config("tiny")).save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("arch", ["unet", "fpn", "deeplabv3plus", "segformer"])
@pytest.mark.parametrize("hw", [(1, 1), (33, 65), (17, 250)])
def test_smp_any_size(arch, hw):
    m = build_model(Config(model=arch, weights="none")).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 3, *hw))
    assert y.shape == (2, NUM_CLASSES, *hw) and torch.isfinite(y).all()


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("hw", [(1, 1), (16, 16), (31, 47)])
def test_dinov3_any_size(tiny_dinov3, head, hw):
    m = build_model(Config(model="dinov3", dinov3=tiny_dinov3, head=head)).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, *hw)).shape == (1, NUM_CLASSES, *hw)


@pytest.mark.parametrize("mode", FINETUNE)
@pytest.mark.parametrize("head", list(HEADS))
def test_dinov3_roundtrip(tiny_dinov3, tmp_path, mode, head):
    cfg = Config(
        model="dinov3", dinov3=tiny_dinov3, finetune=mode, head=head, lora_targets=["q_proj", "v_proj", "up_proj"]
    )
    torch.manual_seed(1)
    m = build_model(cfg)
    with torch.no_grad():  # move every trainable tensor (LoRA B starts at zero) so a lost tensor would show
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    m.eval()
    save_model(m, cfg, tmp_path)
    m2, cfg2 = load_model(tmp_path)
    x = torch.rand(2, 3, 40, 72)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert cfg2 == cfg and param_counts(m2) == param_counts(m)
    assert [g["name"] for g in param_groups(m2, cfg2)] == (["head"] if mode == "frozen" else ["backbone", "head"])


def test_smp_roundtrip_and_checkpointing(tmp_path):
    cfg = Config(model="fpn", grad_checkpointing=True)
    m = build_model(cfg)
    assert m.net.encoder.model.grad_checkpointing
    x = torch.rand(2, 3, 64, 96)
    m.train()
    y = m(x)
    y.mean().backward()  # checkpointed encoder trains
    assert m.net.encoder.model.conv_stem.weight.grad is not None
    m.eval()
    save_model(m, cfg, tmp_path / "fpn")
    m2, _ = load_model(tmp_path / "fpn")
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    groups = {g["name"]: g["lr"] for g in param_groups(m, cfg)}
    assert groups == {"backbone": cfg.backbone_lr, "head": cfg.lr}


def test_checkpointing_unsupported_warns():
    with pytest.warns(UserWarning, match="does not support gradient checkpointing"):
        build_model(Config(encoder="resnet18", weights="none", grad_checkpointing=True))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_never_unpickle(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv_stem.weight": _Evil(marker)}, f)
    with pytest.raises(SurgsegError, match="evil.pth: unreadable weights"):
        read_tensors(tmp_path / "evil.pth")
    with pytest.raises(SurgsegError, match="evil.pth: unreadable weights"):
        build_model(Config(weights=str(tmp_path / "evil.pth")))
    assert not marker.exists()


def test_bad_saved_folders(tmp_path, tiny_dinov3):
    cfg = Config(model="dinov3", dinov3=tiny_dinov3)
    save_model(build_model(cfg), cfg, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SurgsegError, match="model.safetensors: cannot load"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "backbone_config.json").unlink()
    with pytest.raises(SurgsegError, match="backbone_config.json: missing"):
        load_model(tmp_path / "m")
    (tmp_path / "folder").mkdir()
    with pytest.raises(SurgsegError, match="config.json: missing"):
        build_model(Config(model="dinov3", dinov3=str(tmp_path / "folder")))
    (tmp_path / "folder" / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(SurgsegError, match="model_type 'vit'"):
        build_model(Config(model="dinov3", dinov3=str(tmp_path / "folder")))


def test_dinov3_config_errors(tiny_dinov3):
    with pytest.raises(SurgsegError, match="weights come from `dinov3`"):
        build_model(Config(model="dinov3", dinov3=tiny_dinov3, weights="some.pth"))
    # names are checked by Config against the registries this module registers
    with pytest.raises(
        SurgsegError, match="config key 'finetune': 'partial' is not a finetune.*choose from frozen, lora, full"
    ):
        Config(model="dinov3", dinov3=tiny_dinov3, finetune="partial")
    with pytest.raises(SurgsegError, match="config key 'head': 'unet' is not a head.*choose from mlp, multilayer"):
        Config(model="dinov3", dinov3=tiny_dinov3, head="unet")
    with pytest.raises(SurgsegError, match="'mask2former' is not a model.*choose from unet, "):
        Config(model="mask2former")
    m = build_model(Config(model="dinov3", dinov3="tiny", weights="none"))  # a size name: random weights, no files
    assert m.backbone.get_base_model().config.hidden_size == DINOV3_SIZES["tiny"][0]


def test_frozen_backbone_stores_no_graph(tiny_dinov3):
    "A frozen backbone runs without autograd: its output tokens carry no grad_fn, so no activations are kept."
    m = build_model(Config(model="dinov3", dinov3=tiny_dinov3, finetune="frozen")).train()
    seen = []
    m.backbone.norm.register_forward_hook(lambda mod, inp, out: seen.append(out.requires_grad))
    m(torch.rand(1, 3, 32, 32)).mean().backward()
    assert seen == [False]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_scripts_run(capsys):
    assert _script("dinov3_gpu").main(["--smoke", "--modes", "lora", "--head", "mlp"]) == 0
    assert _script("models").main(["--size", "32", "48", "--steps", "1", "--batch", "1", "--only", "U-Net"]) == 0
    out = capsys.readouterr().out
    assert "tiny    lora" in out and "U-Net / Lite0 (default)" in out


@pytest.mark.parametrize(
    "encoder,weights", [("resnet18", "imagenet"), ("tu-resnet18", "a1_in1k"), ("tu-tf_efficientnet_lite0", "imagenet")]
)
def test_hub_weights_offline_fail_with_the_clear_message(encoder, weights, tmp_path):
    """--weights imagenet (or a timm tag) goes through smp/timm's hub cache; offline (nothing cached) it fails in one
    line saying what to do."""
    import os, subprocess, sys

    code = (
        f"from surgseg.core import Config, SurgsegError\nfrom surgseg.models import build_model\n"
        f"try: build_model(Config(encoder={encoder!r}, weights={weights!r}))\nexcept SurgsegError as e: print(e)"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
    }  # an empty cache
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    msg = r.stdout.strip()
    assert r.returncode == 0 and len(msg.splitlines()) == 1, r.stderr[-2000:]
    assert msg.startswith(f"encoder {encoder!r}: cannot fetch {weights!r} weights through the smp/timm hub cache (")
    assert f"--weights weights/{encoder}" in msg and "--weights none" in msg


def test_full_res_masks_is_the_prediction_path():
    "full_res_masks upsamples logits (not class maps) one frame at a time; top2 gives the runner-up."
    from surgseg.models import full_res_masks

    torch.manual_seed(0)
    logits = torch.randn(3, NUM_CLASSES, 9, 16)
    best, second = full_res_masks(logits, (27, 48), top2=True)
    ref = torch.nn.functional.interpolate(logits, size=(27, 48), mode="bilinear", align_corners=False)
    assert (best == ref.argmax(1).numpy()).all()
    assert (second == ref.topk(2, dim=1).indices[:, 1].numpy()).all() and (best != second).all()
