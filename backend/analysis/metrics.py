"""Segmentation scores: per-class IoU, mIoU and overall accuracy from a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE_INDEX = 255  # the label of pixels that no score counts, and that adaptation's losses ignore


def confusion_matrix(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """``[label, prediction]`` counts, ``[K, K + 1]``: the last column counts labelled pixels left as nodata."""
    label = np.asarray(label).ravel().astype(np.int64)
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    keep = (label != IGNORE_INDEX) & (label < num_classes)
    prediction = np.where(prediction < num_classes, prediction, num_classes)  # nodata: its own column
    counts = np.bincount(label[keep] * (num_classes + 1) + prediction[keep], minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def scores(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """IoU per class (NaN where a class is absent from both label and prediction), mIoU over present classes."""
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    true_positive = np.diag(confusion[:, :num_classes])
    union = confusion[:, :num_classes].sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    names = list(class_names) if class_names else [str(i) for i in range(len(iou))]
    labelled = confusion.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "overall_accuracy": float(true_positive.sum() / labelled) if labelled else float("nan"),
        "iou": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou, strict=True)},
        "pixels": int(labelled),
    }
