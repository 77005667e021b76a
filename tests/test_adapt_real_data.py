"""Adaptation on real Dubai images: DG lowers the loss, DA self-training runs end to end."""

from __future__ import annotations

import pytest
import torch

from backend.adaptation.adapt import AdaptConfig, adapt
from backend.model.network import create_model
from tests.conftest import DUBAI_DATA, tiny_config
from training.dubai import load_tile

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DUBAI_DATA.is_dir(), reason=f"real data not found at {DUBAI_DATA}"),
]


def crops(tile: int, count: int = 3, size: int = 192) -> list[dict]:
    return [{"image": s["image"][:, :size, :size], "mask": s["mask"][:size, :size]} for s in load_tile(tile)[:count]]


def model():
    torch.manual_seed(0)
    return create_model(tiny_config(num_classes=5, img_size=64, head_channels=32))


def test_dg_adaptation_lowers_the_loss_on_real_dubai_images():
    config = AdaptConfig(mode="dg", steps=40, batch_size=4, crop_size=128, lr=2e-3, gate=dict(reselect_every=20))
    result = adapt(model(), crops(2), config)
    first, last = sum(result.losses[:8]) / 8, sum(result.losses[-8:]) / 8
    assert last < 0.85 * first, (first, last)


def test_da_self_training_runs_end_to_end_on_an_unseen_district():
    target = [{"image": s["image"]} for s in crops(6)]
    research = dict(ema_momentum=0.999, class_quantile=None)  # the defaults this test was written for
    config = AdaptConfig(mode="da", steps=10, batch_size=2, crop_size=128, lr=1e-3, confidence=0.3, **research)
    result = adapt(model(), target, config, source=crops(2))
    assert len(result.losses) == 10 and all(torch.isfinite(torch.tensor(result.losses)))
    assert len(result.selection) == 1 and result.active_modules  # 10 steps < 50: only the initial selection
    assert 0.0 < sum(result.pseudo_label_fraction) / len(result.pseudo_label_fraction) <= 1.0
