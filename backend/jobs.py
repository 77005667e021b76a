"""The jobs users run: segment a scene, adapt to a scene, both in a row, evaluate against labels.

Each takes plain dataclasses (built by the CLI or by the QGIS plugin alike) and the usual
``progress``/``is_cancelled`` callables, and returns the paths it wrote under QGIS Processing's names.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from backend.adaptation.adapt import AdaptConfig, AdaptResult, adapt, prepare_trainable
from backend.adaptation.augment import Sample
from backend.adaptation.labels import MIN_HELD_OUT, LabelShapes, is_vector, read_label_shapes
from backend.adaptation.selection_report import plot_selection, write_selection_json
from backend.adaptation.self_check import Verdict, decide, held_out_estimate, judge_by_estimate, measure
from backend.adaptation.source_samples import load_source_samples
from backend.analysis.metrics import IGNORE_INDEX, confusion_matrix, scores
from backend.contract import (
    DEFAULT_MODEL,
    AdaptOptions,
    Scene,
    SegmentOptions,
    beside_output,
    selection_report_paths,
)
from backend.errors import BadInput
from backend.model.checkpoint import load_adapter, save_adapter
from backend.model.network import SegmentationModel
from backend.model.registry import ModelCard, load_model, resolve_model
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress, sub_progress
from backend.rasters.atomic import check_writable
from backend.rasters.class_raster import parse_classes
from backend.rasters.raster_io import SceneReader, default_band_mapping, inspect_raster
from backend.rasters.resample import ScaleChoice, label_raster_at, scene_at, scene_scale, write_back
from backend.rasters.roi import RasterLike, Roi, resolve_roi
from backend.segmentation.predictor import make_predictor, pick_engine, resolve_precision
from backend.segmentation.sliding_window import LocalStrips, RasterJob, segment_jobs
from backend.segmentation.tiling import Tiling

# output file name endings when several rasters are segmented into folders
PER_RASTER_NAMES = {
    "output": "classes.tif",
    "confidence": "confidence.tif",
    "entropy": "entropy.tif",
    "quicklook": "quicklook.png",
}
MIN_VALID_FRACTION = 0.5  # adaptation tiles with less valid (non-nodata, inside the ROI) area are skipped


def open_model(scene: Scene, adapter: str | None = None) -> tuple[ModelCard, SegmentationModel]:
    card = resolve_model(scene.model, scene.models_dir)
    model = load_model(card)
    if adapter:
        load_adapter(model, adapter)
    return card, model


def _open(scene: Scene, card: ModelCard) -> tuple[SceneReader, Roi]:
    reader = SceneReader(scene.input, scene.bands, n_inputs=card.architecture.in_chans)
    try:
        roi = resolve_roi(reader, scene.bbox, scene.bbox_crs, scene.roi)
    except BaseException:
        reader.close()
        raise
    return reader, roi


def segment(
    scene: Scene,
    options: SegmentOptions,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
    model: tuple[ModelCard, SegmentationModel] | None = None,
    cluster: str | None = None,
) -> dict[str, str]:
    """Sliding-window segmentation of the scene's ROI with the model (and adapter, if given).

    With ``cluster`` (``local[:N]`` or a Dask scheduler address) the strips are predicted on Dask
    workers, which load the model and ``options.adapter`` from their paths (docs/cluster.md).
    The scene is read at ``scene.resolution`` (see :func:`segment_at_scale`).
    """
    return segment_rasters([scene], [options], progress, is_cancelled, cluster, model)[0]


def segment_rasters(
    scenes: Sequence[Scene],
    options: Sequence[SegmentOptions],
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
    cluster: str | None = None,
    model: tuple[ModelCard, SegmentationModel] | None = None,
) -> list[dict[str, str]]:
    """Segment several rasters with one model, adapter and tiling (the first scene's and options').

    The tiling is resolved once, from the model card and the options, and each scene's read scale with it.
    Rasters read as they are are planned (a :class:`RasterJob` each; every output path checked before any
    model is loaded) and their strips flow as one stream through one executor, this process's or a Dask
    cluster's. When a raster is resampled the rasters go one at a time (:func:`segment_at_scale`), since each
    one's outputs are written back on its own grid.
    """
    if len({(s.model, s.models_dir) for s in scenes}) > 1 or len({_shared(o) for o in options}) > 1:
        raise ValueError("the rasters of one run share the model, adapter, engine, device and tiling")
    if cluster and model is not None:
        raise ValueError("cluster workers load the model from its folder: give the adapter as options.adapter")
    for opts in options:
        _check_outputs(opts.output, opts.confidence, opts.entropy, opts.quicklook, overwrite=opts.overwrite)
    first, settings = scenes[0], options[0]
    card = model[0] if model else resolve_model(first.model, first.models_dir)
    tiling = segment_tiling(card, settings)
    choices = [scene_scale(scene, card.resolution_m, tiling.tile) for scene in scenes]
    if not any(choice.resamples for choice in choices):
        return _segment_as_read(scenes, options, card, tiling, progress, is_cancelled, cluster, model)
    if not cluster and model is None:
        model = open_model(first, settings.adapter)  # one model for all the rasters
    count, results = len(scenes), []
    for i, (scene, opts, choice) in enumerate(zip(scenes, options, choices, strict=True)):
        part = sub_progress(progress, i / count, (i + 1) / count)
        if choice.resamples:
            results.append(segment_at_scale(scene, opts, choice, tiling, part, is_cancelled, model, cluster))
        else:
            results += _segment_as_read([scene], [opts], card, tiling, part, is_cancelled, cluster, model)
    return results


def _segment_as_read(
    scenes: Sequence[Scene],
    options: Sequence[SegmentOptions],
    card: ModelCard,
    tiling: Tiling,
    progress: ProgressFn,
    is_cancelled: CancelFn,
    cluster: str | None,
    model: tuple[ModelCard, SegmentationModel] | None,
) -> list[dict[str, str]]:
    """The rasters at the pixel size they are read at: planned, predicted by one executor, written in order."""
    first, settings = scenes[0], options[0]
    jobs = [_plan(scene, opts, card, tiling, settings.batch_size) for scene, opts in zip(scenes, options, strict=True)]
    quicklooks = any(o.quicklook for o in options)
    segment_progress = sub_progress(progress, 0.02, 0.98 if quicklooks else 1.0)
    if cluster:
        _segment_on_cluster(cluster, card, settings, first.threads, jobs, segment_progress, is_cancelled)
    else:
        network = model[1] if model else open_model(first, settings.adapter)[1]
        tiles = sum(job.source.grid.tiles for job in jobs)
        predict, engine = make_predictor(
            network,
            settings.engine,
            tiling.tile,
            settings.batch_size,
            first.threads,
            tiles,
            settings.device,
            settings.precision,
        )
        progress(0.02, f"segmenting with {card.name} on {engine} ({resolve_precision(engine, settings.precision)})")
        jobs = [replace(job, metadata=_tags(card, engine, settings)) for job in jobs]
        segment_jobs(jobs, LocalStrips(predict), card.classes, segment_progress, is_cancelled)
    return [_finish_outputs(scene, opts, card, progress) for scene, opts in zip(scenes, options, strict=True)]


def segment_tiling(card: ModelCard, options: SegmentOptions) -> Tiling:
    """The run's one tiling: the model card's, with the options' tile size, stride and blend over it."""
    return card.tiling.adjusted(options.tile_size, options.stride, options.blend)


