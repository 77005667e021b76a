"""The one contract between the backend and its callers: jobs, their defaults, argv, events, exit codes.

A job is a plain dataclass (:class:`SegmentJob`, :class:`AdaptJob`, :class:`AdaptSegmentJob`,
:class:`EvaluateJob`, :class:`SuggestLabelsJob`) made of the parts :class:`Scene`, :class:`SegmentOptions` and
:class:`AdaptOptions`; the analyses of class rasters (:class:`VectorizeJob`, :class:`AreasJob`,
:class:`AccuracyJob`, :class:`SamplePointsJob`, :class:`ChangeJob`) need no scene or model.
Every part checks its values when it is built and raises :class:`~backend.errors.BadInput` (the CLI's one
line and exit code 2), so a bad value is refused the same way wherever the job comes from: the
command line, a Processing algorithm, the dock or a script.

``encode(job)`` gives the ``crossearth`` command line of a job and ``decode(argv)`` the job of a command
line; both read the flags from the fields' metadata (:func:`option`), so a new option is one field. The
QGIS plugin runs a job either as ``crossearth <encode(job)> --json-progress`` or, in QGIS's own Python,
by handing the dataclass to :func:`backend.cli.run_job`.

Nothing here imports torch, rasterio or QGIS: the plugin imports this module from the backend it bundles.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from backend.errors import BadInput

# ---- names and numbers shared by the backend and its callers ---------------------------------------------------

DEFAULT_MODEL = "dubai-hybrid-vit"  # the embedded model (resources/models/dubai-hybrid-vit)
MODES = ("da", "dg")
ENGINES = ("auto", "onnx", "torch")
# auto: int8 MatMuls on the onnx engine (backend.segmentation.predictor.ONNX_DEFAULT_PRECISION), fp32 on torch
PRECISIONS = ("auto", "fp32", "int8")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# --resolution: the model card's ground resolution (native when it states none), the scene's own, or metres
AUTO, NATIVE = "auto", "native"

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

# the JSON-progress events (docs/cli.md): {"type": PROGRESS, "fraction", "message"}, {"type": LOG, "level",
# "message"}, {"type": RESULT, "outputs", "metrics"}, {"type": ERROR, "message", "exit_code"}
PROGRESS, LOG, RESULT, ERROR = "progress", "log", "result", "error"
EVENT_TYPES = (PROGRESS, LOG, RESULT, ERROR)
JSON_PROGRESS = "--json-progress"

# The product's adaptation defaults, the one table: AdaptOptions (what users run) and AdaptConfig (the
# engine's settings) take theirs from here. Chosen on held-out districts (docs/quality.md): with 120 steps,
# lr 1e-4 and an EMA teacher of momentum 0.999 barely move the model, one threshold for all classes lets
# self-training drop the rare ones (Road), and mixing in labelled crops of the training tiles (DACS) gained
# less on every scene.
ADAPT_DEFAULTS: dict[str, Any] = {
    "mode": "da",
    "samples": 16,  # adaptation tiles sampled over the scene
    "sample_size": 384,  # their size in pixels
    "steps": 120,
    "batch_size": 4,
    "crop_size": 256,
    "top_k": 0.5,  # active modules: a count, or a fraction < 1 of all
    "reselect_every": None,  # None: the mode's, DEFAULT_RESELECT_EVERY
    "confidence": 0.7,  # DA: pseudo-label confidence threshold
    "class_quantile": 0.5,  # DA: class-wise thresholds (see AdaptConfig); None: one threshold for all
    "source_samples": False,  # DA: mix in labelled crops of the model's training tiles (DACS)
    "anchor_weight": None,  # DA: KL to the unadapted model's predictions; None: DEFAULT_ANCHOR_WEIGHT
    "lr": 1e-3,
    "ema_momentum": 0.99,
    "seed": 0,
}
DEFAULT_RESELECT_EVERY = {"dg": 100, "da": 50}  # steps between Fisher re-selections, by mode
# DA's anchor, by whether the analyst labelled some pixels (docs/safe-adaptation.md): without labels it halves the
# images that end more than a point below segment; with them it gives up most of the labels' gain
DEFAULT_ANCHOR_WEIGHT = {"without labels": 1.0, "with labels": 0.0}
DEFAULT_LABEL_FIELD = "class"  # the field of a vector label file holding class names or values
DEFAULT_LABEL_BUFFER_M = 5.0  # points and lines of a vector label file become shapes this wide on each side
DEFAULT_SUGGESTED_SPOTS = 20  # suggest-labels: how many places to label
DEFAULT_SPOT_PIXELS = 32  # suggest-labels: the side of each box


# ---- fields that are command-line options ---------------------------------------------------------------------


def option(flag: str, default: Any = MISSING, kind: str = "", **kwargs: Any) -> Any:
    """A dataclass field that is the command-line option ``flag``; ``kind`` says how it is written on the
    command line when the default does not: str, int, float, bool, ints (``3,2,1``) or floats."""
    if default is not MISSING:
        kind = kind or {bool: "bool", int: "int", float: "float"}.get(type(default), "str")
        kwargs["default"] = default
    return field(metadata={"flag": flag, "kind": kind or "str"}, **kwargs)


def positional(kind: str = "str", **kwargs: Any) -> Any:
    """A dataclass field that is a positional argument (``strs``: all the remaining ones)."""
    return field(metadata={"positional": True, "kind": kind}, **kwargs)


def parse_ints(text: str, what: str = "band mapping") -> list[int]:
    """A user's 1-based band list such as ``3,2,1``."""
    try:
        bands = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise BadInput(f"{what} {text!r}: expected band numbers such as 3,2,1") from None
    if any(b < 1 for b in bands):
        raise BadInput(f"{what} {text!r}: band numbers start at 1")
    return bands


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``xmin,ymin,xmax,ymax``."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise BadInput(f"bbox {text!r}: expected four numbers xmin,ymin,xmax,ymax")
    return values[0], values[1], values[2], values[3]


