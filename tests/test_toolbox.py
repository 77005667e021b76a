"""The toolbox modules: exact no-op at start, names, LoRA against peft, merge, Earth-Adapter bands, gates."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from backend.model.network import create_model
from backend.model.toolbox import LoRA, LoRAConfig, ToolboxConfig
from backend.model.toolbox.earth_adapter import low_pass
from tests.conftest import tiny_config

KIND_CASES = [("lora",), ("adapter",), ("earth_adapter",), ("lora", "adapter", "earth_adapter")]


def _randomise(module: nn.Module) -> None:
    """Move every toolbox weight off its identity initialisation (merge tests need a non-zero update)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.2)


@pytest.mark.parametrize("kinds", KIND_CASES)
@pytest.mark.parametrize("prefix", [dict(), dict(reg_tokens=2), dict(class_token=False, global_pool="avg")])
def test_fresh_toolbox_reproduces_the_frozen_model_exactly(kinds, prefix):
    torch.manual_seed(0)
    config = tiny_config(backbone_args=dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, **prefix))
    model = create_model(config).eval()
    image = torch.rand(2, 3, 40, 56)  # not square, not the configured size
    frozen = model(image)
    model.add_toolbox(ToolboxConfig(kinds=kinds))
    assert torch.equal(model(image), frozen)


def test_modules_are_named_after_their_block_and_everything_but_them_is_frozen(tiny_model):
    toolbox = tiny_model.add_toolbox()
    assert list(toolbox.modules) == [f"blocks.{i}.{k}" for i in range(2) for k in ("lora", "adapter", "earth_adapter")]
    trainable = {n.split(".")[2] for n, p in tiny_model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"lora", "adapter", "earth_adapter"}
    assert dict(tiny_model.backbone.named_modules())["blocks.1.adapter"] is toolbox["blocks.1.adapter"]


def test_injecting_into_a_model_without_blocks_raises():
    from backend.model.toolbox import inject_toolbox

    with pytest.raises(ValueError, match="no transformer blocks"):
        inject_toolbox(nn.Sequential(nn.Linear(4, 4)))


def test_lora_matches_peft_on_the_same_linear():
    torch.manual_seed(0)
    dim, rank, alpha = 12, 4, 8.0
    qkv = nn.Linear(dim, 3 * dim)
    ours = LoRA(qkv, LoRAConfig(rank=rank, alpha=alpha))
    _randomise(ours)
    handle = qkv.register_forward_hook(ours.hook)

    # peft sees one rank-2r LoRA on the whole qkv output; block structure reproduces our q/v-only update.
    reference = nn.Sequential(nn.Linear(dim, 3 * dim))
    reference[0].load_state_dict(qkv.state_dict())
    peft_model = get_peft_model(reference, LoraConfig(r=2 * rank, lora_alpha=2 * alpha, target_modules=["0"]))
    layer = peft_model.base_model.model[0]
    b_full = torch.zeros(3 * dim, 2 * rank)
    b_full[:dim, :rank] = ours.lora_B[0].detach()
    b_full[2 * dim :, rank:] = ours.lora_B[1].detach()
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.cat([ours.lora_A[0], ours.lora_A[1]]))
        layer.lora_B["default"].weight.copy_(b_full)

    x = torch.randn(5, 7, dim)
    torch.testing.assert_close(qkv(x), peft_model(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.get_delta_weight(), layer.get_delta_weight("default"), rtol=1e-5, atol=1e-6)
    handle.remove()


def test_lora_merge_keeps_outputs_and_unmerge_restores_the_weight_bit_for_bit():
    torch.manual_seed(0)
    qkv = nn.Linear(8, 24)
    lora = LoRA(qkv, LoRAConfig(rank=2))
    _randomise(lora)
    qkv.register_forward_hook(lora.hook)
    original = qkv.weight.detach().clone()
    x = torch.randn(3, 8)
    unmerged = qkv(x)
    lora.merge()
    assert lora.merged and not torch.equal(qkv.weight, original)
    torch.testing.assert_close(qkv(x), unmerged, rtol=1e-5, atol=1e-6)
    lora.unmerge()
    assert torch.equal(qkv.weight, original)
    torch.testing.assert_close(qkv(x), unmerged)


def test_low_and_high_bands_add_up_to_the_tokens_and_a_flat_grid_is_all_low_frequency():
    torch.manual_seed(0)
    grid = torch.randn(2, 4, 10, 14)
    low = low_pass(grid, cutoff=0.3)
    assert not torch.allclose(low, grid, atol=1e-3)  # the high band is not empty
    torch.testing.assert_close(low + (grid - low), grid)
    flat = torch.full((1, 2, 8, 8), 3.0)
    torch.testing.assert_close(low_pass(flat, cutoff=0.3), flat, rtol=1e-5, atol=1e-5)
    smooth = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    assert (low_pass(smooth, 0.3) - smooth).abs().mean() < (low_pass(grid, 0.3) - grid).abs().mean()


def test_a_gated_off_module_costs_no_compute_and_gets_no_gradient(tiny_model):
    toolbox = tiny_model.add_toolbox()
    for _, module in toolbox:
        _randomise(module)
    calls: dict[str, int] = {}
    for name, module in toolbox:
        original = module.delta

        def counted(*args, _name=name, _original=original):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)

        module.delta = counted
    toolbox.set_active(["blocks.0.adapter", "blocks.1.earth_adapter"])
    tiny_model(torch.rand(1, 3, 32, 32)).sum().backward()
    assert calls == {"blocks.0.adapter": 1, "blocks.1.earth_adapter": 1}
    for name, module in toolbox:
        gradients = [p.grad for p in module.parameters()]
        if module.active:
            assert all(g is not None for g in gradients), name
        else:
            assert all(g is None for g in gradients) and not any(p.requires_grad for p in module.parameters()), name


def test_gating_a_module_off_changes_the_logits_back(tiny_model):
    image = torch.rand(1, 3, 32, 32)
    frozen = tiny_model(image)
    toolbox = tiny_model.add_toolbox()
    for _, module in toolbox:
        _randomise(module)
    assert not torch.allclose(tiny_model(image), frozen)
    toolbox.set_active([])
    assert torch.equal(tiny_model(image), frozen)
    toolbox.remove()
    assert torch.equal(tiny_model(image), frozen) and not hasattr(tiny_model.backbone.blocks[0], "lora")
