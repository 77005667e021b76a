"""Adaptation on toy data: DG and DA run, gates and optimizer state, determinism, cancel."""

from __future__ import annotations

import time

import pytest
import torch

from backend.adaptation.adapt import AdaptConfig, adapt, pseudo_label_thresholds
from backend.adaptation.augment import sample_batch
from backend.model.network import create_model
from backend.progress import Cancelled
from tests.conftest import tiny_config


def striped_samples(count: int = 4, size: int = 48) -> list[dict]:
    """Images whose class is readable from the pixels: red 8 x 8 cells are class 1, the rest class 0."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(count):
        cells = (torch.rand(size // 8, size // 8, generator=generator) > 0.5).long()
        mask = cells.repeat_interleave(8, 0).repeat_interleave(8, 1)
        image = torch.rand(3, size, size, generator=generator) * 0.2
        image[0] += 0.7 * mask
        samples.append({"image": image, "mask": mask})
    return samples


def fresh_model():
    torch.manual_seed(0)
    return create_model(tiny_config())


def small_config(**overrides) -> AdaptConfig:
    values = dict(steps=12, batch_size=2, crop_size=32, lr=3e-3, gate=dict(top_k=2, reselect_every=4))
    values.update(ema_momentum=0.999, class_quantile=None)  # the research defaults these tests were written for
    values.update(overrides)
    return AdaptConfig(**values)


def test_dg_learns_the_labelled_samples_and_records_each_reselection():
    result = adapt(fresh_model(), striped_samples(), small_config(mode="dg", steps=30))
    assert sum(result.losses[-5:]) / 5 < 0.8 * sum(result.losses[:5]) / 5
    assert [event["step"] for event in result.selection] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert all(len(event["active"]) == 2 for event in result.selection)
    assert result.active_modules == result.selection[-1]["active"]


def test_da_self_training_runs_end_to_end_with_and_without_source():
    target = [{"image": s["image"].flip(0)} for s in striped_samples()]  # other colours, no labels
    for source in (None, striped_samples()):
        result = adapt(fresh_model(), target, small_config(mode="da", confidence=0.3), source=source)
        assert len(result.losses) == 12 and all(torch.isfinite(torch.tensor(result.losses)))
        assert result.pseudo_label_fraction and 0.0 <= min(result.pseudo_label_fraction) <= 1.0


def test_dg_without_labels_is_refused():
    with pytest.raises(ValueError, match="labelled"):
        adapt(fresh_model(), [{"image": torch.rand(3, 32, 32)}], small_config(mode="dg"))


def test_only_active_modules_and_the_head_train_and_hold_optimizer_state(monkeypatch):
    optimizers = []
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        if not optimizers or optimizers[-1] is not self:
            optimizers.append(self)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    model = fresh_model()
    result = adapt(model, striped_samples(), small_config(mode="dg", steps=8))
    optimizer = optimizers[-1]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    expected = {id(p) for name in result.active_modules for p in model.toolbox[name].parameters()}
    expected |= {id(p) for p in model.head.parameters()}
    assert trained == expected
    assert {id(p) for p in optimizer.state} == expected
    for name, module in model.toolbox:
        if name not in result.active_modules:
            assert all(not p.requires_grad and p.grad is None for p in module.parameters())


def test_optimizer_state_is_kept_for_modules_that_stay_active(monkeypatch):
    steps_seen = {}
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        for parameter, state in self.state.items():
            steps_seen[id(parameter)] = float(state["step"])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    model = fresh_model()
    adapt(model, striped_samples(), small_config(mode="dg", steps=8, gate=dict(selection="all")))
    # the head never leaves the optimizer: its Adam step count runs through all 8 steps
    assert steps_seen[id(next(model.head.parameters()))] == 8.0


def test_same_seed_same_run_other_seed_other_run():
    def run(seed):
        return adapt(fresh_model(), striped_samples(), small_config(mode="dg", steps=5, seed=seed)).losses

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("other", ["random", "lookahead"])
def test_other_gates_train_on_fisher_gatings_crops_and_differ_only_by_their_choice(monkeypatch, other):
    """Common random numbers: DA's scoring draws augmentations, and every gate draws them too."""
    import backend.adaptation.adapt

    def crops_seen(selection: str) -> tuple[list[float], list[list[str]]]:
        seen = []

        def recording(*args):
            batch = sample_batch(*args)
            seen.append(float(batch["image"].sum()))
            return batch

        monkeypatch.setattr(backend.adaptation.adapt, "sample_batch", recording)
        target = [{"image": s["image"].flip(0)} for s in striped_samples()]
        config = small_config(mode="da", confidence=0.3, gate=dict(selection=selection, top_k=2, reselect_every=4))
        result = adapt(fresh_model(), target, config)
        return seen, [event["active"] for event in result.selection]

    fisher_crops, fisher_choice = crops_seen("fisher")
    other_crops, other_choice = crops_seen(other)
    assert len(fisher_crops) == 12 + 3 * 2  # the training steps and two scoring batches per selection
    assert other_crops == fisher_crops
    if other == "random":
        assert other_choice != fisher_choice


