"""Did adaptation help? Label-free signals comparing the adapted model with the unadapted one.

Self-training can make a map worse, and without labels the user cannot tell. After adapting, both
models predict the adaptation tiles (whole, not augmented); the signals below need no labels, and the
benchmark (bench/quality/safe.py) measures which of them predict the real gain. ``decide`` keeps the
adapted model only when they say it helped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from backend.adapt import unview, view
from backend.augment import Sample
from backend.model import SegmentationModel

CHECK_VIEWS = 4  # the test-time-augmented ensemble the signals compare against
MIN_SHARE = 0.02  # classes below this share of the unadapted map are too small to judge collapse on


@dataclass
class Signals:
    """Label-free comparison of the adapted (``_adapted``) and unadapted (``_original``) predictions."""

    changed: float  # share of valid pixels whose class changed
    min_share_ratio: float  # smallest (adapted share / unadapted share) over the classes above MIN_SHARE
    tta_agreement_original: float  # agreement of the one-view map with the unadapted TTA ensemble
    tta_agreement_adapted: float
    consistency_original: float  # mean agreement of each view's map with the model's own TTA ensemble
    consistency_adapted: float
    entropy_original: float  # mean normalised entropy of the one-view prediction
    entropy_adapted: float
    confident_changed: float  # share of pixels the unadapted model was >= 0.9 sure of whose class changed
    shares_original: list[float]
    shares_adapted: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def measure(original: SegmentationModel, adapted: SegmentationModel, samples: list[Sample]) -> Signals:
    """The signals over ``samples`` (the adaptation tiles, with their ``valid`` masks)."""
    original.eval()
    adapted.eval()
    totals: dict[str, float] = {}
    num_classes = original.config.num_classes
    shares = {"original": torch.zeros(num_classes), "adapted": torch.zeros(num_classes)}
    pixels = 0.0
    for sample in samples:
        image = sample["image"][None]
        valid = sample.get("valid", torch.ones(image.shape[-2:], dtype=torch.bool))[None]
        count = float(valid.sum())
        if count == 0:
            continue
        pixels += count
        views = {name: _views(model, image) for name, model in (("original", original), ("adapted", adapted))}
        one = {name: v[0].argmax(dim=1) for name, v in views.items()}
        ensemble = {name: (sum(v) / len(v)).argmax(dim=1) for name, v in views.items()}
        reference = ensemble["original"]
        confident = (views["original"][0].max(dim=1).values >= 0.9) & valid

        def add(key: str, value: torch.Tensor, weight: float = count) -> None:
            totals[key] = totals.get(key, 0.0) + float(value) * weight

        add("changed", _share(one["original"] != one["adapted"], valid))
        add("confident_changed_num", ((one["original"] != one["adapted"]) & confident).sum(), 1.0)
        add("confident_num", confident.sum(), 1.0)
        for name in ("original", "adapted"):
            add(f"tta_agreement_{name}", _share(one[name] == reference, valid))
            agreement = sum(_share(v.argmax(dim=1) == ensemble[name], valid) for v in views[name]) / len(views[name])
            add(f"consistency_{name}", agreement)
            add(f"entropy_{name}", _mean_entropy(views[name][0], valid))
            shares[name] += torch.bincount(one[name][valid], minlength=num_classes).float()
    if pixels == 0:
        raise ValueError("the self-check needs samples with valid pixels")
    share_of = {name: (s / s.sum()).tolist() for name, s in shares.items()}
    ratios = [a / o for o, a in zip(share_of["original"], share_of["adapted"], strict=True) if o >= MIN_SHARE]
    return Signals(
        changed=totals["changed"] / pixels,
        min_share_ratio=min(ratios) if ratios else 1.0,
        tta_agreement_original=totals["tta_agreement_original"] / pixels,
        tta_agreement_adapted=totals["tta_agreement_adapted"] / pixels,
        consistency_original=totals["consistency_original"] / pixels,
        consistency_adapted=totals["consistency_adapted"] / pixels,
        entropy_original=totals["entropy_original"] / pixels,
        entropy_adapted=totals["entropy_adapted"] / pixels,
        confident_changed=totals["confident_changed_num"] / max(totals["confident_num"], 1.0),
        shares_original=share_of["original"],
        shares_adapted=share_of["adapted"],
    )


def _views(model: SegmentationModel, image: torch.Tensor) -> list[torch.Tensor]:
    """The probabilities of each of the CHECK_VIEWS dihedral views (the first: the image as it is), mapped back."""
    return [unview(torch.softmax(model(view(image, i)), dim=1), i) for i in range(CHECK_VIEWS)]


def _share(hit: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (hit & valid).sum() / valid.sum().clamp(min=1)


def _mean_entropy(probabilities: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    entropy = -(probabilities * probabilities.clamp(min=1e-8).log()).sum(dim=1)
    entropy = entropy / torch.log(torch.tensor(float(probabilities.shape[1])))
    return (entropy * valid).sum() / valid.sum().clamp(min=1)
