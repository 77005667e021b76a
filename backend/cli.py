"""The ``crossearth`` command line: segment, adapt, adapt-segment, evaluate, models, inspect, and the analyses
(vectorize, areas, accuracy, sample-points, change: :mod:`backend.analysis.commands`).

With ``--json-progress`` stdout carries one JSON event per line (docs/cli.md): the protocol the QGIS
plugin reads when it runs the backend as a subprocess. :func:`run_in_process` runs the same commands
inside another program and hands it the same events.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from backend.contract import (
    ADAPT_DEFAULTS,
    ANALYSIS_JOBS,
    AUTO,
    DEFAULT_MODEL,
    DEFAULT_SPOT_PIXELS,
    DEFAULT_SUGGESTED_SPOTS,
    ERROR,
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILURE,
    EXIT_OK,
    LOG,
    PROGRESS,
    RESULT,
    AdaptJob,
    AdaptOptions,
    AdaptSegmentJob,
    EvaluateJob,
    Job,
    Scene,
    SegmentJob,
    SegmentOptions,
    SuggestLabelsJob,
)
from backend.errors import BadInput
from backend.progress import CancelFn, Cancelled, CancelToken, never_cancelled

Event = dict

_event_sink: contextvars.ContextVar[Callable[[Event], None] | None] = contextvars.ContextVar("sink", default=None)
_external_cancel: contextvars.ContextVar[CancelFn | None] = contextvars.ContextVar("cancel", default=None)
_parsed: contextvars.ContextVar[list | None] = contextvars.ContextVar("parsed", default=None)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Adapt a remote-sensing segmentation model to your scene (CrossEarth-Gate), then segment it.",
)
stderr = Console(stderr=True)


class Reporter:
    """Sends progress, log lines, the result and errors to JSON lines, a callback, or a progress bar."""

    def __init__(self, emit: Callable[[Event], None] | None, bar: Progress | None) -> None:
        self._emit = emit
        self._bar = bar
        self._task = bar.add_task("starting", total=1.0) if bar else None
        self._fraction = 0.0

    def progress(self, fraction: float, message: str) -> None:
        self._fraction = max(self._fraction, min(1.0, float(fraction)))
        if self._emit:
            self._emit({"type": PROGRESS, "fraction": round(self._fraction, 4), "message": message})
        elif self._bar is not None:
            self._bar.update(self._task, completed=self._fraction, description=message)

    def log(self, message: str, level: str = "info") -> None:
        if self._emit:
            self._emit({"type": LOG, "level": level, "message": message})
        else:
            stderr.print(f"[yellow]warning:[/] {message}" if level == "warning" else message)

    def result(self, outputs: dict, metrics: dict | None = None) -> None:
        if self._emit:
            self._emit({"type": RESULT, "outputs": outputs, "metrics": metrics or {}})

    def error(self, message: str, exit_code: int) -> None:
        if self._emit:
            self._emit({"type": ERROR, "message": message, "exit_code": exit_code})
            return
        if self._bar is not None:  # the error is the last line, not a bar stopped at whatever it had reached
            self._bar.live.transient = True
            self._bar.stop()
        stderr.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)


@contextmanager
def _json_stdout() -> Iterator[Callable[[Event], None]]:
    """Keep the real stdout for JSON events and send everything else written to it (libraries too) to stderr."""
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)
    stream = os.fdopen(json_fd, "w", buffering=1)
    lock = threading.Lock()

    def emit(event: Event) -> None:
        with lock:
            stream.write(json.dumps(event) + "\n")
            stream.flush()

    try:
        yield emit
    finally:
        sys.stdout.flush()
        os.dup2(json_fd, 1)
        stream.close()


@contextmanager
def _cancel_on_signals(token: CancelToken) -> Iterator[None]:
    """SIGINT and SIGTERM set the cancel token; the job stops at its next check and cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: token.cancel())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(json_progress: bool, build: Callable[[], Job]) -> dict | None:
    """Build the job (bad values: exit 2) and run it with progress, cancel, warnings as log lines, and the exit
    codes of docs/cli.md; the metrics of a successful run. Under :func:`parse_job` the job is only built."""
    parsed = _parsed.get()
    if parsed is not None:
        parsed.append(build())
        return None
    token = CancelToken()
    external = _external_cancel.get()

    def is_cancelled() -> bool:
        return token.is_cancelled() or bool(external and external())

    sink = _event_sink.get()
    with ExitStack() as stack:
        stack.enter_context(_cancel_on_signals(token))
        if sink is not None:
            reporter = Reporter(sink, None)
        elif json_progress:
            reporter = Reporter(stack.enter_context(_json_stdout()), None)
        elif not stderr.is_terminal:  # a log file: rich would only print the bar's last state, and blank lines
            reporter = Reporter(None, None)
        else:
            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr,
            )
            stack.enter_context(bar)
            reporter = Reporter(None, bar)
        metrics: dict = {}

        def job(reporter: Reporter, is_cancelled: CancelFn) -> tuple[dict, dict | None]:
            outputs, found = execute_job(build(), reporter.progress, is_cancelled, reporter.log)
            metrics.update(found or {})
            return outputs, found

        code = _execute(job, reporter, is_cancelled)
    if code != EXIT_OK:
        raise typer.Exit(code)
    return metrics