@pytest.mark.parametrize("selection", ["fisher", "random", "lookahead"])
def test_frozen_batch_norm_statistics_never_move_even_if_the_model_arrives_in_training_mode(selection):
    torch.manual_seed(0)
    model = create_model(tiny_config(stem="tf_efficientnet_lite0", stem_stages=2, img_size=64))
    torch.nn.Module.train(model)  # as nn.Module leaves a new model: the backbone's batch norms in training mode
    before = {name: buffer.clone() for name, buffer in model.backbone.named_buffers()}
    assert any("running_mean" in name for name in before)
    adapt(model, striped_samples(size=64), small_config(mode="dg", steps=2, gate=dict(selection=selection, top_k=2)))
    assert all(torch.equal(buffer, before[name]) for name, buffer in model.backbone.named_buffers())


def test_cancel_stops_within_a_step():
    calls = {"n": 0}

    def cancel_after_three_checks():
        calls["n"] += 1
        return calls["n"] > 3

    started = time.perf_counter()
    with pytest.raises(Cancelled):
        adapt(
            fresh_model(), striped_samples(), small_config(mode="dg", steps=500), is_cancelled=cancel_after_three_checks
        )
    assert time.perf_counter() - started < 5.0


def test_progress_is_monotone_and_ends_at_one():
    seen = []
    adapt(fresh_model(), striped_samples(), small_config(mode="dg", steps=6), progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.parametrize("tuning", ["head", "full"])
def test_head_only_and_full_fine_tuning_baselines_train_what_they_say(tuning):
    model = fresh_model()
    result = adapt(model, striped_samples(), small_config(mode="dg", steps=3, tuning=tuning))
    backbone_trains = any(p.requires_grad for p in model.backbone.parameters())
    assert backbone_trains == (tuning == "full") and model.toolbox is None and result.selection == []


def test_head_lr_scale_zero_freezes_the_head_and_only_the_toolbox_adapts():
    model = fresh_model()
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    result = adapt(model, striped_samples(), small_config(mode="dg", steps=4, head_lr_scale=0.0))
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    assert not any(p.requires_grad for p in model.head.parameters())
    trained = [p for module in model.toolbox.modules.values() for p in module.parameters() if p.requires_grad]
    assert result.trainable_parameters == sum(p.numel() for p in trained) > 0
    assert result.losses[-1] < result.losses[0]  # the modules alone still learn
    with pytest.raises(ValueError, match="head_lr_scale"):
        small_config(tuning="head", head_lr_scale=0.0)


def test_class_quantile_lowers_the_threshold_of_a_class_the_teacher_is_unsure_of():
    confidence = torch.tensor([[[0.95, 0.9, 0.5, 0.4]]])
    pseudo = torch.tensor([[[0, 0, 1, 1]]])
    valid = torch.ones_like(pseudo, dtype=torch.bool)
    plain = pseudo_label_thresholds(confidence, pseudo, valid, AdaptConfig(confidence=0.7, class_quantile=None))
    assert (confidence >= plain).tolist() == [[[True, True, False, False]]]
    balanced = pseudo_label_thresholds(confidence, pseudo, valid, AdaptConfig(confidence=0.7, class_quantile=0.5))
    assert torch.allclose(balanced, torch.tensor([[[0.7, 0.7, 0.45, 0.45]]]))  # capped at 0.7; class 1: its median
    with pytest.raises(ValueError, match="class_quantile"):
        AdaptConfig(class_quantile=1.5)


def test_product_adapt_options_pass_their_learning_rate_teacher_momentum_and_thresholds_and_extra_overrides_them():
    from backend.jobs import AdaptOptions

    config = AdaptOptions(lr=2e-3, ema_momentum=0.95, class_quantile=0.3).config()
    assert (config.lr, config.ema_momentum, config.class_quantile) == (2e-3, 0.95, 0.3)
    assert AdaptOptions().config().class_quantile == 0.5  # class-wise thresholds by default (docs/quality.md)
    assert AdaptOptions(class_quantile=None).config().class_quantile is None
    assert AdaptOptions(extra={"lr": 5e-4, "class_quantile": 0.7}).config().lr == 5e-4
    gate = AdaptOptions(top_k=0.25, reselect_every=7, extra={"gate": {"selection": "random"}}).config().gate
    assert (gate.selection, gate.top_k, gate.reselect_every) == ("random", 0.25, 7)  # merged, not replaced
    assert AdaptOptions(top_k=0.25, extra={"gate": {"top_k": 2}}).config().gate.top_k == 2