def _plan(scene: Scene, options: SegmentOptions, card: ModelCard, tiling: Tiling, batch_size: int) -> RasterJob:
    """The raster's job; its bad input (bands, ROI) is reported here, before the model is loaded or exported."""
    reader, roi = _open(scene, card)
    with reader:
        return RasterJob.plan(
            reader,
            roi,
            tiling,
            n_classes=len(card.classes),
            batch_size=batch_size,
            output=options.output,
            confidence=options.confidence,
            entropy=options.entropy,
            overwrite=options.overwrite,
        )


def _tags(card: ModelCard, engine: str, options: SegmentOptions) -> dict[str, str]:
    precision = resolve_precision(engine, options.precision)
    return {"model": card.name, "engine": engine, "precision": precision, "adapter": options.adapter or ""}


def _segment_on_cluster(
    cluster: str,
    card: ModelCard,
    settings: SegmentOptions,
    threads: int | None,
    jobs: list[RasterJob],
    progress: ProgressFn,
    is_cancelled: CancelFn,
) -> None:
    """The jobs on Dask workers, which load the model (and ``settings.adapter``) from their paths."""
    from backend.segmentation.cluster import DaskStrips, PredictorSpec, connect, local_threads, parse_cluster

    target = parse_cluster(cluster)
    # decided here, alike for all workers, by the tiles a local worker (or the cluster) gets
    tiles = sum(job.source.grid.tiles for job in jobs)
    share = math.ceil(tiles / target) if isinstance(target, int) else tiles
    engine = pick_engine(settings.engine, settings.precision, share, settings.device)
    jobs = [replace(job, metadata=_tags(card, engine, settings)) for job in jobs]
    predictor = PredictorSpec(
        model_folder=str(Path(card.folder).resolve()),
        adapter=os.path.abspath(settings.adapter) if settings.adapter else None,
        engine=engine,
        precision=resolve_precision(engine, settings.precision),
        device=settings.device,
        tile=jobs[0].source.grid.tiling.tile,
        batch_size=settings.batch_size,
        threads=threads or (local_threads(target) if isinstance(target, int) else None),
    )
    where = f"{target} local Dask workers" if isinstance(target, int) else f"the Dask scheduler at {target}"
    progress(0.0, f"connecting to {where}")
    with connect(cluster) as client:
        segment_jobs(jobs, DaskStrips(client, predictor), card.classes, progress, is_cancelled)