def execute_job(
    job: Job, progress, is_cancelled: CancelFn, log: Callable[[str, str], None] = lambda message, level: None
) -> tuple[dict[str, str], dict | None]:
    """Run a job of backend.contract: the outputs it wrote (Processing's names) and its metrics; ``log(message,
    level)`` gets the lines a user should read (the self-check's verdict)."""
    if isinstance(job, ANALYSIS_JOBS):  # vectorize, areas, accuracy, sample-points, change: no torch
        from backend.analysis.commands import execute

        return execute(job, progress, is_cancelled, log)
    from backend import jobs

    if isinstance(job, SegmentJob):
        if not job.more_inputs:
            return jobs.segment(job.scene, job.options, progress, is_cancelled, cluster=job.cluster), None
        scenes = [job.scene, *(replace(job.scene, input=path) for path in job.more_inputs)]
        each = jobs.options_per_raster([scene.input for scene in scenes], job.options)
        results = jobs.segment_rasters(scenes, each, progress, is_cancelled, job.cluster)
        folders = {
            "OUTPUT": job.options.output,
            "CONFIDENCE": job.options.confidence,
            "ENTROPY": job.options.entropy,
            "QUICKLOOK": job.options.quicklook,
        }
        return {key: folder for key, folder in folders.items() if folder}, {"rasters": results}
    if isinstance(job, AdaptJob):
        outputs, _, result = jobs.adapt_scene(job.scene, job.options, progress, is_cancelled)
        return outputs, _adapt_metrics(log, result)
    if isinstance(job, AdaptSegmentJob):
        adapt_options = replace(job.adapt)  # adapt_and_segment fills in the adapter's paths
        outputs, result = jobs.adapt_and_segment(
            job.scene, adapt_options, job.segment, progress, is_cancelled, cluster=job.cluster
        )
        return outputs, _adapt_metrics(log, result)
    if isinstance(job, SuggestLabelsJob):
        from backend.suggest import suggest_labels

        spots = suggest_labels(
            job.scene, job.output, job.count, job.box, job.adapter, job.overwrite, progress, is_cancelled
        )
        return {"OUTPUT": job.output}, {"spots": len(spots)}
    if isinstance(job, EvaluateJob):
        from backend.rasters.atomic import atomic_output

        progress(0.0, "scoring")
        result = jobs.evaluate(job.prediction, job.labels, job.model, job.models_dir, job.skip)
        progress(1.0, "scored")
        outputs = {}
        if job.json_out:
            with atomic_output(job.json_out, job.overwrite) as tmp:
                tmp.write_text(json.dumps(result, indent=2) + "\n")
            outputs["OUTPUT"] = job.json_out
        return outputs, {k: result[k] for k in ("miou", "overall_accuracy", "iou", "pixels")}
    raise TypeError(f"not a job of backend.contract: {job!r}")


