"""Fisher and lookahead scores against hand computations, normalisation, top-k and budget selection, history."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backend.adaptation.fisher_gate import (
    FisherGate,
    GateConfig,
    fisher_scores,
    lookahead_scores,
    normalize_scores,
    select_modules,
)
from backend.model.toolbox import AdapterConfig, ToolboxConfig, inject_toolbox


class TinyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)  # the MLP reads the raw tokens: h == x, which keeps the hand computation short


class TinyViT(nn.Module):
    """The smallest thing the injector accepts: a patch embedding and blocks with ``attn.qkv`` and ``mlp``."""

    def __init__(self, dim: int = 3, depth: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Identity()
        self.patch_embed.grid_size = (2, 2)  # four tokens per image in these tests
        self.num_prefix_tokens = 0
        self.blocks = nn.Sequential(*(TinyBlock(dim) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.patch_embed(x))


def test_fisher_score_equals_the_hand_computed_mean_squared_gradient():
    torch.manual_seed(0)
    dim, hidden = 3, 2
    vit = TinyViT(dim, depth=1)
    toolbox = inject_toolbox(vit, ToolboxConfig(kinds=("adapter",), adapter=AdapterConfig(hidden=hidden)))
    adapter = toolbox["blocks.0.adapter"]
    weights = torch.tensor([1.0, -2.0, 0.5])
    batches = [torch.randn(1, 4, dim), torch.randn(1, 4, dim)]

    def loss(x):  # linear in the output: dL/d(adapter delta) = weights at every token
        return (vit(x) * weights).sum()

    score = fisher_scores(toolbox, vit, batches, loss)["blocks.0.adapter"]

    # By hand: with up = 0 at init, the down projection gets no gradient; up.weight[j, k] gets
    # sum over tokens of weights[j] * a[k] with a = gelu(down(x)), and up.bias[j] gets 4 * weights[j].
    expected = 0.0
    for x in batches:
        tokens = x[0]
        activations = nn.functional.gelu(tokens @ adapter.down.weight.T + adapter.down.bias).detach()
        grad_up_weight = weights[:, None] * activations.sum(dim=0)[None, :]
        grad_up_bias = weights * tokens.shape[0]
        expected += float((grad_up_weight**2).sum() + (grad_up_bias**2).sum())
    expected /= len(batches)
    assert score == pytest.approx(expected, rel=1e-5)


def test_scoring_switches_every_module_on_and_restores_the_gates_and_gradients():
    vit = TinyViT(depth=2)
    toolbox = inject_toolbox(vit)
    toolbox.set_active(["blocks.1.lora"])
    scores = fisher_scores(toolbox, vit, [torch.randn(1, 4, 3)], lambda x: vit(x).pow(2).sum())
    assert set(scores) == set(toolbox.modules)
    for name, score in scores.items():  # TinyBlock never calls attn.qkv, so LoRA cannot matter
        assert (score == 0.0) if name.endswith("lora") else (score > 0.0), name
    assert toolbox.active_names == ["blocks.1.lora"]
    assert all(p.grad is None for p in vit.parameters())


def test_lookahead_gain_of_a_sign_step_is_exact_for_a_linear_loss_and_everything_is_restored():
    """With a loss linear in the adapter's output, a step of size s along -sign(g) removes exactly s * sum|g|."""
    torch.manual_seed(0)
    vit = TinyViT(depth=2)
    toolbox = inject_toolbox(vit, ToolboxConfig(kinds=("adapter",)))
    toolbox.set_active(["blocks.1.adapter"])
    weights = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(1, 4, 3)
    before = {name: p.clone() for name, p in vit.named_parameters()}

    def loss(batch):
        return (vit(batch) * weights).sum()

    gains = lookahead_scores(toolbox, vit, x, x, loss, step_size=1e-2)

    toolbox.set_active(["blocks.0.adapter"])
    loss(x).backward()  # only block 0's adapter active: its gradient alone, as every no-op module passes it on
    up = toolbox["blocks.0.adapter"].up
    expected = 1e-2 * float(up.weight.grad.abs().sum() + up.bias.grad.abs().sum())
    assert gains["blocks.0.adapter"] == pytest.approx(expected, rel=1e-4)
    assert all(torch.equal(p, before[name]) for name, p in vit.named_parameters())
    assert toolbox.active_names == ["blocks.0.adapter"]  # as set for the check; lookahead had restored block 1's


def test_lookahead_passes_over_a_module_whose_real_size_step_overshoots_which_fisher_ranks_first():
    """Module 0: steep but narrow valley (its step overshoots); module 1: gentle slope (its step helps)."""
    torch.manual_seed(0)
    vit = TinyViT(depth=2)
    toolbox = inject_toolbox(vit, ToolboxConfig(kinds=("adapter",), adapter=AdapterConfig(hidden=2)))  # 17 parameters
    start = {name: sum(p.detach().sum() for p in module.parameters()) for name, module in toolbox}

    def loss(_batch):
        moved = {name: sum(p.sum() for p in module.parameters()) - start[name] for name, module in toolbox}
        return 1000.0 * (moved["blocks.0.adapter"] - 0.01) ** 2 + (moved["blocks.1.adapter"] - 1.0) ** 2

    config = GateConfig(top_k=1, normalization="none")
    fisher = fisher_scores(toolbox, vit, [None], loss)
    assert select_modules(toolbox, fisher, config) == ["blocks.0.adapter"]
    gains = lookahead_scores(toolbox, vit, None, None, loss, step_size=1e-2)
    assert gains["blocks.0.adapter"] < 0 < gains["blocks.1.adapter"]
    assert select_modules(toolbox, gains, config) == ["blocks.1.adapter"]