def segment_at_scale(
    scene: Scene,
    options: SegmentOptions,
    choice: ScaleChoice,
    tiling: Tiling,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
    model: tuple[ModelCard, SegmentationModel] | None = None,
    cluster: str | None = None,
) -> dict[str, str]:
    """Segment the scene read at ``choice``'s pixel size (a VRT of it), then write the outputs back on the
    input's grid, so that they overlay it exactly; the intermediate rasters live in a hidden folder beside
    the output and go with it."""
    _check_outputs(options.output, options.confidence, options.entropy, options.quicklook, overwrite=options.overwrite)
    for path in options.outputs():
        if Path(path).resolve() == Path(scene.input).resolve():
            raise BadInput(f"{path}: an output would replace the input raster")
    card = model[0] if model else resolve_model(scene.model, scene.models_dir)
    folder = Path(options.output).absolute().parent
    progress(0.0, choice.describe())
    with (
        scene_at(scene, choice, folder) as resampled,
        tempfile.TemporaryDirectory(prefix=".crossearth-resolution-", dir=folder) as tmp,
    ):
        wanted = {"class": options.output, "confidence": options.confidence, "entropy": options.entropy}
        wanted = {key: path for key, path in wanted.items() if path}
        made = {key: str(Path(tmp) / f"{key}.tif") for key in wanted}
        on_model_grid = replace(
            options,
            output=made["class"],
            confidence=made.get("confidence"),
            entropy=made.get("entropy"),
            quicklook=None,
            overwrite=False,
        )
        grid_progress = sub_progress(progress, 0.0, 0.85)
        _segment_as_read([resampled], [on_model_grid], card, tiling, grid_progress, is_cancelled, cluster, model)
        progress(0.85, "writing the outputs back on the input's grid")
        source = inspect_raster(scene.input)
        write_back(
            made,
            wanted,
            source=source,
            bands=scene.bands or default_band_mapping(source, card.architecture.in_chans),
            roi=resolve_roi(source, scene.bbox, scene.bbox_crs, scene.roi),
            classes=parse_classes(card.classes),
            choice=choice,
            overwrite=options.overwrite,
            is_cancelled=is_cancelled,
        )
    progress(0.98 if options.quicklook else 1.0, "outputs written on the input's grid")
    return _finish_outputs(scene, options, card, progress)


def _finish_outputs(scene: Scene, options: SegmentOptions, card: ModelCard, progress: ProgressFn) -> dict[str, str]:
    """Write the quicklook, if asked for, and name the outputs."""
    outputs = {"OUTPUT": options.output}
    if options.confidence:
        outputs["CONFIDENCE"] = options.confidence
    if options.entropy:
        outputs["ENTROPY"] = options.entropy
    if options.quicklook:
        from backend.rasters.quicklook import write_quicklook

        write_quicklook(scene.input, options.output, card.classes, options.quicklook, scene.bands, options.overwrite)
        outputs["QUICKLOOK"] = options.quicklook
        progress(1.0, "quicklook written")
    return outputs