def _execute(job, reporter: Reporter, is_cancelled: CancelFn) -> int:
    def warn(message, category, filename, lineno, file=None, line=None):
        reporter.log(str(message), "warning")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", UserWarning)
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")  # Debian's and pip's matplotlib
        warnings.showwarning = warn
        try:
            outputs, metrics = job(reporter, is_cancelled)
        except BadInput as error:
            reporter.error(str(error), EXIT_BAD_INPUT)
            return EXIT_BAD_INPUT
        except Cancelled:
            reporter.error("cancelled; no output was written", EXIT_CANCELLED)
            return EXIT_CANCELLED
        except Exception as error:  # the one place that turns any failure into exit code 1
            reporter.error(f"{type(error).__name__}: {error}", EXIT_FAILURE)
            return EXIT_FAILURE
    reporter.result(outputs, metrics)
    for key, path in outputs.items():
        reporter.log(f"{key}: {path}")
    return EXIT_OK


# ---- options shared by several commands -------------------------------------------------------------------------

Input = Annotated[Path, typer.Argument(help="Input raster (any GDAL format).", show_default=False)]
ModelOpt = Annotated[str, typer.Option("--model", help="Registry name or model folder (see `crossearth models`).")]
ModelsDir = Annotated[Path | None, typer.Option("--models-dir", help="Extra folder of models.")]
Bands = Annotated[str | None, typer.Option("--bands", help="Raster bands for the model inputs, e.g. 3,2,1.")]
BBox = Annotated[str | None, typer.Option("--bbox", help="Region of interest XMIN,YMIN,XMAX,YMAX.")]
BBoxCrs = Annotated[str | None, typer.Option("--bbox-crs", help="CRS of --bbox (default: the raster's).")]
RoiOpt = Annotated[Path | None, typer.Option("--roi", help="Polygon vector file; outside its polygons is nodata.")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (default: all cores).")]
Resolution = Annotated[
    str,
    typer.Option(
        "--resolution",
        help="Pixel size to read the raster at: auto (the model's, when its card states one), native, "
        "or metres such as 0.5. Outputs are on the input's grid whatever it is.",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
JsonProgress = Annotated[bool, typer.Option("--json-progress", help="JSON events on stdout (docs/cli.md).")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Class raster to write (GeoTIFF).")]
Confidence = Annotated[Path | None, typer.Option("--confidence", help="Also write max-probability raster.")]
Entropy = Annotated[Path | None, typer.Option("--entropy", help="Also write prediction-entropy raster.")]
Quicklook = Annotated[Path | None, typer.Option("--quicklook", help="Also write a PNG quicklook.")]
TileSize = Annotated[int | None, typer.Option("--tile-size", min=16, help="Tile size (default: model card).")]
Stride = Annotated[int | None, typer.Option("--stride", min=1, help="Tile stride (default: model card).")]
Blend = Annotated[
    str | None,
    typer.Option("--blend", help="hann: overlapping tiles averaged; centre: each tile's centre kept (default: card)."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per forward pass.")]
Engine = Annotated[str, typer.Option("--engine", help="auto | onnx | torch (auto: onnx, torch below 64 tiles).")]
Precision = Annotated[
    str, typer.Option("--precision", help="auto | fp32 | int8 (auto: int8 MatMuls on onnx, fp32 on torch).")
]
Device = Annotated[str, typer.Option("--device", help="auto (GPU if any), cpu, cuda or cuda:N: where torch segments.")]
Mode = Annotated[
    str, typer.Option("--mode", help="da (self-training, with --labels on the labelled pixels) or dg (--labels only).")
]
Labels = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="Labels: a class raster aligned with INPUT (255 = none), or a vector file of polygons, points or lines "
        "in any CRS with a class field (names or values).",
    ),
]
LabelField = Annotated[str, typer.Option("--label-field", help="The vector labels' field of class names or values.")]
LabelBuffer = Annotated[
    float, typer.Option("--label-buffer", help="Metres around labelled points and lines (vector labels).")
]
Samples = Annotated[int, typer.Option("--samples", min=1, help="Adaptation tiles sampled over the scene.")]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Adaptation steps.")]
TopK = Annotated[float, typer.Option("--top-k", help="Active modules: a count, or a fraction < 1 of all.")]
Reselect = Annotated[int | None, typer.Option("--reselect-every", min=1, help="Steps between Fisher re-selections.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (runs are deterministic on CPU).")]
SelfCheck = Annotated[
    bool,
    typer.Option(
        "--self-check/--no-self-check",
        help="DA: compare the adapted and unadapted models without labels and keep the unadapted one "
        "when adaptation did not help.",
    ),
]
SourceSamples = Annotated[
    bool,
    typer.Option(
        "--source-samples/--no-source-samples",
        help="DA: mix in labelled crops of the model's training tiles that it ships (DACS).",
    ),
]
AdapterOut = Annotated[Path | None, typer.Option("--adapter-out", help="Adapter checkpoint to write.")]
ReportOut = Annotated[Path | None, typer.Option("--report-out", help="Selection report (JSON; PNG beside it).")]
Cluster = Annotated[
    str | None,
    typer.Option("--cluster", help="Predict on Dask: local, local:N (N workers here) or a scheduler address."),
]

DEFAULTS = AdaptOptions()  # the CLI shows and uses the contract's defaults (backend.contract.ADAPT_DEFAULTS)
SEGMENT_DEFAULTS = SegmentOptions(output="")
assert DEFAULTS.samples == ADAPT_DEFAULTS["samples"]


def _scene(input: Path, bands, bbox, bbox_crs, roi, model, models_dir, threads, resolution) -> Scene:
    """Bands and bbox as typed (``3,2,1``, ``xmin,ymin,xmax,ymax``): the contract parses and checks them."""
    return Scene(
        input=str(input),
        bands=bands,
        bbox=bbox,
        bbox_crs=bbox_crs,
        roi=roi,
        model=model,
        models_dir=models_dir,
        threads=threads,
        resolution=resolution,
    )


def _adapt_options(
    mode,
    labels,
    label_field,
    label_buffer,
    samples,
    steps,
    top_k,
    reselect_every,
    seed,
    source_samples,
    self_check,
    adapter_out,
    report_out,
    overwrite,
) -> AdaptOptions:
    return AdaptOptions(
        mode=mode,
        labels=labels,
        label_field=label_field,
        label_buffer=label_buffer,
        samples=samples,
        steps=steps,
        top_k=top_k,
        reselect_every=reselect_every,
        seed=seed,
        source_samples=source_samples,
        self_check=self_check,
        adapter_out=adapter_out,
        report_out=report_out,
        overwrite=overwrite,
    )


@app.command()
def segment(
    inputs: Annotated[
        list[Path], typer.Argument(help="Input raster(s); with several, output paths are folders.", show_default=False)
    ],
    output: Output,
    model: ModelOpt = DEFAULT_MODEL,
    models_dir: ModelsDir = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="Apply a saved adapter checkpoint.")] = None,
    bands: Bands = None,
    bbox: BBox = None,
    bbox_crs: BBoxCrs = None,
    roi: RoiOpt = None,
    confidence: Confidence = None,
    entropy: Entropy = None,
    quicklook: Quicklook = None,
    tile_size: TileSize = None,
    stride: Stride = None,
    blend: Blend = None,
    batch_size: BatchSize = SEGMENT_DEFAULTS.batch_size,
    engine: Engine = SEGMENT_DEFAULTS.engine,
    precision: Precision = SEGMENT_DEFAULTS.precision,
    device: Device = SEGMENT_DEFAULTS.device,
    threads: Threads = None,
    resolution: Resolution = AUTO,
    cluster: Cluster = None,
    overwrite: Overwrite = False,
    json_progress: JsonProgress = False,
) -> None:
    """Segment rasters with a model (optionally adapted) into styled class rasters."""

    def build() -> SegmentJob:
        return SegmentJob(
            scene=_scene(inputs[0], bands, bbox, bbox_crs, roi, model, models_dir, threads, resolution),
            options=SegmentOptions(
                output=output,
                confidence=confidence,
                entropy=entropy,
                quicklook=quicklook,
                tile_size=tile_size,
                stride=stride,
                blend=blend,
                batch_size=batch_size,
                engine=engine,
                precision=precision,
                device=device,
                adapter=adapter,
                overwrite=overwrite,
            ),
            more_inputs=[str(path) for path in inputs[1:]],
            cluster=cluster,
        )

    _run(json_progress, build)


@app.command()
def adapt(
    input: Input,
    adapter_out: Annotated[Path, typer.Option("--adapter-out", help="Adapter checkpoint to write.")],
    model: ModelOpt = DEFAULT_MODEL,
    models_dir: ModelsDir = None,
    bands: Bands = None,
    bbox: BBox = None,
    bbox_crs: BBoxCrs = None,
    roi: RoiOpt = None,
    mode: Mode = DEFAULTS.mode,
    labels: Labels = None,
    label_field: LabelField = DEFAULTS.label_field,
    label_buffer: LabelBuffer = DEFAULTS.label_buffer,
    samples: Samples = DEFAULTS.samples,
    steps: Steps = DEFAULTS.steps,
    top_k: TopK = DEFAULTS.top_k,
    reselect_every: Reselect = None,
    seed: Seed = DEFAULTS.seed,
    source_samples: SourceSamples = DEFAULTS.source_samples,
    self_check: SelfCheck = DEFAULTS.self_check,
    report_out: ReportOut = None,
    threads: Threads = None,
    resolution: Resolution = AUTO,
    overwrite: Overwrite = False,
    json_progress: JsonProgress = False,
) -> None:
    """Adapt the model to a scene (Fisher-gated, DA or DG) and save the adapter checkpoint."""

    def build() -> AdaptJob:
        return AdaptJob(
            scene=_scene(input, bands, bbox, bbox_crs, roi, model, models_dir, threads, resolution),
            options=_adapt_options(
                mode,
                labels,
                label_field,
                label_buffer,
                samples,
                steps,
                top_k,
                reselect_every,
                seed,
                source_samples,
                self_check,
                adapter_out,
                report_out,
                overwrite,
            ),
        )

    _run(json_progress, build)


def _adapt_metrics(log: Callable[[str, str], None], result) -> dict:
    """The adaptation's result event metrics; the self-check's verdict is also a log line the user reads."""
    metrics = {"active_modules": result.active_modules, "trainable_parameters": result.trainable_parameters}
    if result.self_check:
        from backend.adaptation.self_check import estimate_line, verdict_message

        if "estimate" in result.self_check:
            log(estimate_line(result.self_check["estimate"]), "info")
        level = "info" if result.self_check["kept"] == "adapted" else "warning"
        log(verdict_message(result.self_check), level)
        metrics["self_check"] = result.self_check
    return metrics


@app.command("adapt-segment")
def adapt_segment(
    input: Input,
    output: Output,
    model: ModelOpt = DEFAULT_MODEL,
    models_dir: ModelsDir = None,
    bands: Bands = None,
    bbox: BBox = None,
    bbox_crs: BBoxCrs = None,
    roi: RoiOpt = None,
    mode: Mode = DEFAULTS.mode,
    labels: Labels = None,
    label_field: LabelField = DEFAULTS.label_field,
    label_buffer: LabelBuffer = DEFAULTS.label_buffer,
    samples: Samples = DEFAULTS.samples,
    steps: Steps = DEFAULTS.steps,
    top_k: TopK = DEFAULTS.top_k,
    reselect_every: Reselect = None,
    seed: Seed = DEFAULTS.seed,
    source_samples: SourceSamples = DEFAULTS.source_samples,
    self_check: SelfCheck = DEFAULTS.self_check,
    adapter_out: AdapterOut = None,
    report_out: ReportOut = None,
    confidence: Confidence = None,
    entropy: Entropy = None,
    quicklook: Quicklook = None,
    tile_size: TileSize = None,
    stride: Stride = None,
    blend: Blend = None,
    batch_size: BatchSize = SEGMENT_DEFAULTS.batch_size,
    engine: Engine = SEGMENT_DEFAULTS.engine,
    precision: Precision = SEGMENT_DEFAULTS.precision,
    device: Device = SEGMENT_DEFAULTS.device,
    threads: Threads = None,
    resolution: Resolution = AUTO,
    cluster: Cluster = None,
    overwrite: Overwrite = False,
    json_progress: JsonProgress = False,
) -> None:
    """Adapt the model to this scene, then segment the whole scene (or ROI) with it."""

    def build() -> AdaptSegmentJob:
        return AdaptSegmentJob(
            scene=_scene(input, bands, bbox, bbox_crs, roi, model, models_dir, threads, resolution),
            adapt=_adapt_options(
                mode,
                labels,
                label_field,
                label_buffer,
                samples,
                steps,
                top_k,
                reselect_every,
                seed,
                source_samples,
                self_check,
                adapter_out,
                report_out,
                overwrite,
            ),
            segment=SegmentOptions(
                output=output,
                confidence=confidence,
                entropy=entropy,
                quicklook=quicklook,
                tile_size=tile_size,
                stride=stride,
                blend=blend,
                batch_size=batch_size,
                engine=engine,
                precision=precision,
                device=device,
                overwrite=overwrite,
            ),
            cluster=cluster,
        )

    _run(json_progress, build)


@app.command("suggest-labels")
def suggest_labels(
    input: Input,
    output: Annotated[Path, typer.Option("--output", "-o", help="GeoPackage of the boxes to label.")],
    count: Annotated[int, typer.Option("-n", "--count", help="How many places to suggest.")] = DEFAULT_SUGGESTED_SPOTS,
    box: Annotated[int, typer.Option("--box", help="Side of each box, in pixels.")] = DEFAULT_SPOT_PIXELS,
    model: ModelOpt = DEFAULT_MODEL,
    models_dir: ModelsDir = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="Apply a saved adapter checkpoint.")] = None,
    bands: Bands = None,
    bbox: BBox = None,
    bbox_crs: BBoxCrs = None,
    roi: RoiOpt = None,
    threads: Threads = None,
    resolution: Resolution = AUTO,
    overwrite: Overwrite = False,
    json_progress: JsonProgress = False,
) -> None:
    """Where to label next: small boxes where the model is least sure, spread over the scene and its classes."""

    def build() -> SuggestLabelsJob:
        return SuggestLabelsJob(
            scene=_scene(input, bands, bbox, bbox_crs, roi, model, models_dir, threads, resolution),
            output=output,
            count=count,
            box=box,
            adapter=adapter,
            overwrite=overwrite,
        )

    _run(json_progress, build)