def test_normalisations_make_kinds_comparable():
    toolbox = inject_toolbox(TinyViT(depth=2))
    raw = {name: 10.0 * (i + 1) for i, name in enumerate(toolbox.modules)}
    assert normalize_scores(toolbox, raw, "none") == raw
    per_parameter = normalize_scores(toolbox, raw, "numel")
    assert per_parameter["blocks.0.lora"] == pytest.approx(10.0 / toolbox["blocks.0.lora"].num_parameters())
    by_kind = normalize_scores(toolbox, raw, "kind")
    for kind in ("lora", "adapter", "earth_adapter"):
        values = [by_kind[f"blocks.{b}.{kind}"] for b in range(2)]
        assert sum(values) / 2 == pytest.approx(1.0)


def test_kind_block_normalisation_removes_the_depth_prior():
    """Every block-0 score ten times the block-1 ones (as early-block gradients are): ``kind`` keeps all of
    block 0 first, ``kind_block`` ranks each module against its block and finds block 1's standout Adapter."""
    toolbox = inject_toolbox(TinyViT(depth=2))
    kinds = ("lora", "adapter", "earth_adapter")
    raw = {f"blocks.0.{kind}": 10.0 for kind in kinds} | {"blocks.1.lora": 1.0, "blocks.1.adapter": 3.0}
    raw["blocks.1.earth_adapter"] = 1.0
    by_kind = normalize_scores(toolbox, raw, "kind")
    assert set(select_modules(toolbox, by_kind, GateConfig(top_k=3))) == {f"blocks.0.{kind}" for kind in kinds}
    balanced = normalize_scores(toolbox, raw, "kind_block")
    for block in range(2):
        assert sum(balanced[f"blocks.{block}.{kind}"] for kind in kinds) / 3 == pytest.approx(1.0)
    assert select_modules(toolbox, balanced, GateConfig(top_k=1)) == ["blocks.1.adapter"]


def test_spread_over_blocks_gives_every_block_its_best_module_before_any_block_its_second():
    toolbox = inject_toolbox(TinyViT(depth=2))
    kinds = ("lora", "adapter", "earth_adapter")
    scores = {f"blocks.0.{kind}": 10.0 - i for i, kind in enumerate(kinds)}  # 10, 9, 8: the depth prior
    scores |= {f"blocks.1.{kind}": 1.0 + i for i, kind in enumerate(kinds)}  # 1, 2, 3
    assert set(select_modules(toolbox, scores, GateConfig(top_k=3))) == {f"blocks.0.{kind}" for kind in kinds}
    spread = select_modules(toolbox, scores, GateConfig(top_k=3, spread_over_blocks=True))
    assert spread == ["blocks.0.lora", "blocks.1.earth_adapter", "blocks.0.adapter"]


def test_an_excluded_module_is_scored_but_never_chosen_and_an_unknown_one_is_refused():
    vit = TinyViT(depth=2)
    toolbox = inject_toolbox(vit, ToolboxConfig(kinds=("adapter",)))
    batches = [torch.randn(1, 4, 3)]

    def loss(x):
        return vit(x).pow(2).sum()

    best = FisherGate(toolbox, GateConfig(top_k=1)).reselect(0, vit, batches, loss)
    gate = FisherGate(toolbox, GateConfig(top_k=1, exclude=tuple(best)))
    assert gate.reselect(0, vit, batches, loss) != best
    assert set(gate.history[0]["scores"]) == set(toolbox.modules)
    with pytest.raises(ValueError, match=r"blocks\.7\.adapter"):
        FisherGate(toolbox, GateConfig(exclude=("blocks.7.adapter",))).reselect(0, vit, batches, loss)
    # every module excluded: none is active (the head-alone control of the quality benchmark), all are scored
    nothing = FisherGate(toolbox, GateConfig(top_k=1, exclude=tuple(toolbox.modules)))
    assert nothing.reselect(0, vit, batches, loss) == [] == toolbox.active_names
    assert all(score > 0 for score in nothing.history[0]["scores"].values())


def test_top_k_as_count_fraction_and_parameter_budget():
    toolbox = inject_toolbox(TinyViT(depth=2))
    scores = {name: float(i) for i, name in enumerate(toolbox.modules)}
    ranked = sorted(scores, key=scores.get, reverse=True)
    assert select_modules(toolbox, scores, GateConfig(top_k=2)) == ranked[:2]
    assert select_modules(toolbox, scores, GateConfig(top_k=0.5)) == ranked[:3]
    budget = toolbox[ranked[0]].num_parameters() + 1
    chosen = select_modules(toolbox, scores, GateConfig(param_budget=budget))
    assert chosen[0] == ranked[0] and sum(toolbox[n].num_parameters() for n in chosen) <= budget


@pytest.mark.parametrize(
    "bad",
    [
        dict(top_k=0),
        dict(top_k=2.5),
        dict(normalization="zscore"),
        dict(selection="x"),
        dict(selection="lookahead", fisher_batches=1),  # the gain must be measured on another batch
    ],
)
def test_gate_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        GateConfig(**bad)


def test_random_gate_is_seeded_and_every_event_is_recorded():
    def run(seed):
        vit = TinyViT(depth=3)
        gate = FisherGate(inject_toolbox(vit), GateConfig(selection="random", top_k=3), seed=seed)
        batches = [torch.randn(2, 4, 3)]
        return [gate.reselect(step, vit, batches, lambda b: vit(b).pow(2).mean()) for step in (0, 50)], gate.history

    first, history = run(1)
    assert first == run(1)[0] and first != run(2)[0]
    assert [e["step"] for e in history] == [0, 50] and all(len(e["active"]) == 3 for e in history)
