"Cross-checks of surgseg.losses against PyTorch's own reductions, and under bf16 autocast."

import pytest
import torch
import torch.nn.functional as F

from surgseg.core import Config, NUM_CLASSES, REAL_PIXEL_SHARE
from surgseg.losses import LOSSES, CELoss, FocalLoss, build_loss, class_weights


def _data(seed=0, b=2, h=12, w=20):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, NUM_CLASSES, h, w, generator=g) * 3
    target = torch.randint(0, NUM_CLASSES, (b, h, w), generator=g)
    target[:, :2] = 255
    return logits, target


@pytest.mark.parametrize("scheme", ["none", "inverse", "sqrt_inverse", "median", "one_minus_p"])
def test_ce_matches_torch(scheme):
    logits, target = _data()
    w = None if scheme == "none" else class_weights(REAL_PIXEL_SHARE, scheme)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    torch.testing.assert_close(CELoss(w)(logits, target), ref)


def test_focal_gamma0_is_ce_and_bounded_by_ce():
    logits, target = _data(1)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(FocalLoss(gamma=0)(logits, target), ce)
    assert FocalLoss(gamma=2)(logits, target) < ce


@pytest.mark.parametrize("name", list(LOSSES))
def test_bf16_autocast_gives_float32_close_to_fp32(name):
    logits, target = _data(2)
    loss = build_loss(Config(loss=name, class_weights="sqrt_inverse"), REAL_PIXEL_SHARE * 1e6)
    ref = loss(logits, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = loss(logits.bfloat16(), target)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, ref, atol=0.05, rtol=0.02)


def test_registries_check_config_names_on_every_entry(tmp_path):
    from surgseg.core import SurgsegError, choices, load_config
    from surgseg.losses import WEIGHT_SCHEMES

    assert choices("loss") == list(LOSSES) and choices("class_weights") == list(WEIGHT_SCHEMES)
    with pytest.raises(
        SurgsegError, match="config key 'loss': 'dice' is not a loss; choose from ce, wce, dice_ce, focal_ce"
    ):
        Config(loss="dice")
    with pytest.raises(
        SurgsegError, match="config key 'class_weights': 'inv' is not a class-weight scheme; choose from none, inverse"
    ):
        Config().update(class_weights="inv")
    (tmp_path / "c.yaml").write_text("loss: focal\n")
    with pytest.raises(SurgsegError, match="c.yaml: config key 'loss': 'focal' is not a loss"):
        load_config(tmp_path / "c.yaml")
    LOSSES["tmp_loss"] = LOSSES["ce"]  # a loss registered later is valid at once (the registry is kept by reference)
    try:
        assert Config(loss="tmp_loss").loss == "tmp_loss"
    finally:
        del LOSSES["tmp_loss"]