@app.command()
def evaluate(
    prediction: Annotated[Path, typer.Argument(help="Class raster written by segment.", show_default=False)],
    labels: Annotated[Path, typer.Argument(help="Label raster (class indices, 255 = ignore).", show_default=False)],
    model: ModelOpt = DEFAULT_MODEL,
    models_dir: ModelsDir = None,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="Write the scores as JSON.")] = None,
    overwrite: Overwrite = False,
    skip: Annotated[
        Path | None, typer.Option("--skip", help="Vector file of labelled shapes whose pixels are not scored.")
    ] = None,
    json_progress: JsonProgress = False,
) -> None:
    """Per-class IoU, mIoU and overall accuracy of a class raster against labels."""
    job = partial(EvaluateJob, str(prediction), str(labels), model, models_dir, json_out, overwrite, skip)
    result = _run(json_progress, job)
    if result and not json_progress:
        table = Table(title=f"{prediction.name} against {labels.name}")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for name, value in result["iou"].items():
            table.add_row(name, "-" if value is None else f"{100 * value:.1f}")
        table.add_row("[bold]mIoU", f"[bold]{100 * result['miou']:.1f}")
        table.add_row("overall accuracy", f"{100 * result['overall_accuracy']:.1f}")
        Console().print(table)


@app.command()
def models(
    models_dir: ModelsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the model cards as JSON.")] = False,
) -> None:
    """List the models of the registry."""
    from backend.model.registry import list_models

    cards = list_models(models_dir)
    if as_json:
        print(json.dumps([{**card.to_dict(), "folder": str(card.folder)} for card in cards], indent=1))
        return
    table = Table(title="CrossEarth models")
    for column in ("name", "classes", "bands", "tile", "resolution", "description"):
        table.add_column(column)
    for card in cards:
        classes = ", ".join(c["name"] for c in card.classes)
        resolution = "not known" if card.resolution_m is None else f"{card.resolution_m:g} m"
        table.add_row(card.name, classes, ",".join(card.bands), str(card.tile_size), resolution, card.description)
    Console().print(table)


