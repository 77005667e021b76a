"""What a job is asked to do: the scene, the segmentation and the adaptation options, as plain dataclasses.

The CLI and the QGIS plugin build these; nothing here imports torch, so ``crossearth --help`` and argument
errors answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.adapt import AdaptConfig

DEFAULT_MODEL = "dubai-hybrid-vit"  # the embedded model (resources/models/dubai-hybrid-vit)
DEFAULT_LABEL_FIELD = "class"  # the field of a vector label file holding class names or values
DEFAULT_SUGGESTED_SPOTS = 20  # suggest-labels: how many places to label
DEFAULT_SPOT_PIXELS = 32  # suggest-labels: the side of each box
DEFAULT_LABEL_BUFFER_M = 5.0  # points and lines of a vector label file become shapes this wide on each side


@dataclass
class Scene:
    """What to work on: a raster, its band mapping, a region of interest, and the model."""

    input: str
    bands: list[int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    roi: str | None = None
    model: str = DEFAULT_MODEL
    models_dir: str | None = None
    threads: int | None = None


@dataclass
class SegmentOptions:
    output: str
    confidence: str | None = None
    entropy: str | None = None
    quicklook: str | None = None
    tile_size: int | None = None  # None: the model card's
    stride: int | None = None
    batch_size: int = 4
    engine: str = "auto"
    device: str = "auto"  # a GPU when the machine running the model has one; or cpu, cuda, cuda:N
    adapter: str | None = None
    overwrite: bool = False


@dataclass
class AdaptOptions:
    """Scene adaptation defaults: a few minutes on a 2-core CPU for a scene of a few megapixels.

    The learning rate, teacher momentum, class-wise pseudo-label thresholds and the scene alone as data
    were chosen on held-out districts (docs/quality.md): with 120 steps, lr 1e-4 and an EMA teacher of
    momentum 0.999 barely move the model, one threshold for all classes lets self-training drop the rare
    ones (Road), and mixing in labelled crops of the training tiles (DACS) gained less on every scene.
    """

    mode: str = "da"
    labels: str | None = None  # a class raster aligned with the scene, or a vector file of labelled shapes
    label_field: str = DEFAULT_LABEL_FIELD
    label_buffer: float = DEFAULT_LABEL_BUFFER_M
    samples: int = 16
    sample_size: int = 384
    steps: int = 120
    batch_size: int = 4
    crop_size: int = 256
    top_k: float = 0.5
    reselect_every: int | None = None
    confidence: float = 0.7
    class_quantile: float | None = 0.5  # see AdaptConfig.class_quantile; None: one threshold for all classes
    source_samples: bool = False  # DA: mix in labelled crops of the model's training tiles (DACS), if it ships them
    lr: float = 1e-3
    ema_momentum: float = 0.99
    seed: int = 0
    self_check: bool = True  # DA: keep the unadapted model when the label-free check says adaptation did not help
    adapter_out: str | None = None
    report_out: str | None = None
    overwrite: bool = False
    extra: dict = field(default_factory=dict)  # further AdaptConfig fields, for experiments

    def config(self) -> AdaptConfig:
        from backend.adapt import AdaptConfig
        from backend.fisher_gate import GateConfig

        fields = dict(
            mode=self.mode,
            steps=self.steps,
            batch_size=self.batch_size,
            crop_size=self.crop_size,
            confidence=self.confidence,
            class_quantile=self.class_quantile,
            lr=self.lr,
            ema_momentum=self.ema_momentum,
            seed=self.seed,
        )
        # extra's gate settings refine the options' k and interval rather than silently resetting them
        gate = GateConfig(**{"top_k": self.top_k, "reselect_every": self.reselect_every, **self.extra.get("gate", {})})
        return AdaptConfig(**{**fields, **self.extra, "gate": gate})