def options_per_raster(inputs: Sequence[str], folders: SegmentOptions) -> list[SegmentOptions]:
    """Outputs of several rasters: ``folders``' output (and confidence, entropy, quicklook) are folders that get
    ``<input stem>_classes.tif`` (``_confidence.tif``, ``_entropy.tif``, ``_quicklook.png``) per raster."""
    stems = [Path(path).stem for path in inputs]
    if len(set(stems)) != len(stems):
        raise BadInput(f"{', '.join(inputs)}: inputs with the same file name would write the same outputs")
    for kind in PER_RASTER_NAMES:
        folder = getattr(folders, kind)
        if folder is not None and not Path(folder).is_dir():
            raise BadInput(f"{folder}: with several inputs the {kind} path must be an existing folder")
    return [
        replace(
            folders,
            **{
                kind: str(Path(getattr(folders, kind)) / f"{stem}_{suffix}")
                for kind, suffix in PER_RASTER_NAMES.items()
                if getattr(folders, kind) is not None
            },
        )
        for stem in stems
    ]


def _shared(options: SegmentOptions) -> tuple:
    return (
        options.adapter,
        options.engine,
        options.precision,
        options.device,
        options.tile_size,
        options.stride,
        options.blend,
        options.batch_size,
    )


def sample_windows(roi: Roi, count: int, size: int) -> list[Window]:
    """Up to ``count`` windows of ``size`` on a regular grid over the ROI, spread evenly over it."""
    window = roi.window
    col0, row0, width, height = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
    per_row = max(1, math.ceil(math.sqrt(count * width / max(height, 1))))
    per_col = max(1, math.ceil(count / per_row))
    xs = np.linspace(col0, col0 + max(width - size, 0), per_row).round().astype(int)
    ys = np.linspace(row0, row0 + max(height - size, 0), per_col).round().astype(int)
    return [Window(int(x), int(y), min(size, width), min(size, height)) for y in ys for x in xs]


def adaptation_samples(
    reader: SceneReader, roi: Roi, count: int, size: int, labels: str | LabelShapes | None = None
) -> list[Sample]:
    """Tiles spread over the scene, skipping those mostly nodata or outside the ROI, with a ``mask`` when there are
    labels: a label raster's classes, or labelled shapes burnt in (then one more tile centred on each shape)."""
    label_dataset = _open_labels(labels, reader) if isinstance(labels, str) else None
    windows = sample_windows(roi, count, size)
    if isinstance(labels, LabelShapes):
        windows += labels.pixel_windows(size, reader.width, reader.height)
    samples = []
    try:
        for window in windows:
            image, valid = reader.read(window)
            valid &= roi.mask(window)
            mask = None
            if label_dataset is not None:
                mask = label_dataset.read(1, window=window).astype(np.int64)
            elif labels is not None:
                mask = labels.burn(window)
            labelled = mask is not None and bool((valid & (mask != IGNORE_INDEX)).any())
            if valid.mean() < MIN_VALID_FRACTION and not labelled:
                continue
            sample = {"image": torch.from_numpy(image), "valid": torch.from_numpy(valid)}
            if mask is not None:
                sample["mask"] = torch.from_numpy(np.where(valid, mask, IGNORE_INDEX))
            samples.append(sample)
    finally:
        if label_dataset is not None:
            label_dataset.close()
    if not samples:
        raise BadInput(f"{reader.path}: no part of the region of interest has enough valid pixels to adapt on")
    return samples


@dataclass
class AdaptationTiles:
    """The tiles adaptation trains on and, with labelled shapes, one tile per held-out shape to judge it by: a
    third of the shapes, or, when that is too few, every shape once over folds (each its training tiles)."""

    train: list[Sample]
    held_out: list[Sample] = field(default_factory=list)
    folds: list[tuple[list[Sample], list[Sample]]] = field(default_factory=list)