def parse_resolution(value: Any) -> str:
    """``auto``, ``native`` or a pixel size in metres (kept as text, e.g. ``0.5``, as it is written in argv)."""
    text = str(AUTO if value is None or value == "" else value).strip().lower()
    if text in (AUTO, NATIVE):
        return text
    try:
        metres = float(text)
    except ValueError:
        raise BadInput(f"resolution {value!r}: expected auto, native or a pixel size in metres such as 0.5") from None
    if not math.isfinite(metres) or metres <= 0:
        raise BadInput(f"resolution {value!r}: expected a pixel size in metres greater than 0")
    return repr(metres).removesuffix(".0")


def _whole(name: str, value: Any, low: int) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < low):
        raise BadInput(f"{name} {value!r}: expected a whole number >= {low}")


def _path(value: Any) -> str | None:
    """Paths arrive as str or Path; the contract keeps str (or None for "not asked for")."""
    return None if value is None or value == "" else str(value)


# ---- the parts of a job ---------------------------------------------------------------------------------------


@dataclass
class Scene:
    """What to work on: a raster, its band mapping, a region of interest, the model, and the pixel size to read
    the raster at (``resolution``: see backend.rasters.resample)."""

    input: str = positional()
    bands: list[int] | None = option("--bands", None, "ints")
    bbox: tuple[float, float, float, float] | None = option("--bbox", None, "floats")
    bbox_crs: str | None = option("--bbox-crs", None)
    roi: str | None = option("--roi", None)
    model: str = option("--model", DEFAULT_MODEL)
    models_dir: str | None = option("--models-dir", None)
    threads: int | None = option("--threads", None, "int")
    resolution: str = option("--resolution", AUTO)  # read at: auto, native, or metres per pixel

    def __post_init__(self) -> None:
        if not str(self.input or "").strip():
            raise BadInput("no input raster given")
        self.input = str(self.input)
        self.roi, self.models_dir, self.bbox_crs = _path(self.roi), _path(self.models_dir), _path(self.bbox_crs)
        self.model = str(self.model or DEFAULT_MODEL)
        if isinstance(self.bands, str):
            self.bands = parse_ints(self.bands)
        if self.bands is not None:
            self.bands = [int(b) for b in self.bands] or None
            if self.bands and any(b < 1 for b in self.bands):
                raise BadInput(f"band mapping {self.bands}: band numbers start at 1")
        if isinstance(self.bbox, str):
            self.bbox = parse_bbox(self.bbox)
        if self.bbox is not None:
            if len(self.bbox) != 4:
                raise BadInput(f"bbox {self.bbox}: expected four numbers xmin,ymin,xmax,ymax")
            self.bbox = tuple(float(v) for v in self.bbox)
        if self.threads == 0:
            self.threads = None  # "all cores", as the plugin's setting says it
        _whole("threads", self.threads, 1)
        self.resolution = parse_resolution(self.resolution)


