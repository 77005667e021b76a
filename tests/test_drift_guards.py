"""Self-training's guards against drift (anchor, class balance, averaged teacher) and the self-check signals."""

from __future__ import annotations

import copy

import pytest
import torch

from backend.adaptation.adapt import (
    DIHEDRAL_VIEWS,
    AdaptConfig,
    adapt,
    anchor_divergence,
    averaged_probabilities,
    class_balance_weights,
    protect_classes,
    unlabelled_classes,
    unview,
    view,
    with_default_anchor,
)
from backend.adaptation.self_check import Signals, decide, measure
from backend.analysis.metrics import IGNORE_INDEX
from backend.contract import DEFAULT_ANCHOR_WEIGHT
from tests.test_adapt import fresh_model, small_config, striped_samples


@pytest.mark.parametrize("index", range(len(DIHEDRAL_VIEWS)))
def test_each_view_is_undone_by_its_unview(index):
    image = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert torch.equal(unview(view(image, index), index), image)


def test_a_teacher_of_eight_views_predicts_a_turned_image_as_the_turned_prediction():
    model = fresh_model().eval()
    image = torch.rand(1, 3, 32, 32)
    turned = torch.rot90(image, 1, dims=(-2, -1))
    ensemble = averaged_probabilities(model, image, 8)
    assert torch.allclose(averaged_probabilities(model, turned, 8), torch.rot90(ensemble, 1, dims=(-2, -1)), atol=1e-5)
    single = averaged_probabilities(model, image, 1)
    assert not torch.allclose(
        averaged_probabilities(model, turned, 1), torch.rot90(single, 1, dims=(-2, -1)), atol=1e-3
    )


def test_class_balance_gives_each_pseudo_labelled_class_the_weight_of_its_share_to_the_minus_power():
    pseudo = torch.tensor([[0, 0, 0, 1], [0, 0, 0, IGNORE_INDEX]])  # class 0: 6 of 7 labelled pixels, class 1: 1
    weights = class_balance_weights(pseudo, 1.0, num_classes=3)
    raw_0, raw_1 = 7 / 6, 7.0
    mean = (6 * raw_0 + raw_1) / 7
    assert weights[0, 0] == pytest.approx(raw_0 / mean)
    assert weights[0, 3] == pytest.approx(raw_1 / mean)
    assert weights[1, 3] == 0
    assert torch.equal(class_balance_weights(pseudo, 0.0, 3), torch.ones(2, 4))


