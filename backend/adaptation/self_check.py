"""Did adaptation help? Label-free signals comparing the adapted model with the unadapted one.

Self-training can make a map worse, and without labels the user cannot tell. After adapting, both
models predict the adaptation tiles (whole, not augmented); the signals below need no labels, and the
benchmark (bench/quality/safe.py) measures which of them predict the real gain. ``decide`` keeps the
adapted model only when they say it helped. The product measures one view per model (two forwards a
tile), all ``decide`` needs; the benchmark adds the test-time-augmented signals (``views=CHECK_VIEWS``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backend.adaptation.adapt import unview, view
from backend.adaptation.augment import Sample
from backend.analysis.metrics import confusion_matrix, scores
from backend.model.network import SegmentationModel

CHECK_VIEWS = 4  # the benchmark's test-time-augmented ensemble the TTA signals compare against
MIN_SHARE = 0.02  # classes below this share of the unadapted map are too small to judge collapse on
SURE = 0.9  # a pixel the unadapted model gives at least this probability is one it is sure of
MAX_CONFIDENT_CHANGED = 0.2  # decide(): the share of sure pixels adaptation may overturn


@dataclass
class Signals:
    """Label-free comparison of the adapted (``_adapted``) and unadapted (``_original``) predictions."""

    changed: float  # share of valid pixels whose class changed
    min_share_ratio: float  # smallest (adapted share / unadapted share) over the classes above MIN_SHARE
    entropy_original: float  # mean normalised entropy of the one-view prediction
    entropy_adapted: float
    confident_changed: float  # share of the pixels the unadapted model was sure of (>= SURE) whose class changed
    shares_original: list[float]
    shares_adapted: list[float]
    # with views > 1 only (the benchmark's): agreement of the one-view map with the unadapted TTA ensemble,
    # and the mean agreement of each view's map with the model's own ensemble
    tta_agreement_original: float | None = None
    tta_agreement_adapted: float | None = None
    consistency_original: float | None = None
    consistency_adapted: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def measure(original: SegmentationModel, adapted: SegmentationModel, samples: list[Sample], views: int = 1) -> Signals:
    """The signals over ``samples`` (the adaptation tiles, with their ``valid`` masks), each model predicting
    ``views`` dihedral views of every tile (the TTA signals need more than one)."""
    original.eval()
    adapted.eval()
    totals: dict[str, float] = {}
    num_classes = original.config.num_classes
    shares = {"original": torch.zeros(num_classes), "adapted": torch.zeros(num_classes)}
    pixels = 0.0
    for sample in samples:
        image, valid = _padded(sample, original.input_stride)
        count = float(valid.sum())
        if count == 0:
            continue
        pixels += count
        models = {"original": original, "adapted": adapted}
        predicted = {name: _views(model, image, views) for name, model in models.items()}
        one = {name: v[0].argmax(dim=1) for name, v in predicted.items()}
        confident = (predicted["original"][0].max(dim=1).values >= SURE) & valid

        def add(key: str, value: torch.Tensor, weight: float = count) -> None:
            totals[key] = totals.get(key, 0.0) + float(value) * weight

        add("changed", _share(one["original"] != one["adapted"], valid))
        add("confident_changed_num", ((one["original"] != one["adapted"]) & confident).sum(), 1.0)
        add("confident_num", confident.sum(), 1.0)
        ensemble = {name: (sum(v) / len(v)).argmax(dim=1) for name, v in predicted.items()}
        for name in ("original", "adapted"):
            if views > 1:
                add(f"tta_agreement_{name}", _share(one[name] == ensemble["original"], valid))
                maps = [v.argmax(dim=1) for v in predicted[name]]
                add(f"consistency_{name}", sum(_share(m == ensemble[name], valid) for m in maps) / views)
            add(f"entropy_{name}", _mean_entropy(predicted[name][0], valid))
            shares[name] += torch.bincount(one[name][valid], minlength=num_classes).float()
    if pixels == 0:
        raise ValueError("the self-check needs samples with valid pixels")
    share_of = {name: (s / s.sum()).tolist() for name, s in shares.items()}
    ratios = [a / o for o, a in zip(share_of["original"], share_of["adapted"], strict=True) if o >= MIN_SHARE]
    tta_signals = ("tta_agreement_original", "tta_agreement_adapted", "consistency_original", "consistency_adapted")
    return Signals(
        changed=totals["changed"] / pixels,
        min_share_ratio=min(ratios) if ratios else 1.0,
        entropy_original=totals["entropy_original"] / pixels,
        entropy_adapted=totals["entropy_adapted"] / pixels,
        confident_changed=totals["confident_changed_num"] / max(totals["confident_num"], 1.0),
        shares_original=share_of["original"],
        shares_adapted=share_of["adapted"],
        **{key: totals[key] / pixels for key in tta_signals if key in totals},
    )


def _views(model: SegmentationModel, image: torch.Tensor, views: int) -> list[torch.Tensor]:
    """The probabilities of the first ``views`` dihedral views (the first: the image as it is), mapped back."""
    return [unview(torch.softmax(model(view(image, i)), dim=1), i) for i in range(views)]


def _padded(sample: Sample, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample's image ``[1, C, H, W]`` padded (by replication) to multiples of ``stride``, and its valid mask."""
    image = sample["image"][None]
    height, width = image.shape[-2:]
    valid = sample.get("valid", torch.ones(height, width, dtype=torch.bool))[None]
    pad_h, pad_w = -height % stride, -width % stride
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        valid = F.pad(valid, (0, pad_w, 0, pad_h), value=False)
    return image, valid


