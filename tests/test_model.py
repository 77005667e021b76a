"""The segmentation model: local weight files only, dynamic sizes, which blocks the head reads."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from backend.model.network import ModelConfig, create_model, default_feature_blocks, save_model
from tests.conftest import tiny_config


def test_model_saved_to_a_file_loads_back_with_equal_logits(tmp_path, tiny_model):
    path = tmp_path / "model.safetensors"
    save_model(tiny_model, path)
    torch.manual_seed(123)  # a different random init, so equality proves the weights came from the file
    loaded = create_model(tiny_config(), path).eval()
    image = torch.rand(1, 3, 32, 48)
    assert torch.equal(loaded(image), tiny_model(image))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_backbone_weights_load_from_a_local_file_through_timm(tmp_path, suffix):
    args = dict(embed_dim=32, depth=2, num_heads=2, patch_size=8)
    torch.manual_seed(1)
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, **args).eval()
    path = tmp_path / f"backbone{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = create_model(tiny_config(img_size=32), path).eval()
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model.backbone.forward_features(image), reference.forward_features(image))


def test_missing_weights_file_is_reported_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors"):
        create_model(tiny_config(), tmp_path / "nothing.safetensors")


def test_logits_come_out_at_input_resolution_for_any_size(tiny_model):
    for height, width in [(32, 32), (24, 40), (64, 16)]:
        assert tiny_model(torch.rand(2, 3, height, width)).shape == (2, 3, height, width)


def test_dinov2_style_backbone_with_registers_builds_and_segments():
    config = ModelConfig(
        backbone="vit_small_patch14_reg4_dinov2",
        num_classes=4,
        img_size=28,
        backbone_args=dict(embed_dim=32, depth=2, num_heads=2),
        head_channels=16,
    )
    model = create_model(config).eval()
    frozen = model(torch.rand(1, 3, 42, 56))
    model.add_toolbox()
    assert frozen.shape == (1, 4, 42, 56)
    assert model.backbone.num_prefix_tokens == 5


def test_head_reads_four_blocks_spread_over_the_depth_ending_at_the_last():
    assert default_feature_blocks(12) == [2, 5, 8, 11]
    assert default_feature_blocks(8) == [1, 3, 5, 7]
    assert default_feature_blocks(3) == [0, 1, 2]


def test_mean_and_std_must_match_the_band_count():
    with pytest.raises(ValueError, match="one per input band"):
        ModelConfig(in_chans=4)