def test_anchor_divergence_is_zero_for_the_unadapted_model_and_grows_as_the_student_drifts():
    anchor = fresh_model().eval()
    images = torch.rand(2, 3, 32, 32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    with torch.no_grad():
        assert float(anchor_divergence(anchor, images, anchor(images), valid)) == pytest.approx(0.0, abs=1e-6)
    drifted = copy.deepcopy(anchor)
    with torch.no_grad():
        drifted.head.classifier.bias += torch.tensor([2.0, 0.0, -2.0])
    assert anchor_divergence(anchor, images, drifted(images), valid) > 0.1


def test_the_anchor_keeps_self_training_closer_to_the_unadapted_model():
    target = [{"image": s["image"].flip(0)} for s in striped_samples()]
    original = fresh_model().eval()
    changed = {}
    for weight in (0.0, 5.0):
        result = adapt(fresh_model(), target, small_config(mode="da", confidence=0.3, steps=20, anchor_weight=weight))
        changed[weight] = measure(original, result.model, [{"image": s["image"]} for s in target]).changed
    assert changed[5.0] < changed[0.0]


def test_the_anchor_leaves_the_analysts_labelled_pixels_to_their_labels():
    """Every pixel labelled: the anchor has nothing to hold, so it changes neither the losses nor the weights."""
    labelled = striped_samples()
    results = {
        weight: adapt(fresh_model(), labelled, small_config(mode="da", confidence=0.3, steps=6, anchor_weight=weight))
        for weight in (0.0, 5.0)
    }
    assert results[5.0].losses == pytest.approx(results[0.0].losses)
    anchored = results[5.0].model.state_dict()
    for name, free in results[0.0].model.state_dict().items():
        assert torch.allclose(free.float(), anchored[name].float()), name


def test_by_default_self_training_alone_is_anchored_and_the_analysts_labels_are_not():
    unlabelled = [{"image": s["image"]} for s in striped_samples()]
    no_labels = [{**s, "mask": torch.full_like(s["mask"], IGNORE_INDEX)} for s in striped_samples()]
    some_labels = [{**s, "mask": torch.where(s["mask"] == 1, 1, IGNORE_INDEX)} for s in striped_samples()]
    default = AdaptConfig(mode="da")
    assert default.anchor_weight is None
    assert with_default_anchor(default, unlabelled).anchor_weight == DEFAULT_ANCHOR_WEIGHT["without labels"] == 1.0
    assert with_default_anchor(default, no_labels).anchor_weight == 1.0
    assert with_default_anchor(default, some_labels).anchor_weight == DEFAULT_ANCHOR_WEIGHT["with labels"] == 0.0
    assert with_default_anchor(AdaptConfig(mode="da", anchor_weight=0.5), unlabelled).anchor_weight == 0.5
    result = adapt(fresh_model(), unlabelled, small_config(mode="da", confidence=0.3, steps=2))
    assert result.config.anchor_weight == 1.0  # the adapter checkpoint records the weight that trained it


def test_the_self_check_sees_no_change_between_a_model_and_its_copy_and_a_collapse_after_a_biased_head():
    model = fresh_model().eval()
    samples = [{"image": s["image"]} for s in striped_samples()]
    same = measure(model, copy.deepcopy(model), samples, views=4)
    assert same.changed == 0.0 and same.min_share_ratio == 1.0
    assert same.tta_agreement_adapted == same.tta_agreement_original
    assert 0.0 < same.consistency_original <= 1.0
    collapsed = copy.deepcopy(model)
    with torch.no_grad():
        collapsed.head.classifier.bias += torch.tensor([50.0, 0.0, 0.0])  # everything becomes class 0
    signals = measure(model, collapsed, samples)
    assert signals.tta_agreement_original is None  # one view, as the product measures: no TTA signals
    assert signals.shares_adapted[0] == pytest.approx(1.0)
    assert signals.min_share_ratio == pytest.approx(0.0)
    assert signals.changed == pytest.approx(1.0 - signals.shares_original[0], abs=1e-6)


@pytest.mark.parametrize(("field", "value"), [("teacher_views", 3), ("anchor_weight", -1.0), ("class_balance", -0.5)])
def test_bad_guard_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        AdaptConfig(**{field: value})


def signals_with(confident_changed: float, changed: float = 0.1) -> Signals:
    return Signals(
        changed=changed,
        min_share_ratio=0.9,
        tta_agreement_original=0.95,
        tta_agreement_adapted=0.9,
        consistency_original=0.9,
        consistency_adapted=0.92,
        entropy_original=0.3,
        entropy_adapted=0.2,
        confident_changed=confident_changed,
        shares_original=[0.5, 0.5],
        shares_adapted=[0.5, 0.5],
    )


def test_the_self_check_rejects_an_adaptation_that_overturned_many_sure_pixels_and_keeps_one_that_did_not():
    rejected = decide(signals_with(0.29))
    assert not rejected.keep_adapted
    assert rejected.message == (
        "self-check: adaptation did not help (it changed 29% of the pixels the unadapted model was sure of); "
        "keeping the unadapted model"
    )
    kept = decide(signals_with(0.008))
    assert kept.keep_adapted and kept.to_dict()["kept"] == "adapted"
    assert kept.message.startswith("self-check: adaptation kept (0.8% of the sure pixels")
    assert "label about 20 polygons (suggest-labels)" in kept.message  # a kept run can still have lost a little
    assert decide(signals_with(0.2)).keep_adapted and not decide(signals_with(0.201)).keep_adapted


def test_labelled_pixels_of_da_samples_teach_their_class_while_the_rest_self_trains():
    images = torch.stack([s["image"].flip(0) for s in striped_samples()])
    with torch.no_grad():
        before = fresh_model().eval()(images).argmax(dim=1)[:, 8:24, 8:24]
    rare = int(torch.bincount(before.flatten(), minlength=3).argmin())  # the class the model predicts least there
    mask = torch.full((48, 48), IGNORE_INDEX)
    mask[8:24, 8:24] = rare  # an analyst's square of that class
    share = {}
    for labelled in (False, True):
        samples = [{"image": image, **({"mask": mask} if labelled else {})} for image in images]
        model = adapt(fresh_model(), samples, small_config(mode="da", confidence=0.3, steps=20)).model
        with torch.no_grad():
            predicted = model(images).argmax(dim=1)
        share[labelled] = float((predicted[:, 8:24, 8:24] == rare).float().mean())
    assert share[False] < 0.2 and share[True] > share[False] + 0.5, share


def test_the_classes_no_label_shows_are_the_unlabelled_ones_and_none_without_labels():
    labelled = {"image": torch.zeros(3, 4, 4), "mask": torch.tensor([[0, 2], [IGNORE_INDEX, 0]])}
    assert unlabelled_classes([labelled, {"image": torch.zeros(3, 4, 4)}], num_classes=4) == [1, 3]
    blank = {"image": torch.zeros(3, 4, 4), "mask": torch.full((2, 2), IGNORE_INDEX)}
    assert unlabelled_classes([blank], num_classes=4) == []


def test_a_protected_class_takes_its_pseudo_label_from_the_unadapted_model_where_it_is_sure_and_the_pixel_free():
    pseudo = torch.tensor([[[0, 0, 1, IGNORE_INDEX]]])  # the teacher's: the class-2 pixels lost to class 0
    unadapted = torch.tensor([[0.05, 0.05, 0.05, 0.1], [0.05, 0.05, 0.9, 0.1], [0.9, 0.9, 0.05, 0.8]])[None, :, None]
    free = torch.tensor([[[True, False, True, True]]])  # pixel 1 is labelled by the analyst
    protected, kept = protect_classes(pseudo, unadapted, [2], 0.85, free)
    assert protected.tolist() == [[[2, 0, 1, IGNORE_INDEX]]]  # sure and free; labelled; not class 2; not sure
    assert kept.tolist() == [[[True, False, False, False]]]
    assert torch.equal(protect_classes(pseudo, unadapted, [0], 0.85, free)[0], pseudo)  # no pixel sure of class 0
