"""Meta-layout DINOv3 checkpoints (surgseg.models.load_meta_dinov3): exact round trips, one-line refusals, a CLI
training step."""

import os, subprocess, sys, warnings
from pathlib import Path

import pytest
import torch

from surgseg.core import Config, SurgsegError, load_config
from surgseg.models import (
    DINOV3_RELEASES,
    build_model,
    dinov3_config,
    load_dinov3_backbone,
    load_meta_dinov3,
    meta_dinov3_config,
    to_meta_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
torch.set_num_threads(1)

VARIANTS = {  # id -> (file name, DINOv3ViTConfig fields, what the loader must find)
    "registers_masked_key_bias": ("vit_lvd1689m.pth", dict(num_register_tokens=4, key_bias=False, layer_norm_eps=1e-5)),
    "no_registers_key_bias": ("vit_SurgeNetXL.pth", dict(num_register_tokens=0, key_bias=True, layer_norm_eps=1e-6)),
    "registers_key_bias": ("vit_regs.pth", dict(num_register_tokens=2, key_bias=True, layer_norm_eps=1e-6)),
    "no_registers_masked_key_bias": ("vit_plain.pth", dict(num_register_tokens=0, key_bias=False, layer_norm_eps=1e-6)),
    "swiglu_no_layer_bias": (
        "vit_lvd1689m_swiglu.pth",
        dict(
            num_register_tokens=4,
            key_bias=False,
            use_gated_mlp=True,
            hidden_act="silu",
            mlp_bias=False,
            proj_bias=False,
            layer_norm_eps=1e-5,
        ),
    ),
}


def tiny_vit(**kw):
    "A 2-block 64-d DINOv3 with every tensor moved off its initial value (a lost or swapped tensor would show)."
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    m = DINOv3ViTModel(
        DINOv3ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96, **kw)
    )
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_is_exact(tmp_path, variant):
    "HF model -> Meta layout -> file -> loaded: the same config and features identical to the bit."
    name, kw = VARIANTS[variant]
    m = tiny_vit(**kw)
    sd = to_meta_state_dict(m)
    masked = any(k.endswith("bias_mask") for k in sd)
    assert masked == (not kw["key_bias"])
    for k in [k for k in sd if k.endswith("attn.qkv.bias")] if masked else []:
        sd[k][64:128] = torch.randn(64)  # junk under the mask: Meta's LinearKMaskedBias multiplies it by 0
    torch.save(sd, tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vit_plain.pth matches no release: dinov3's code defaults, with a warning
        back = load_dinov3_backbone(str(tmp_path / name)).eval()
    for f in (
        "num_register_tokens",
        "key_bias",
        "query_bias",
        "value_bias",
        "use_gated_mlp",
        "mlp_bias",
        "proj_bias",
        "intermediate_size",
        "num_attention_heads",
        "layer_norm_eps",
        "rope_theta",
    ):
        assert getattr(back.config, f) == getattr(m.config, f), f
    x = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        a, b = m(x, output_hidden_states=True), back(x, output_hidden_states=True)
    assert (a.last_hidden_state - b.last_hidden_state).abs().max().item() == 0
    assert all(torch.equal(h, g) for h, g in zip(a.hidden_states, b.hidden_states))
    # masking the tokens (the mask token) goes through the same weights
    pos = torch.rand(2, 3 * 5) > 0.5
    with torch.no_grad():
        assert torch.equal(m(x, bool_masked_pos=pos).last_hidden_state, back(x, bool_masked_pos=pos).last_hidden_state)


def test_unknown_release_warns_and_uses_code_defaults(tmp_path):
    torch.save(to_meta_state_dict(tiny_vit(num_register_tokens=0, key_bias=False)), tmp_path / "plain.pth")
    with pytest.warns(UserWarning, match="code defaults"):
        c = load_meta_dinov3(tmp_path / "plain.pth").config
    assert (c.layer_norm_eps, c.rope_theta) == (1e-6, 100.0)
    with pytest.warns(UserWarning):
        c = load_meta_dinov3(tmp_path / "plain.pth", layer_norm_eps=1e-5).config  # an override wins
    assert c.layer_norm_eps == 1e-5
    with pytest.raises(SurgsegError, match="bias_mask, but release surgenetdino keeps the key bias"):
        load_meta_dinov3(tmp_path / "plain.pth", release="surgenetdino")
    assert DINOV3_RELEASES["surgenetdino"]["layer_norm_eps"] == 1e-6


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("meta")
    sd = to_meta_state_dict(tiny_vit(num_register_tokens=4, key_bias=False, layer_norm_eps=1e-5))
    return d, sd


KEYS = [
    "cls_token",
    "mask_token",
    "storage_tokens",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "rope_embed.periods",
    "norm.weight",
    "norm.bias",
    "blocks.0.norm1.weight",
    "blocks.1.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.1.attn.qkv.bias_mask",
    "blocks.0.attn.proj.weight",
    "blocks.1.attn.proj.bias",
    "blocks.0.ls1.gamma",
    "blocks.1.ls2.gamma",
    "blocks.0.norm2.bias",
    "blocks.1.mlp.fc1.weight",
    "blocks.0.mlp.fc2.bias",
]


@pytest.mark.parametrize("how", ["removed", "renamed"])
@pytest.mark.parametrize("key", KEYS)
def test_one_tensor_removed_or_renamed_is_refused(good, key, how):
    d, sd = good
    assert key in sd
    s = dict(sd)
    v = s.pop(key)
    if how == "renamed":
        s[key.replace(".", "_") + "_x"] = v
    f = d / f"{key}_{how}_lvd1689m.pth"
    torch.save(s, f)
    with pytest.raises(SurgsegError) as e:
        load_meta_dinov3(f)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and str(f) in msg, msg


def test_extra_tensor_and_wrong_shape_are_refused(good):
    d, sd = good
    torch.save(
        {**sd, "cls_norm.weight": torch.ones(64)}, d / "untied_lvd1689m.pth"
    )  # an untied CLS norm: not in transformers
    with pytest.raises(SurgsegError, match="unmapped cls_norm.weight"):
        load_meta_dinov3(d / "untied_lvd1689m.pth")
    torch.save({**sd, "blocks.1.norm1.weight": torch.ones(32)}, d / "shape_lvd1689m.pth")
    with pytest.raises(SurgsegError, match="blocks.1.norm1.weight|model.layer.1.norm1.weight"):
        load_meta_dinov3(d / "shape_lvd1689m.pth")


def test_rope_base_and_release_are_checked(tmp_path):
    torch.save(to_meta_state_dict(tiny_vit(num_register_tokens=4, rope_theta=1000.0)), tmp_path / "b_lvd1689m.pth")
    with pytest.raises(SurgsegError, match="fit base 1000"):
        load_meta_dinov3(tmp_path / "b_lvd1689m.pth")
    assert load_meta_dinov3(tmp_path / "b_lvd1689m.pth", rope_theta=1000.0).config.rope_theta == 1000.0
    with pytest.raises(SurgsegError, match="register tokens"):
        load_meta_dinov3(tmp_path / "b_lvd1689m.pth", release="surgenetdino")
    with pytest.raises(SurgsegError, match="not DINOv3 release settings"):
        load_meta_dinov3(tmp_path / "b_lvd1689m.pth", eps=1)
    with pytest.raises(SurgsegError, match="not found"):
        load_dinov3_backbone(str(tmp_path / "absent.pth"))


def test_released_sizes_are_inferred():
    "ViT-S/B/L/H+ (H+ is SwiGLU, MLP ratio 6): the architecture comes back from the tensors alone (built on `meta`)."
    from transformers import DINOv3ViTModel

    for size, (hidden, depth, heads) in [
        ("S", (384, 12, 6)),
        ("B", (768, 12, 12)),
        ("L", (1024, 24, 16)),
        ("H+", (1280, 32, 20)),
    ]:
        kw = dict(use_gated_mlp=True, hidden_act="silu", intermediate_size=5120) if size == "H+" else {}
        c = dinov3_config("vits16").__class__(
            hidden_size=hidden,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            **{"intermediate_size": 4 * hidden, "num_register_tokens": 4, **kw},
        )
        with torch.device("meta"):
            vit = DINOv3ViTModel(c)
        sd = to_meta_state_dict(vit)  # tensors on `meta`: shapes only
        sd.update(
            {
                k: torch.cat([torch.ones(hidden), torch.zeros(hidden), torch.ones(hidden)])
                for k in sd
                if "bias_mask" in k
            }
        )
        got = meta_dinov3_config(sd, "dinov3_lvd1689m.pth")
        assert (
            got.hidden_size,
            got.num_hidden_layers,
            got.num_attention_heads,
            got.intermediate_size,
            got.use_gated_mlp,
        ) == (hidden, depth, heads, c.intermediate_size, size == "H+"), size


def test_cli_trains_a_step_from_a_meta_vits_file(tmp_path):
    """A Meta-layout ViT-S .pth written from a random model trains through
    `surgseg train --config configs/dinov3_lora.yaml`."""
    from transformers import DINOv3ViTModel
    from surgseg.synthetic import generate
    from surgseg.train import prepare_data

    data = str(
        prepare_data(Config(data_dir=str(generate(tmp_path / "data", n_train=3, n_test=1, seconds=2, size=(64, 96)))))
    )
    torch.manual_seed(0)
    vit = DINOv3ViTModel(dinov3_config("vits16"))
    f = tmp_path / "dinov3_vits16_random.pth"
    torch.save(to_meta_state_dict(vit), f)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    r = subprocess.run(
        [
            str(BIN / "surgseg"),
            "train",
            "--config",
            str(ROOT / "configs/dinov3_lora.yaml"),
            "--dinov3",
            str(f),
            "--data_dir",
            data,
            "--out_dir",
            str(tmp_path / "runs"),
            "--run_name",
            "meta",
            "--epochs",
            "1",
            "--max_steps",
            "1",
            "--batch_size",
            "1",
            "--num_workers",
            "0",
            "--precision",
            "no",
            "--log_with",
            "none",
            "--samples_per_epoch",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "meta"
    assert load_config(run / "config.yaml").dinov3 == str(f)
    model = build_model(load_config(run / "config.yaml"))  # the file's weights, in the segmenter training used
    pe = model.backbone.get_base_model().embeddings.patch_embeddings.weight
    assert torch.equal(pe, vit.embeddings.patch_embeddings.weight)


def test_memory_bench_smoke(tmp_path, capsys):
    "bench/dinov3_memory.py runs its four configurations in fresh processes and writes the table and CSV (tiny model)."
    import csv, importlib.util

    spec = importlib.util.spec_from_file_location("bench_dinov3_memory", ROOT / "bench" / "dinov3_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--threads", "1", "--csv", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [(r["checkpointing"], r["autocast"]) for r in rows] == [
        ("False", "no"),
        ("True", "no"),
        ("False", "bf16"),
        ("True", "bf16"),
    ]
    assert all(float(r["peak_MB"]) >= float(r["rss_before_MB"]) > 0 for r in rows) and rows[0]["peak_ratio"] == "1.0"
    assert "peak_ratio" in capsys.readouterr().out