@app.command("inspect")
def inspect_command(
    input: Input,
    model: ModelOpt = DEFAULT_MODEL,
    models_dir: ModelsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Describe a raster (bands, dtype, CRS, nodata, size, pixel size against the model's) and whether the model
    can take it."""
    from backend.model.registry import resolve_model
    from backend.rasters.raster_io import default_band_mapping, inspect_raster
    from backend.rasters.resample import pixel_size_m, resolution_factor

    try:
        info = inspect_raster(input)
        card = resolve_model(model, models_dir)
        try:
            bands = default_band_mapping(info, card.architecture.in_chans)
            verdict = f"yes: bands {bands} feed the model's {', '.join(card.bands)} inputs"
        except BadInput as error:
            bands, verdict = None, f"no: {error}"
    except BadInput as error:
        stderr.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    report = {
        **{k: v for k, v in asdict(info).items() if k not in ("crs", "transform")},
        "crs": info.crs.to_string() if info.crs else None,
        "transform": list(info.transform)[:6],
        "model": card.name,
        "pixel_size_m": pixel_size_m(info),  # x, y; null without a CRS
        "model_resolution_m": card.resolution_m,  # null when the card states none
        "resolution_factor": resolution_factor(info, card.resolution_m),
        "band_mapping": bands,
        "model_can_take_it": verdict,
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table(title=str(input), show_header=False)
    for key, value in report.items():
        table.add_row(key, str(value))
    Console().print(table)


def run_job(job: Job, on_event: Callable[[Event], None], is_cancelled: CancelFn = never_cancelled) -> int:
    """Run a job of backend.contract inside this process (e.g. QGIS): the JSON-progress events go to
    ``on_event``, and the exit code is the CLI's."""
    return _execute(
        lambda reporter, cancelled: execute_job(job, reporter.progress, cancelled, reporter.log),
        Reporter(on_event, None),
        is_cancelled,
    )


def parse_job(argv: list[str]) -> Job:
    """The job a ``crossearth`` command line asks for, as the CLI parses it (its options' checks included)."""
    parsed: list = []
    token = _parsed.set(parsed)
    try:
        app(args=list(argv), standalone_mode=False, prog_name="crossearth")
    except click.ClickException as error:
        raise BadInput(error.format_message()) from None
    finally:
        _parsed.reset(token)
    if not parsed:
        raise BadInput(f"{' '.join(argv[:1])}: not a command that runs a job")
    return parsed[0]


from backend.analysis.commands import register as _register_analysis  # noqa: E402  (the analyses' commands)

_register_analysis(app, _run)


def run_in_process(argv: list[str], on_event: Callable[[Event], None], is_cancelled: CancelFn) -> int:
    """Run a CLI command line inside this process, delivering the JSON-progress events to ``on_event``."""
    sink_token = _event_sink.set(on_event)
    cancel_token = _external_cancel.set(is_cancelled)
    try:
        return app(args=list(argv), standalone_mode=False, prog_name="crossearth") or EXIT_OK
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.ClickException as error:
        on_event({"type": ERROR, "message": error.format_message(), "exit_code": EXIT_BAD_INPUT})
        return EXIT_BAD_INPUT
    finally:
        _event_sink.reset(sink_token)
        _external_cancel.reset(cancel_token)


def main() -> None:
    """Console entry point. Exits without interpreter teardown (torch and GDAL take seconds to unload),
    so that a cancelled subprocess is gone at once; every output is complete or removed by then."""
    try:
        app(prog_name="crossearth")
        code = EXIT_OK
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (EXIT_OK if exit_.code is None else EXIT_FAILURE)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
