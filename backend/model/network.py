"""The segmentation model: a frozen timm Vision Transformer, the toolbox inside it, and a light head.

Input is a float image in [0, 1] (any size; the ViT runs with ``dynamic_img_size``); the model
normalises it with its own mean and std, so an exported model needs no pre-processing outside.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.layers import HybridEmbed
from torch import nn

from backend.model.toolbox import Toolbox, ToolboxConfig, inject_toolbox

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; stored in model cards and adapter checkpoints.

    ``backbone`` is any timm ViT name (``vit_small_patch14_dinov2``, ``vit_base_patch16_224`` ...) and
    ``backbone_args`` overrides its architecture (``embed_dim``, ``depth``, ``num_heads``, ``patch_size``).
    ``stem`` names a timm CNN whose first ``stem_stages`` stages replace the patch embedding (a hybrid
    ViT, as timm's ``vit_*_r50_*``), so that a small ViT starts from pretrained low-level features.
    ``feature_blocks`` are the blocks the head reads (default: four spread over the depth, ending at
    the last, as ViT-Adapter and UperNet-on-ViT do, mixing low-level and semantic features).
    """

    backbone: str = "vit_small_patch16_224"
    num_classes: int = 5
    in_chans: int = 3
    img_size: int = 512
    backbone_args: dict = field(default_factory=dict)
    stem: str | None = None
    stem_stages: int = 0
    feature_blocks: list[int] | None = None
    head_channels: int = 128
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean and std need {self.in_chans} values, one per input band")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_feature_blocks(depth: int) -> list[int]:
    if depth <= 4:
        return list(range(depth))
    return [round(depth * (i + 1) / 4) - 1 for i in range(4)]


def build_stem(name: str, stages: int, in_chans: int) -> nn.Sequential:
    """The first ``stages`` stages of a timm EfficientNet/MobileNet-style CNN (``conv_stem``, ``bn1``, ``blocks``)."""
    cnn = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    return nn.Sequential(cnn.conv_stem, cnn.bn1, *cnn.blocks[:stages])


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.GroupNorm(min(8, cout), cout),
            nn.GELU(),
        )


class SegmentationHead(nn.Module):
    """Fuses the feature maps of several blocks, then upsamples twice by 2 before the classifier.

    GroupNorm rather than BatchNorm: adaptation runs with batches of 2 to 8 tiles.
    """

    def __init__(self, in_dim: int, levels: int, num_classes: int, channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(in_dim, channels, 1) for _ in range(levels))
        self.fuse = ConvNormAct(channels, channels)
        self.up1 = ConvNormAct(channels, channels // 2)
        self.up2 = ConvNormAct(channels // 2, channels // 2)
        self.classifier = nn.Conv2d(channels // 2, num_classes, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.fuse(sum(lateral(f) for lateral, f in zip(self.lateral, features, strict=True)))
        x = self.up1(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = self.up2(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """Frozen ViT + optional toolbox + trainable head; ``forward(image in [0,1]) -> logits`` at input size."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        kwargs = dict(
            pretrained=False,
            num_classes=0,
            in_chans=config.in_chans,
            img_size=config.img_size,
            dynamic_img_size=True,
            **config.backbone_args,
        )
        if config.stem:
            stem = build_stem(config.stem, config.stem_stages, config.in_chans)
            kwargs["embed_layer"] = partial(HybridEmbed, backbone=stem)
            kwargs.setdefault("patch_size", 1)
        self.backbone = timm.create_model(config.backbone, **kwargs)
        depth = len(self.backbone.blocks)
        self.feature_blocks = config.feature_blocks or default_feature_blocks(depth)
        self.head = SegmentationHead(
            self.backbone.embed_dim, len(self.feature_blocks), config.num_classes, config.head_channels
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, 1, 1), persistent=False)
        self.toolbox: Toolbox | None = None

    def add_toolbox(self, config: ToolboxConfig | None = None) -> Toolbox:
        """Inject the toolbox and freeze the backbone; the head stays trainable."""
        if self.toolbox is not None:
            raise RuntimeError("the model already has a toolbox")
        self.toolbox = inject_toolbox(self.backbone, config)
        return self.toolbox

    @property
    def input_stride(self) -> int:
        """The pixels per token along a side: image sides must be multiples of it (stem stride x patch size)."""
        embed = self.backbone.patch_embed
        return int(embed.patch_size[0]) * int(getattr(embed, "feature_ratio", (1, 1))[0])

    def train(self, mode: bool = True) -> SegmentationModel:
        """The frozen backbone always runs in eval mode: its norm statistics and dropout never change."""
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean) / self.std
        return self.backbone.forward_intermediates(
            x, indices=self.feature_blocks, output_fmt="NCHW", intermediates_only=True
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image), image.shape[-2:])


def create_model(config: ModelConfig, weights: str | Path | None = None) -> SegmentationModel:
    """Build the model; ``weights`` is a local file: a full model (safetensors) or timm backbone weights.

    A file whose keys start with ``backbone.`` / ``head.`` is one of ours and loads strictly; anything
    else is treated as timm weights for the backbone alone, loaded through timm's own loader (which
    adapts the patch embedding and position embedding) via ``pretrained_cfg_overlay=dict(file=...)``.
    Nothing is ever downloaded.
    """
    model = SegmentationModel(config)
    if weights is None:
        return model
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    state = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu")
    if any(key.startswith(("backbone.", "head.")) for key in state):
        model.load_state_dict(state, strict=True)
    else:
        model.backbone = _timm_backbone_from_file(config, path)
    return model


def _timm_backbone_from_file(config: ModelConfig, path: Path) -> nn.Module:
    if config.stem:
        raise ValueError("timm backbone weights load only into a plain ViT; hybrid models load full checkpoints")
    return timm.create_model(
        config.backbone,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=0,
        in_chans=config.in_chans,
        img_size=config.img_size,
        dynamic_img_size=True,
        **config.backbone_args,
    )


def frozen_state(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """The backbone's own weights, without toolbox modules."""
    return {
        key: value
        for key, value in model.backbone.state_dict().items()
        if not any(f".{kind}." in key for kind in ("lora", "adapter", "earth_adapter"))
    }


def backbone_hash(model: SegmentationModel) -> str:
    """A short fingerprint of the frozen backbone weights, so an adapter is never applied to the wrong model."""
    digest = hashlib.sha256()
    for key, value in sorted(frozen_state(model).items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_model(model: SegmentationModel, path: str | Path) -> None:
    """Save backbone and head (no toolbox) as safetensors."""
    state = {f"backbone.{k}": v for k, v in frozen_state(model).items()}
    state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