def _share(hit: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (hit & valid).sum() / valid.sum().clamp(min=1)


def _mean_entropy(probabilities: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    entropy = -(probabilities * probabilities.clamp(min=1e-8).log()).sum(dim=1)
    entropy = entropy / torch.log(torch.tensor(float(probabilities.shape[1])))
    return (entropy * valid).sum() / valid.sum().clamp(min=1)


@dataclass
class Verdict:
    """Keep the adapted model or the unadapted one, and why, in one line a user reads; with labelled shapes the
    judge is ``estimate`` (scores on held-out shapes), without them the label-free ``signals``."""

    keep_adapted: bool
    reason: str
    signals: Signals | None = None
    estimate: dict | None = None

    @property
    def message(self) -> str:
        return verdict_message(self.to_dict())

    def to_dict(self) -> dict:
        verdict = {"kept": "adapted" if self.keep_adapted else "unadapted", "reason": self.reason}
        if self.signals is not None:
            verdict |= self.signals.to_dict()
        if self.estimate is not None:
            verdict["estimate"] = self.estimate
        return verdict


def verdict_message(verdict: dict) -> str:
    """The line the CLI prints and the dock shows, from a verdict as the result event carries it."""
    if verdict["kept"] == "adapted":
        return f"self-check: adaptation kept ({verdict['reason']})"
    return f"self-check: adaptation did not help ({verdict['reason']}); keeping the unadapted model"


def estimate_line(estimate: dict) -> str:
    """Per-class IoU before and after adaptation on the held-out shapes, in one line."""
    before, after = estimate["before"]["iou"], estimate["after"]["iou"]
    parts = [
        f"{name} {_percent(before[name])} -> {_percent(after[name])}"
        for name in before
        if before[name] is not None or after[name] is not None
    ]
    folds = f", {estimate['folds']} folds" if "folds" in estimate else ""
    return f"held-out polygons ({estimate['polygons']}{folds}, {estimate['pixels']} pixels) IoU: " + ", ".join(parts)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


@torch.no_grad()
def held_out_estimate(
    original: SegmentationModel, judged: list[tuple[SegmentationModel, list[Sample]]], class_names: list[str]
) -> dict:
    """IoU per class and mIoU before and after adaptation on the pixels of held-out shapes (one tile each, its
    ``mask``): each adapted model of ``judged`` on its own held-out tiles (one pair, or one per fold), the
    unadapted model on all of them; the confusion matrices are summed over the pairs."""
    num_classes = len(class_names)
    confusion = {"before": np.zeros((num_classes, num_classes + 1), np.int64)}
    confusion["after"] = confusion["before"].copy()
    polygons = 0
    for adapted, tiles in judged:
        polygons += len(tiles)
        for tile in tiles:
            image, _ = _padded(tile, original.input_stride)
            height, width = tile["mask"].shape
            mask = tile["mask"].numpy()
            for name, model in (("before", original.eval()), ("after", adapted.eval())):
                predicted = model(image).argmax(dim=1)[0, :height, :width].numpy()
                confusion[name] += confusion_matrix(predicted, mask, num_classes)
    result = {name: scores(matrix, class_names) for name, matrix in confusion.items()}
    folds = {"folds": len(judged)} if len(judged) > 1 else {}
    return {"polygons": polygons, **folds, "pixels": result["before"]["pixels"], **result}


def judge_by_estimate(estimate: dict) -> Verdict:
    """Keep the adapted model unless it scores below the unadapted one on the held-out shapes."""
    before, after = 100 * estimate["before"]["miou"], 100 * estimate["after"]["miou"]
    folds = f" ({estimate['folds']} folds)" if "folds" in estimate else ""
    reason = f"on {estimate['polygons']} held-out polygons{folds} mIoU {before:.1f} -> {after:.1f}"
    return Verdict(after >= before, reason, estimate=estimate)


def decide(signals: Signals, max_confident_changed: float = MAX_CONFIDENT_CHANGED) -> Verdict:
    """Keep the adapted model unless it overturned more than ``max_confident_changed`` of the pixels the
    unadapted model was sure of.

    Self-training that helps fixes the pixels the model hesitated over; one that drifts (a class taken over
    by its neighbour) also flips those it was sure of. Over the 18 held-out images of tiles 5 and 6 this share
    was at most 11 % in a run that gained (a +24 point one) and 29 % in the one that lost 9 points; smaller
    losses (up to 4 points) changed under 0.1 %, like most gains, and no label-free signal measured tells
    them apart. On tiles 1-4, out of sample, no run passed 0.7 %: their losses (up to 7 points) are of that
    kind (docs/safe-adaptation.md).
    """
    share = signals.confident_changed
    if share > max_confident_changed:
        return Verdict(False, f"it changed {share:.0%} of the pixels the unadapted model was sure of", signals)
    reason = (
        f"{share:.1%} of the sure pixels and {signals.changed:.0%} of all pixels changed; without labels only a "
        "large drift shows, so a loss of a few points can pass: label about 20 polygons (suggest-labels) to be sure"
    )
    return Verdict(True, reason, signals)
