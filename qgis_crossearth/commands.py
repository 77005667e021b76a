"""The backend command lines, built in one place from plain dataclasses.

Processing algorithms and the dock fill the same dataclasses, so both run exactly the same
``crossearth`` command (see docs/cli.md); nothing here imports QGIS.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Scene:
    """What to read: the raster, the model, the bands and the region of interest."""

    raster: str
    model: str
    bands: list[int] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str = ""
    roi: str = ""
    threads: int = 0

    def argv(self) -> list[str]:
        args = [self.raster, "--model", self.model]
        if self.bands:
            args += ["--bands", ",".join(str(band) for band in self.bands)]
        if self.bbox is not None:
            args += ["--bbox", ",".join(repr(float(v)) for v in self.bbox)]
            if self.bbox_crs:
                args += ["--bbox-crs", self.bbox_crs]
        if self.roi:
            args += ["--roi", self.roi]
        if self.threads > 0:
            args += ["--threads", str(self.threads)]
        return args


@dataclass
class Segmentation:
    """Sliding-window options; ``None`` sizes mean "the model card's value"."""

    output: str
    tile_size: int | None = None
    stride: int | None = None
    batch_size: int = 4
    confidence: str = ""
    entropy: str = ""
    engine: str = "auto"
    device: str = "auto"
    cluster: str = ""

    def argv(self) -> list[str]:
        args = ["-o", self.output, "--batch-size", str(self.batch_size)]
        if self.engine != "auto":
            args += ["--engine", self.engine]
        if self.device != "auto":
            args += ["--device", self.device]
        if self.tile_size:
            args += ["--tile-size", str(self.tile_size)]
        if self.stride:
            args += ["--stride", str(self.stride)]
        if self.confidence:
            args += ["--confidence", self.confidence]
        if self.entropy:
            args += ["--entropy", self.entropy]
        if self.cluster:
            args += ["--cluster", self.cluster]
        return args

    def outputs(self) -> list[str]:
        return [p for p in (self.output, self.confidence, self.entropy) if p]


MODES = ("da", "dg")
ENGINES = ("auto", "onnx", "torch")


@dataclass
class Adaptation:
    """Fisher-gated adaptation options; ``mode="dg"`` needs ``labels``; ``reselect_every=None`` means
    the backend's default for the mode."""

    mode: str = "da"
    labels: str = ""
    samples: int = 16
    steps: int = 120
    top_k: float = 0.5
    reselect_every: int | None = None
    seed: int = 0
    source_samples: bool = False
    adapter_out: str = ""
    report_out: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")

    def argv(self) -> list[str]:
        top_k = str(int(self.top_k)) if self.top_k >= 1 else repr(float(self.top_k))
        args = [
            "--mode",
            self.mode,
            "--samples",
            str(self.samples),
            "--steps",
            str(self.steps),
            "--top-k",
            top_k,
            "--seed",
            str(self.seed),
        ]
        if self.reselect_every is not None:
            args += ["--reselect-every", str(self.reselect_every)]
        if self.source_samples:
            args.append("--source-samples")
        if self.labels:
            args += ["--labels", self.labels]
        if self.adapter_out:
            args += ["--adapter-out", self.adapter_out]
        if self.report_out:
            args += ["--report-out", self.report_out]
        return args

    def outputs(self) -> list[str]:
        return [p for p in (self.adapter_out, self.report_out) if p]


PROTOCOL = ["--json-progress", "--overwrite"]


def segment_argv(scene: Scene, segmentation: Segmentation, adapter: str = "") -> list[str]:
    args = ["segment", *scene.argv(), *segmentation.argv()]
    if adapter:
        args += ["--adapter", adapter]
    return [*args, *PROTOCOL]


def adapt_argv(scene: Scene, adaptation: Adaptation) -> list[str]:
    return ["adapt", *scene.argv(), *adaptation.argv(), *PROTOCOL]


def adapt_segment_argv(scene: Scene, adaptation: Adaptation, segmentation: Segmentation) -> list[str]:
    return ["adapt-segment", *scene.argv(), *adaptation.argv(), *segmentation.argv(), *PROTOCOL]


def evaluate_argv(prediction: str, labels: str, model: str, json_out: str) -> list[str]:
    """``model`` names the classes of the per-class scores."""
    return ["evaluate", prediction, labels, "--model", model, "--json-out", json_out, *PROTOCOL]
