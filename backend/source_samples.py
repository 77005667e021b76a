"""Labelled crops of a model's own training tiles, shipped beside its weights.

Self-training on the unlabelled scene alone can drift: the teacher's mistakes become the student's labels.
DACS anchors it with labelled crops of the domain the model was trained on, trained on and pasted into the
scene's crops (ClassMix). A model folder that holds them (``registry.SOURCE_SAMPLES_FILE``) lets
``adapt-segment --source-samples`` do this at run time without the training data. It is not the default:
on held-out scenes it gained less than the scene alone (docs/quality.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from backend.atomic import atomic_output
from backend.augment import Sample
from backend.errors import BadInput


def save_source_samples(samples: list[Sample], path: Path, provenance: dict) -> None:
    """Write same-sized ``{"image" [3, H, W] in [0, 1], "mask" [H, W]}`` samples as uint8, atomically."""
    images = torch.stack([(s["image"] * 255.0).round().clamp(0, 255).to(torch.uint8) for s in samples])
    masks = torch.stack([s["mask"].to(torch.uint8) for s in samples])  # IGNORE_INDEX (255) fits a byte
    with atomic_output(path, overwrite=True) as partial:
        save_file({"images": images, "masks": masks}, str(partial), metadata={"provenance": json.dumps(provenance)})


def load_source_samples(path: Path) -> list[Sample]:
    """The labelled samples as adaptation expects them: float images in [0, 1], int64 masks."""
    try:
        tensors = load_file(str(path))
        images, masks = tensors["images"], tensors["masks"]
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BadInput(f"{path}: not a source-samples file ({error})") from error
    if images.dtype != torch.uint8 or images.ndim != 4 or masks.shape != images[:, 0].shape:
        raise BadInput(f"{path}: source samples must be uint8 images [N, C, H, W] with masks [N, H, W]")
    return [{"image": image.float() / 255.0, "mask": mask.long()} for image, mask in zip(images, masks, strict=True)]


def source_provenance(path: Path) -> dict:
    """Where the crops come from (model, tiles, crop size), as written by ``save_source_samples``."""
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("provenance", "{}"))


def label_entropy(mask: torch.Tensor, num_classes: int) -> float:
    """Entropy of the class shares of a label crop (ignored pixels left out): high when classes mix."""
    counts = torch.bincount(mask[mask < num_classes].flatten(), minlength=num_classes).float()
    share = counts[counts > 0] / counts.sum().clamp(min=1)
    return float(-(share * share.log()).sum())


def most_mixed_corner(mask: torch.Tensor, size: int, num_classes: int) -> tuple[float, tuple[int, int]]:
    """Of a 3 x 3 grid of ``size`` windows over ``mask``, the one whose labels mix the classes most:
    its label entropy and top-left corner (the first of equals)."""
    height, width = mask.shape
    best = (-1.0, (0, 0))
    for top in torch.linspace(0, max(0, height - size), 3, dtype=torch.float64).round().int().tolist():
        for left in torch.linspace(0, max(0, width - size), 3, dtype=torch.float64).round().int().tolist():
            entropy = label_entropy(mask[top : top + size, left : left + size], num_classes)
            if entropy > best[0]:
                best = (entropy, (top, left))
    return best
