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

from backend.adaptation.augment import Sample
from backend.errors import BadInput
from backend.rasters.atomic import atomic_output


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