def scene_samples(
    scene: Scene, card: ModelCard, options: AdaptOptions, choice: ScaleChoice | None = None
) -> AdaptationTiles:
    """The adaptation tiles of the scene with the options' labels: a class raster, or labelled shapes of which,
    with the self-check on, a third of each class's (LabelShapes.split) is held out to estimate how well
    adaptation did; with fewer than MIN_HELD_OUT held out, every shape trains and the estimate comes from folds
    (LabelShapes.folds). Without the self-check every shape trains and nothing is held out. The tiles
    are read at ``choice``'s pixel size (default: the scene's resolution with the card's), a label raster too."""
    choice = choice or scene_scale(scene, card.resolution_m, card.tile_size)
    with scene_at(scene, choice) as resampled, tempfile.TemporaryDirectory(prefix="crossearth-labels-") as tmp:
        labels: str | LabelShapes | None = options.labels
        if labels and not is_vector(labels) and choice.resamples:
            _check_labels(labels, inspect_raster(scene.input))
            labels = label_raster_at(labels, choice, tmp)
        reader, roi = _open(resampled, card)
        with reader:
            return _samples(reader, roi, card, options, labels)


def _samples(
    reader: SceneReader, roi: Roi, card: ModelCard, options: AdaptOptions, labels: str | None
) -> AdaptationTiles:
    """The tiles of an open scene (as it is, or its VRT at the model's resolution) with ``labels`` on its grid."""
    held_out: list[Sample] = []
    folds: list[tuple[list[Sample], list[Sample]]] = []
    shapes: str | LabelShapes | None = labels
    if labels and is_vector(labels):
        every = read_label_shapes(labels, reader, card.classes, options.label_field, options.label_buffer, roi.window)
        shapes = every  # without the self-check every shape trains and none is held out
        trained, kept_aside = every.split()
        if options.self_check and len(kept_aside.shapes) >= MIN_HELD_OUT:
            shapes, held_out = trained, held_out_samples(reader, roi, kept_aside, options.sample_size)
        elif options.self_check:
            folds = [
                (
                    adaptation_samples(reader, roi, options.samples, options.sample_size, fold_train),
                    held_out_samples(reader, roi, fold_out, options.sample_size),
                )
                for fold_train, fold_out in every.folds()
            ]
    train = adaptation_samples(reader, roi, options.samples, options.sample_size, shapes)
    return AdaptationTiles(train, held_out, folds)