@dataclass
class SegmentOptions:
    """Sliding-window segmentation: outputs, tiling (``None``: the model card's), engine and device."""

    output: str = option("--output")
    confidence: str | None = option("--confidence", None)
    entropy: str | None = option("--entropy", None)
    quicklook: str | None = option("--quicklook", None)
    tile_size: int | None = option("--tile-size", None, "int")  # None: the model card's
    stride: int | None = option("--stride", None, "int")
    blend: str | None = option("--blend", None)  # hann or centre (backend.segmentation.tiling); None: the card's
    batch_size: int = option("--batch-size", 4)
    engine: str = option("--engine", "auto")
    precision: str = option("--precision", "auto")  # PRECISIONS; int8 only on the onnx engine
    device: str = option("--device", "auto")  # a GPU when the machine running the model has one; or cpu, cuda:N
    adapter: str | None = option("--adapter", None)
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        self.output = _path(self.output) or ""
        for name in ("confidence", "entropy", "quicklook", "adapter"):
            setattr(self, name, _path(getattr(self, name)))
        _whole("tile size", self.tile_size, 16)
        _whole("stride", self.stride, 1)
        _whole("batch size", self.batch_size, 1)
        if self.engine not in ENGINES:
            raise BadInput(f"engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.precision not in PRECISIONS:
            raise BadInput(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.engine == "torch" and self.precision == "int8":
            raise BadInput("precision 'int8': only the onnx engine runs int8; use --engine onnx or --precision fp32")
        self.device = str(self.device or "auto").strip()
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise BadInput(f"device {self.device!r}: expected auto, cpu, cuda or cuda:N")

    def outputs(self) -> list[str]:
        return [p for p in (self.output, self.confidence, self.entropy, self.quicklook) if p]


@dataclass
class AdaptOptions:
    """Scene adaptation: a few minutes on a 2-core CPU for a scene of a few megapixels (ADAPT_DEFAULTS)."""

    mode: str = option("--mode", ADAPT_DEFAULTS["mode"])
    labels: str | None = option("--labels", None)  # a class raster, or a vector file of labelled shapes
    label_field: str = option("--label-field", DEFAULT_LABEL_FIELD)
    label_buffer: float = option("--label-buffer", DEFAULT_LABEL_BUFFER_M)
    samples: int = option("--samples", ADAPT_DEFAULTS["samples"])
    sample_size: int = ADAPT_DEFAULTS["sample_size"]
    steps: int = option("--steps", ADAPT_DEFAULTS["steps"])
    batch_size: int = ADAPT_DEFAULTS["batch_size"]
    crop_size: int = ADAPT_DEFAULTS["crop_size"]
    top_k: float = option("--top-k", ADAPT_DEFAULTS["top_k"])
    reselect_every: int | None = option("--reselect-every", ADAPT_DEFAULTS["reselect_every"], "int")
    confidence: float = ADAPT_DEFAULTS["confidence"]
    class_quantile: float | None = ADAPT_DEFAULTS["class_quantile"]
    source_samples: bool = option("--source-samples", ADAPT_DEFAULTS["source_samples"])
    anchor_weight: float | None = ADAPT_DEFAULTS["anchor_weight"]
    lr: float = ADAPT_DEFAULTS["lr"]
    ema_momentum: float = ADAPT_DEFAULTS["ema_momentum"]
    seed: int = option("--seed", ADAPT_DEFAULTS["seed"])
    self_check: bool = option("--self-check", True)  # keep the unadapted model when adaptation did not help
    adapter_out: str | None = option("--adapter-out", None)
    report_out: str | None = option("--report-out", None)
    overwrite: bool = option("--overwrite", False)
    extra: dict = field(default_factory=dict)  # further AdaptConfig fields, for experiments

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"mode {self.mode!r}: expected da (unlabelled scene) or dg (with labels)")
        self.labels, self.adapter_out, self.report_out = (
            _path(self.labels),
            _path(self.adapter_out),
            _path(self.report_out),
        )
        _whole("samples", self.samples, 1)
        _whole("sample size", self.sample_size, 16)
        _whole("steps", self.steps, 1)
        _whole("adaptation batch size", self.batch_size, 1)
        _whole("crop size", self.crop_size, 16)
        _whole("reselect-every", self.reselect_every, 1)
        _whole("seed", self.seed, 0)
        top_k = float(self.top_k)
        if not (0 < top_k < 1 or (top_k >= 1 and top_k == int(top_k))):
            raise BadInput(f"top-k {self.top_k:g}: expected a fraction of the modules in (0, 1) or a whole count")
        self.top_k = top_k
        if not 0.0 <= self.confidence < 1.0 or not 0.0 <= self.ema_momentum < 1.0:
            raise BadInput("confidence and ema_momentum must be in [0, 1)")
        if self.class_quantile is not None and not 0.0 <= self.class_quantile <= 1.0:
            raise BadInput(f"class_quantile {self.class_quantile}: expected a value in [0, 1]")
        if not self.lr > 0:
            raise BadInput(f"learning rate {self.lr}: expected a positive number")
        if not float(self.label_buffer) > 0:
            raise BadInput(f"label buffer {self.label_buffer}: expected a positive number of metres")
        self.label_buffer = float(self.label_buffer)

    def outputs(self) -> list[str]:
        return [p for p in (self.adapter_out, self.report_out) if p]

    def config(self):  # -> backend.adaptation.adapt.AdaptConfig (imports torch)
        from backend.adaptation.adapt import AdaptConfig
        from backend.adaptation.fisher_gate import GateConfig

        settings = dict(
            mode=self.mode,
            steps=self.steps,
            batch_size=self.batch_size,
            crop_size=self.crop_size,
            confidence=self.confidence,
            class_quantile=self.class_quantile,
            lr=self.lr,
            ema_momentum=self.ema_momentum,
            anchor_weight=self.anchor_weight,
            seed=self.seed,
        )
        # extra's gate settings refine the options' k and interval rather than silently resetting them
        gate = GateConfig(**{"top_k": self.top_k, "reselect_every": self.reselect_every, **self.extra.get("gate", {})})
        return AdaptConfig(**{**settings, **self.extra, "gate": gate})


# ---- jobs -----------------------------------------------------------------------------------------------------


def part(part_type: type) -> Any:
    """A field of a job that is one of the parts above (its options are the job's options)."""
    return field(metadata={"part": part_type})


@dataclass
class SegmentJob:
    """``crossearth segment``: one raster (``scene``) or several (``scene`` and ``more_inputs``, sharing its
    bands, region and model; then the output paths are folders)."""

    command: ClassVar[str] = "segment"
    scene: Scene = part(Scene)
    options: SegmentOptions = part(SegmentOptions)
    more_inputs: list[str] = positional("strs", default_factory=list)
    cluster: str | None = option("--cluster", None)

    def __post_init__(self) -> None:
        if not self.options.output:
            raise BadInput(f"{self.scene.input}: no output path given (-o)")
        self.more_inputs = [str(p) for p in self.more_inputs]

    def outputs(self) -> list[str]:
        return self.options.outputs()


@dataclass
class AdaptJob:
    """``crossearth adapt``: fit adapter modules to the scene and save them (``options.adapter_out``)."""

    command: ClassVar[str] = "adapt"
    scene: Scene = part(Scene)
    options: AdaptOptions = part(AdaptOptions)

    def __post_init__(self) -> None:
        if not self.options.adapter_out:
            raise BadInput(f"{self.scene.input}: no adapter checkpoint path given (--adapter-out)")
        _needs_labels(self.scene, self.options)

    def outputs(self) -> list[str]:
        """Every file the job writes, the selection report's defaults included."""
        return [self.options.adapter_out, *selection_report_paths(self.options.adapter_out, self.options.report_out)]


@dataclass
class AdaptSegmentJob:
    """``crossearth adapt-segment``: adapt to the scene, then segment it with the adapted model."""

    command: ClassVar[str] = "adapt-segment"
    scene: Scene = part(Scene)
    adapt: AdaptOptions = part(AdaptOptions)
    segment: SegmentOptions = part(SegmentOptions)
    cluster: str | None = option("--cluster", None)

    def __post_init__(self) -> None:
        if not self.segment.output:
            raise BadInput(f"{self.scene.input}: no output path given (-o)")
        if self.segment.adapter:
            raise BadInput("adapt-segment makes its own adapter: --adapter is for segment")
        _needs_labels(self.scene, self.adapt)

    def outputs(self) -> list[str]:
        """Every file the job writes, the adapter's and the selection report's defaults (beside OUTPUT) included."""
        adapter = self.adapt.adapter_out or beside_output(self.segment.output, ".adapter.safetensors")
        report = self.adapt.report_out or beside_output(self.segment.output, ".selection.json")
        return [*self.segment.outputs(), adapter, *selection_report_paths(adapter, report)]


@dataclass
class EvaluateJob:
    """``crossearth evaluate``: per-class IoU, mIoU and overall accuracy of a class raster against labels."""

    command: ClassVar[str] = "evaluate"
    prediction: str = positional()
    labels: str = positional()
    model: str = option("--model", DEFAULT_MODEL)
    models_dir: str | None = option("--models-dir", None)
    json_out: str | None = option("--json-out", None)
    overwrite: bool = option("--overwrite", False)
    skip: str | None = option("--skip", None)  # labelled shapes (e.g. those adaptation trained on): not scored

    def __post_init__(self) -> None:
        if not self.prediction or not self.labels:
            raise BadInput("evaluate needs a class raster and a label raster")
        self.prediction, self.labels = str(self.prediction), str(self.labels)
        self.models_dir, self.json_out, self.skip = _path(self.models_dir), _path(self.json_out), _path(self.skip)

    def outputs(self) -> list[str]:
        return [self.json_out] if self.json_out else []


@dataclass
class SuggestLabelsJob:
    """``crossearth suggest-labels``: boxes where the model is least sure, to label next (a GeoPackage)."""

    command: ClassVar[str] = "suggest-labels"
    scene: Scene = part(Scene)
    output: str = option("--output")
    count: int = option("--count", DEFAULT_SUGGESTED_SPOTS)
    box: int = option("--box", DEFAULT_SPOT_PIXELS)
    adapter: str | None = option("--adapter", None)
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        self.output, self.adapter = _path(self.output) or "", _path(self.adapter)
        if not self.output:
            raise BadInput(f"{self.scene.input}: no output path given (-o)")
        _whole("count (-n)", self.count, 1)
        _whole("box", self.box, 4)

    def outputs(self) -> list[str]:
        return [self.output]


# ---- analysis jobs: class rasters in, maps, tables and reports out (no model) -------------------------------


def _needs_output(what: str, output: str) -> str:
    output = _path(output) or ""
    if not output:
        raise BadInput(f"{what}: no output path given (-o)")
    return output


def _not_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not float(value) >= 0:
        raise BadInput(f"{name} {value!r}: expected a number >= 0")
    return float(value)


@dataclass
class VectorizeJob:
    """``crossearth vectorize``: one polygon per connected region of a class raster (a GeoPackage)."""

    command: ClassVar[str] = "vectorize"
    classes: str = positional()
    output: str = option("--output")
    confidence: str | None = option("--confidence", None)  # a confidence raster: each polygon's mean
    min_area: float = option("--min-area", 0.0)  # m2; smaller regions merge into their neighbours
    simplify: float = option("--simplify", 0.0)  # tolerance in metres
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        self.classes, self.confidence = str(self.classes), _path(self.confidence)
        self.output = _needs_output(self.classes, self.output)
        self.min_area = _not_negative("min-area", self.min_area)
        self.simplify = _not_negative("simplify", self.simplify)

    def outputs(self) -> list[str]:
        return [self.output]


@dataclass
class AreasJob:
    """``crossearth areas``: pixels, m2, ha and percent of each class, per zone or for the whole raster: a CSV
    table (``output``), the same as JSON and a bar chart (both beside it unless given; ``no_chart``: none)."""

    command: ClassVar[str] = "areas"
    classes: str = positional()
    output: str = option("--output")
    zones: str | None = option("--zones", None)
    zone_field: str | None = option("--zone-field", None)
    json_out: str | None = option("--json-out", None)
    chart: str | None = option("--chart", None)
    no_chart: bool = option("--no-chart", False)
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        self.classes, self.zones, self.zone_field = str(self.classes), _path(self.zones), _path(self.zone_field)
        self.output = _needs_output(self.classes, self.output)
        self.json_out = _path(self.json_out) or str(Path(self.output).with_suffix(".json"))
        self.chart = None if self.no_chart else (_path(self.chart) or str(Path(self.output).with_suffix(".png")))

    def outputs(self) -> list[str]:
        return [p for p in (self.output, self.json_out, self.chart) if p]


@dataclass
class AccuracyJob:
    """``crossearth accuracy``: a class raster against a reference (class raster, or points or polygons whose
    ``class_field`` holds class names or values): a JSON report, a per-class CSV and a confusion-matrix PNG."""

    command: ClassVar[str] = "accuracy"
    classes: str = positional()
    reference: str = positional()
    output: str = option("--output")
    class_field: str = option("--field", DEFAULT_LABEL_FIELD)
    table: str | None = option("--table", None)
    plot: str | None = option("--plot", None)
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        if not self.classes or not self.reference:
            raise BadInput("accuracy needs a class raster and a reference")
        self.classes, self.reference = str(self.classes), str(self.reference)
        self.output = _needs_output(self.classes, self.output)
        self.class_field = str(self.class_field or DEFAULT_LABEL_FIELD).strip() or DEFAULT_LABEL_FIELD
        self.table = _path(self.table) or str(Path(self.output).with_suffix(".csv"))
        self.plot = _path(self.plot) or str(Path(self.output).with_suffix(".png"))

    def outputs(self) -> list[str]:
        return [self.output, self.table, self.plot]


@dataclass
class SamplePointsJob:
    """``crossearth sample-points``: ``count`` random points at pixel centres (``stratified``: split equally
    between the map classes), with an empty ``class`` field to fill in for ``accuracy``."""

    command: ClassVar[str] = "sample-points"
    classes: str = positional()
    output: str = option("--output")
    count: int = option("--count", kind="int")
    stratified: bool = option("--stratified", False)
    seed: int = option("--seed", 0)
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        self.classes = str(self.classes)
        self.output = _needs_output(self.classes, self.output)
        _whole("count (-n)", self.count, 1)
        _whole("seed", self.seed, 0)
        self.count, self.seed = int(self.count), int(self.seed)

    def outputs(self) -> list[str]:
        return [self.output]


@dataclass
class ChangeJob:
    """``crossearth change``: from-to classes between two class rasters (a GeoTIFF) and the transition matrix
    (CSV, and JSON beside it; by default ``OUTPUT.matrix.csv``)."""

    command: ClassVar[str] = "change"
    before: str = positional()
    after: str = positional()
    output: str = option("--output")
    matrix: str | None = option("--matrix", None)
    only_changes: bool = option("--only-changes", False)  # unchanged pixels become nodata
    overwrite: bool = option("--overwrite", False)

    def __post_init__(self) -> None:
        if not self.before or not self.after:
            raise BadInput("change needs the class rasters of two dates")
        self.before, self.after = str(self.before), str(self.after)
        self.output = _needs_output(self.before, self.output)
        self.matrix = _path(self.matrix) or str(Path(self.output).with_suffix("")) + ".matrix.csv"

    @property
    def matrix_json(self) -> str:
        return str(Path(self.matrix).with_suffix(".json"))

    def outputs(self) -> list[str]:
        return [self.output, self.matrix, self.matrix_json]


def beside_output(output: str, ending: str) -> str:
    """``classes.tif`` -> ``classes<ending>`` in the same folder (every suffix of the output dropped)."""
    path = Path(output)
    return str(path.with_name(path.name.removesuffix("".join(path.suffixes)) + ending))


def selection_report_paths(adapter_out: str, report_out: str | None = None) -> tuple[str, str]:
    """The selection report (JSON) and its heatmap (PNG) an adaptation writes: beside the adapter by default."""
    report = report_out or str(Path(adapter_out).with_name(Path(adapter_out).stem + ".selection.json"))
    return report, str(Path(report).with_suffix(".png"))


def _needs_labels(scene: Scene, options: AdaptOptions) -> None:
    if options.mode == "dg" and not options.labels:
        raise BadInput(f"{scene.input}: DG adaptation needs labels (--labels: a class raster or labelled polygons)")


Job = (
    SegmentJob
    | AdaptJob
    | AdaptSegmentJob
    | EvaluateJob
    | SuggestLabelsJob
    | VectorizeJob
    | AreasJob
    | AccuracyJob
    | SamplePointsJob
    | ChangeJob
)
ANALYSIS_JOBS = (VectorizeJob, AreasJob, AccuracyJob, SamplePointsJob, ChangeJob)
JOBS: dict[str, type] = {
    job.command: job for job in (SegmentJob, AdaptJob, AdaptSegmentJob, EvaluateJob, SuggestLabelsJob, *ANALYSIS_JOBS)
}


# ---- argv -----------------------------------------------------------------------------------------------------


def _slots(obj_type: type) -> list[tuple[str | None, Any]]:
    """(part name or None, field) of a job type: its parts' fields first, then its own."""
    slots: list[tuple[str | None, Any]] = []
    own = []
    for spec in fields(obj_type):
        if spec.metadata.get("part"):
            slots += [(spec.name, f) for f in fields(spec.metadata["part"])]
        else:
            own.append((None, spec))
    return slots + own


def _format(value: Any, kind: str) -> str:
    if kind in ("ints", "floats"):
        return ",".join(repr(float(v)) if kind == "floats" else str(int(v)) for v in value)
    if kind == "float":
        text = repr(float(value))
        return text.removesuffix(".0")  # a whole top-k count reads 6, not 6.0
    return str(value)


def encode(job: Job) -> list[str]:
    """The ``crossearth`` command line of ``job`` (without ``--json-progress``): positional arguments first,
    then every option whose value is not its default."""
    positionals: list[str] = []
    options: list[str] = []
    for part_name, spec in _slots(type(job)):
        owner = getattr(job, part_name) if part_name else job
        value = getattr(owner, spec.name)
        if spec.metadata.get("positional"):
            positionals += [str(v) for v in value] if spec.metadata["kind"] == "strs" else [str(value)]
            continue
        flag = spec.metadata.get("flag")
        if not flag or value is None or (spec.default is not MISSING and value == spec.default):
            continue
        if spec.metadata["kind"] == "bool":
            flag = flag if value else "--no-" + flag.removeprefix("--")  # a switch that is on by default
            if flag not in options:  # --overwrite is one flag for every part of a job
                options.append(flag)
        else:
            options += [flag, _format(value, spec.metadata["kind"])]
    return [job.command, *positionals, *options]


def _parse(text: str, kind: str, flag: str) -> Any:
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise BadInput(f"{flag} {text!r}: expected a number") from None
    if kind == "ints":
        return parse_ints(text)
    if kind == "floats":
        return parse_bbox(text)
    return text


def decode(argv: list[str]) -> Job:
    """The job of a ``crossearth`` command line (``encode``'s inverse); ``--json-progress`` is ignored."""
    if not argv or argv[0] not in JOBS:
        raise BadInput(f"{argv[0] if argv else 'no command'}: expected one of {', '.join(JOBS)}")
    job_type = JOBS[argv[0]]
    slots = _slots(job_type)
    flags: dict[str, list[tuple[str | None, Any]]] = {}
    for part_name, spec in slots:
        if "flag" in spec.metadata:
            flags.setdefault(spec.metadata["flag"], []).append((part_name, spec))
    if "--output" in flags:
        flags["-o"] = flags["--output"]
    if "--count" in flags:
        flags["-n"] = flags["--count"]
    values: dict[str | None, dict[str, Any]] = {}
    positionals: list[str] = []
    tokens = iter(argv[1:])
    for token in tokens:
        if token == JSON_PROGRESS:
            continue
        negated = token not in flags and token.startswith("--no-") and ("--" + token[5:]) in flags
        name = "--" + token[5:] if negated else token
        if name.startswith("-") and name in flags:
            for part_name, spec in flags[name]:
                kind = spec.metadata["kind"]
                if kind == "bool":
                    value = not negated
                else:
                    text = next(tokens, None)
                    if text is None:
                        raise BadInput(f"{token}: expected a value")
                    value = _parse(text, kind, token)
                values.setdefault(part_name, {})[spec.name] = value
                if kind != "bool":  # the value is consumed once, for the first owner of a shared flag
                    break
        elif token.startswith("-") and len(token) > 1:
            raise BadInput(f"{token}: not an option of crossearth {job_type.command}")
        else:
            positionals.append(token)
    for part_name, spec in slots:
        if spec.metadata.get("positional"):
            if spec.metadata["kind"] == "strs":
                values.setdefault(part_name, {})[spec.name], positionals = positionals, []
            elif positionals:
                values.setdefault(part_name, {})[spec.name] = positionals.pop(0)
    if positionals:
        raise BadInput(f"{' '.join(positionals)}: unexpected arguments")
    kwargs = dict(values.get(None, {}))
    for spec in fields(job_type):
        if spec.metadata.get("part"):
            part_type = spec.metadata["part"]
            given = values.get(spec.name, {})
            missing = [f.name for f in fields(part_type) if f.name not in given and _required(f)]
            if missing:
                raise BadInput(f"crossearth {job_type.command}: missing {', '.join(missing)}")
            kwargs[spec.name] = part_type(**given)
    missing = [f.name for f in fields(job_type) if f.name not in kwargs and _required(f)]
    if missing:
        raise BadInput(f"crossearth {job_type.command}: missing {', '.join(missing)}")
    return job_type(**kwargs)


def _required(spec: Any) -> bool:
    return spec.default is MISSING and spec.default_factory is MISSING