def check_adaptation(
    original: SegmentationModel,
    adapted: SegmentationModel,
    tiles: AdaptationTiles,
    card: ModelCard,
    config: AdaptConfig,
    source: list[Sample] | None = None,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> Verdict:
    """Did adaptation help? Judged on the held-out labelled shapes when there are some (with folds: a model
    adapted without each fold's shapes, as ``adapted`` was, judged on them), else without labels."""
    names = [c["name"] for c in card.classes]
    if tiles.folds:
        judged = []
        for index, (train, held_out) in enumerate(tiles.folds):
            progress(index / len(tiles.folds), f"self-check: adapting without fold {index + 1}/{len(tiles.folds)}")
            fold_progress = sub_progress(progress, index / len(tiles.folds), (index + 1) / len(tiles.folds))
            fold = adapt(copy.deepcopy(original), train, config, source, fold_progress, is_cancelled)
            judged.append((fold.model, held_out))
        return judge_by_estimate(held_out_estimate(original, judged, names))
    if tiles.held_out:
        return judge_by_estimate(held_out_estimate(original, [(adapted, tiles.held_out)], names))
    return decide(measure(original, adapted, tiles.train))


def held_out_samples(reader: SceneReader, roi: Roi, shapes: LabelShapes, size: int) -> list[Sample]:
    """One tile centred on each shape, its ``mask`` that shape alone (so no pixel is counted twice)."""
    samples = []
    for item, window in zip(shapes.shapes, shapes.pixel_windows(size, reader.width, reader.height), strict=True):
        image, valid = reader.read(window)
        valid &= roi.mask(window)
        mask = np.where(valid, replace(shapes, shapes=(item,)).burn(window), IGNORE_INDEX)
        if (mask != IGNORE_INDEX).any():
            samples.append(
                {"image": torch.from_numpy(image), "valid": torch.from_numpy(valid), "mask": torch.from_numpy(mask)}
            )
    return samples


def _check_labels(path: str, scene: RasterLike) -> None:
    """A label raster must lie on the scene's grid."""
    try:
        info = inspect_raster(path)
    except BadInput as exc:  # is_vector said it is no vector file either
        raise BadInput(f"{path}: neither a class raster nor a vector file of labels that GDAL can read") from exc
    if (info.width, info.height) != (scene.width, scene.height):
        raise BadInput(
            f"{path}: label raster is {info.width} x {info.height}, the scene is {scene.width} x {scene.height}"
        )
    if info.crs != scene.crs:
        raise BadInput(f"{path}: label raster CRS {info.crs} differs from the scene's {scene.crs}")


def _open_labels(path: str, reader: SceneReader) -> rasterio.DatasetReader:
    _check_labels(path, reader)
    return rasterio.open(path)


def source_crops(card: ModelCard, options: AdaptOptions) -> list[Sample] | None:
    """DA's labelled anchor, when asked for: the crops of its training tiles that the model ships."""
    if options.mode != "da" or not options.source_samples:
        return None
    if card.source_samples is None:
        raise BadInput(
            f"{card.folder}: model {card.name} ships no source samples (scripts/make_source_samples.py makes them)"
        )
    return load_source_samples(card.source_samples)


def adapt_scene(
    scene: Scene,
    options: AdaptOptions,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> tuple[dict[str, str], ModelCard, AdaptResult]:
    """Fisher-gated adaptation on tiles of the scene; writes the adapter checkpoint and selection report."""
    if options.mode == "dg" and not options.labels:
        raise BadInput(f"{scene.input}: DG adaptation needs labels (--labels: a class raster or labelled polygons)")
    adapter_out = options.adapter_out or str(Path(scene.input).with_suffix(".adapter.safetensors"))
    report_out, report_png = selection_report_paths(adapter_out, options.report_out)
    _check_outputs(adapter_out, report_out, report_png, overwrite=options.overwrite)
    config = options.config()
    card, model = open_model(scene)
    if scene.threads:
        torch.set_num_threads(scene.threads)
    choice = scene_scale(scene, card.resolution_m, card.tile_size)
    progress(0.0, f"reading adaptation tiles; {choice.describe()}")
    tiles = scene_samples(scene, card, options, choice)
    samples = tiles.train
    source = source_crops(card, options)
    check_cancelled(is_cancelled)
    anchor = f", {len(source)} labelled source crops" if source else ""
    progress(0.02, f"adapting on {len(samples)} tiles{anchor} ({config.mode.upper()}, {config.steps} steps)")
    checked = options.self_check and bool(tiles.held_out or tiles.folds or config.mode == "da")
    original = copy.deepcopy(model) if checked else None
    adapted_by = 0.02 + 0.92 / (1 + len(tiles.folds))  # each fold adapts once more
    result = adapt(
        model, samples, config, source, progress=sub_progress(progress, 0.02, adapted_by), is_cancelled=is_cancelled
    )
    if original is not None:
        progress(adapted_by, "self-check: comparing the adapted and unadapted models")
        check_progress = sub_progress(progress, adapted_by, 0.94)
        verdict = check_adaptation(original, result.model, tiles, card, config, source, check_progress, is_cancelled)
        result.self_check = verdict.to_dict()
        progress(0.97, verdict.message)
        if not verdict.keep_adapted:  # the checkpoint then holds the unadapted head: it reproduces the model
            prepare_trainable(original, AdaptConfig(tuning="head"))
            result.model = original.eval()
    metadata = {
        "model": card.name,
        "classes": card.classes,
        "scene": os.path.abspath(scene.input),
        "samples": len(samples),
        "source_samples": len(source or []),
        "adapt_config": config.to_dict(),
        "selection": result.selection,
        "losses": result.losses,
        "trainable_parameters": result.trainable_parameters,
        "seconds": round(result.seconds, 1),
        "self_check": result.self_check,
    }
    save_adapter(result.model, adapter_out, metadata, overwrite=options.overwrite)
    outputs = {"ADAPTER": adapter_out}
    if result.selection:
        write_selection_json(result.selection, report_out, options.overwrite, result.self_check)
        depth = len(result.model.backbone.blocks)
        plot_selection(result.selection, depth, report_png, options.overwrite, result.config.gate.selection)
        outputs.update(REPORT=report_out, REPORT_PLOT=report_png)
    if result.self_check and result.self_check["kept"] == "unadapted":
        progress(1.0, "adapter written: it holds the unadapted model, which the self-check kept")
    else:
        active = len(result.active_modules)
        progress(1.0, f"adapted: {active} modules active, {result.trainable_parameters:,} parameters")
    return outputs, card, result


def adapt_and_segment(
    scene: Scene,
    adapt_options: AdaptOptions,
    segment_options: SegmentOptions,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
    cluster: str | None = None,
) -> tuple[dict[str, str], AdaptResult]:
    """Adapt to the scene, then segment its whole ROI with the adapted model (or the unadapted one, when the
    self-check rejects the adaptation); the adapter lands beside the output.

    Adaptation runs here; with ``cluster`` the segmentation runs on Dask workers (see :func:`segment`).
    """
    output = segment_options.output
    adapt_options.adapter_out = adapt_options.adapter_out or beside_output(output, ".adapter.safetensors")
    adapt_options.report_out = adapt_options.report_out or beside_output(output, ".selection.json")
    _check_outputs(
        segment_options.output, segment_options.confidence, segment_options.entropy, overwrite=segment_options.overwrite
    )
    card = resolve_model(scene.model, scene.models_dir)
    scene_scale(scene, card.resolution_m, segment_tiling(card, segment_options).tile)  # bad tiling, resolution: now
    outputs, card, result = adapt_scene(scene, adapt_options, sub_progress(progress, 0.0, 0.7), is_cancelled)
    segment_progress = sub_progress(progress, 0.7, 1.0)
    try:
        if cluster:  # the workers load the adapter just saved
            options = replace(segment_options, adapter=outputs["ADAPTER"])
            outputs.update(segment(scene, options, segment_progress, is_cancelled, cluster=cluster))
        else:
            outputs.update(segment(scene, segment_options, segment_progress, is_cancelled, model=(card, result.model)))
    except BaseException:
        for key in ("ADAPTER", "REPORT", "REPORT_PLOT"):  # a failed or cancelled run leaves nothing behind
            if key in outputs:
                Path(outputs[key]).unlink(missing_ok=True)
        raise
    return outputs, result


def evaluate(
    prediction: str, labels: str, model: str = DEFAULT_MODEL, models_dir: str | None = None, skip: str | None = None
) -> dict:
    """Per-class IoU, mIoU and overall accuracy of a class raster against a label raster (255 = ignore); the
    pixels that the shapes of the vector file ``skip`` cover (an analyst's training polygons) are not scored."""
    card = resolve_model(model, models_dir)
    predicted, truth = inspect_raster(prediction), inspect_raster(labels)
    if (predicted.width, predicted.height) != (truth.width, truth.height):
        raise BadInput(
            f"{labels}: label raster is {truth.width} x {truth.height}, "
            f"the prediction is {predicted.width} x {predicted.height}"
        )
    if predicted.crs != truth.crs:
        raise BadInput(f"{labels}: label raster CRS {truth.crs} differs from the prediction's {predicted.crs}")
    num_classes = len(card.classes)
    confusion = np.zeros((num_classes, num_classes + 1), np.int64)
    with rasterio.open(prediction) as pred_ds, rasterio.open(labels) as label_ds:
        skipped = read_label_shapes(skip, pred_ds, card.classes) if skip else None
        for _, window in pred_ds.block_windows(1):
            truth_block = label_ds.read(1, window=window)
            if skipped is not None:
                truth_block = np.where(skipped.burn(window) != IGNORE_INDEX, IGNORE_INDEX, truth_block)
            confusion += confusion_matrix(pred_ds.read(1, window=window), truth_block, num_classes)
    result = scores(confusion, [c["name"] for c in card.classes])
    result.update(prediction=prediction, labels=labels, skipped=skip, confusion=confusion.tolist())
    return result


def _check_outputs(*paths: str | None, overwrite: bool) -> None:
    """Refuse bad output paths before any work is done."""
    for path in paths:
        if path:
            check_writable(path, overwrite)
