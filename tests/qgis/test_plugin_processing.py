"""The four algorithms through Processing, on 64 px GeoTIFFs with the tiny model, end to end."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from plugin_data import SCENE_ORIGIN, TINY_CLASSES, backend_children, write_scene
from qgis.core import (
    QgsApplication,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
)

from qgis_crossearth.paths import PLUGIN_DIR

pytestmark = pytest.mark.qgis

CLASS_VALUES = {c["value"] for c in TINY_CLASSES}
# ONNX export costs seconds per run even for the tiny model: the tests use torch except where they test defaults.
TORCH = {"ENGINE": "torch"}
FAST = {"SAMPLES": 4, "STEPS": 2, "TILE_SIZE": 32, "STRIDE": 24, "BATCH_SIZE": 4, **TORCH}


def class_values(path: Path) -> set[int]:
    with rasterio.open(path) as dataset:
        return set(np.unique(dataset.read(1)).tolist())


def test_segment_needs_only_input_and_output(crossearth_provider, subprocess_mode, scene, tmp_path):
    out = tmp_path / "classes.tif"
    result = processing.run("crossearth:segment", {"INPUT": str(scene), "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out)
    with rasterio.open(out) as dataset:
        assert (dataset.width, dataset.height, dataset.dtypes[0]) == (64, 64, "uint8")
        assert dataset.crs.to_epsg() == 32640
    assert class_values(out) <= CLASS_VALUES


def test_adapt_writes_an_adapter_that_segment_uses(crossearth_provider, scene, tmp_path):
    adapter = tmp_path / "scene.adapter.safetensors"
    report = tmp_path / "scene.selection.json"
    adapted = processing.run(
        "crossearth:adapt",
        {"INPUT": str(scene), "ADAPTER": str(adapter), "REPORT": str(report), "SAMPLES": 4, "STEPS": 2, "TOP_K": 2},
    )
    assert adapted["ADAPTER"] == str(adapter) and adapter.stat().st_size > 0
    assert json.loads(report.read_text())
    out = tmp_path / "classes.tif"
    processing.run("crossearth:segment", {"INPUT": str(scene), "ADAPTER": str(adapter), **TORCH, "OUTPUT": str(out)})
    assert class_values(out) <= CLASS_VALUES


def test_adapt_and_segment_writes_every_output(crossearth_provider, scene, tmp_path):
    outputs = {name: str(tmp_path / f"scene_{name.lower()}.tif") for name in ("OUTPUT", "CONFIDENCE", "ENTROPY")}
    result = processing.run("crossearth:adaptandsegment", {"INPUT": str(scene), **FAST, **outputs})
    for name, path in outputs.items():
        assert result[name] == path and Path(path).is_file()
    with rasterio.open(outputs["CONFIDENCE"]) as dataset:
        confidence = dataset.read(1, masked=True)
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0
    assert Path(result["ADAPTER"]).is_file()
    assert Path(result["REPORT_PLOT"]).suffix == ".png" and Path(result["REPORT_PLOT"]).is_file()


def test_adapt_and_segment_with_labels_in_dg_mode(crossearth_provider, scene, labels, tmp_path):
    out = tmp_path / "classes.tif"
    processing.run(
        "crossearth:adaptandsegment",
        {"INPUT": str(scene), "MODE": 1, "LABELS": str(labels), **FAST, "OUTPUT": str(out)},
    )
    assert class_values(out) <= CLASS_VALUES


def test_evaluate_writes_metrics(crossearth_provider, scene, labels, tmp_path):
    prediction = tmp_path / "classes.tif"
    processing.run("crossearth:segment", {"INPUT": str(scene), **TORCH, "OUTPUT": str(prediction)})
    metrics_file = tmp_path / "metrics.json"
    result = processing.run(
        "crossearth:evaluate", {"INPUT": str(prediction), "LABELS": str(labels), "OUTPUT": str(metrics_file)}
    )
    assert result["OUTPUT"] == str(metrics_file)
    metrics = json.loads(metrics_file.read_text())
    assert result["MIOU"] == pytest.approx(metrics["miou"])
    assert result["OVERALL_ACCURACY"] == pytest.approx(metrics["overall_accuracy"])
    assert set(metrics["iou"]) == {c["name"] for c in TINY_CLASSES}


@pytest.mark.parametrize("mode", ["in-process", "subprocess"])
def test_a_run_on_the_main_thread_keeps_qgis_responsive(crossearth_provider, request, mode, scene, tmp_path):
    """QGIS 3.22 runs batch rows and models on its main thread: the event loop must keep turning meanwhile."""
    from qgis.PyQt.QtCore import QTimer

    if mode == "subprocess":
        request.getfixturevalue("subprocess_mode")
    ticks = [time.monotonic()]
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    parameters = {"INPUT": str(scene), **FAST, "STEPS": 6, "OUTPUT": str(tmp_path / "c.tif")}
    try:
        processing.run("crossearth:adaptandsegment", parameters)  # a second or more, in-process too
    finally:
        timer.stop()
    ticks.append(time.monotonic())
    elapsed, longest = ticks[-1] - ticks[0], max(b - a for a, b in itertools.pairwise(ticks))
    assert longest < 0.5 and len(ticks) > elapsed / 0.2, (elapsed, len(ticks), longest)


class ErrorsFeedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.errors.append(error)


def test_batch_runs_each_row_and_styles_loaded_results(crossearth_provider, tmp_path):
    """What the batch dialog does: one algorithm, a fresh context per row, results handled and loaded; the
    optional outputs left empty (as the batch table passes them) are not reported as "not correctly generated",
    and each result is named after its scene, not "Classes"."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("crossearth:segment")
    project = QgsProject.instance()
    rows = []
    for i in range(3):
        scene = write_scene(tmp_path / f"scene{i}.tif", seed=i)
        rows.append(
            {
                "INPUT": str(scene),
                **TORCH,
                "OUTPUT": QgsProcessingOutputLayerDefinition(str(tmp_path / f"classes{i}.tif"), project),
                "CONFIDENCE": QgsProcessingOutputLayerDefinition("", project),
                "ENTROPY": QgsProcessingOutputLayerDefinition("", project),
            }
        )
    loaded = []
    for parameters in rows:
        context = QgsProcessingContext()
        context.setProject(project)
        feedback = ErrorsFeedback()
        results, ok = algorithm.run(algorithm.preprocessParameters(parameters), context, feedback)
        assert ok, results
        assert handleAlgorithmResults(algorithm, context, feedback, False, parameters), feedback.errors
        assert feedback.errors == []
        loaded += [layer for layer in project.mapLayers().values() if layer.source() == results["OUTPUT"]]
    try:
        assert sorted(layer.name() for layer in loaded) == [f"scene{i} classes" for i in range(3)]
        for layer in loaded:
            renderer = layer.renderer()
            assert isinstance(renderer, QgsPalettedRasterRenderer)
            assert [c.label for c in renderer.classes()] == [c["name"] for c in TINY_CLASSES]
    finally:
        project.removeMapLayers([layer.id() for layer in loaded])


@pytest.mark.parametrize("name", sorted(p.name for p in (PLUGIN_DIR / "processing_models").glob("*.model3")))
def test_every_shipped_model_validates(crossearth_provider, name):
    """What the graphical modeler checks when it opens a model: every mandatory child parameter has a value."""
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(PLUGIN_DIR / "processing_models" / name))
    for child_id, child in model.childAlgorithms().items():
        valid, issues = model.validateChildAlgorithm(child_id)
        assert valid, (child_id, issues)
        for name, sources in child.parameterSources().items():  # static values are the defaults of today
            static = [
                s.staticValue() for s in sources if s.source() == QgsProcessingModelChildParameterSource.StaticValue
            ]
            if static:
                assert static == [child.algorithm().parameterDefinition(name).defaultValue()], (child_id, name)
    valid, issues = model.validate()
    assert valid, issues


def test_shipped_model_adapts_then_segments(crossearth_provider, scene, tmp_path):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(PLUGIN_DIR / "processing_models" / "adapt_then_segment.model3"))
    out = tmp_path / "classes.tif"
    results = processing.run(model, {"scene": str(scene), "steps": 2, "segment:classes": str(out)})
    assert Path(results["segment:classes"]) == out
    assert class_values(out) <= CLASS_VALUES


def test_styling_of_loaded_results(crossearth_provider, scene, tmp_path):
    from qgis_crossearth.model_cards import list_model_cards
    from qgis_crossearth.settings import load_settings
    from qgis_crossearth.styling import style_class_layer, style_confidence_layer

    result = processing.run(
        "crossearth:segment",
        {"INPUT": str(scene), **TORCH, "OUTPUT": str(tmp_path / "c.tif"), "CONFIDENCE": str(tmp_path / "p.tif")},
    )
    card = list_model_cards(load_settings().effective_model_folder)[0]
    classes = QgsRasterLayer(result["OUTPUT"], "classes", "gdal")
    style_class_layer(classes, card)
    renderer = classes.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(c.value, c.label, c.color.name().upper()) for c in renderer.classes()] == [
        (c["value"], c["name"], c["color"]) for c in TINY_CLASSES
    ]
    assert classes.dataProvider().sourceNoDataValue(1) == 255

    confidence = QgsRasterLayer(result["CONFIDENCE"], "confidence", "gdal")
    style_confidence_layer(confidence)
    ramp = confidence.renderer()
    assert isinstance(ramp, QgsSingleBandPseudoColorRenderer)
    assert (ramp.classificationMin(), ramp.classificationMax()) == (0.0, 1.0)
    items = ramp.shader().rasterShaderFunction().colorRampItemList()
    assert [item.value for item in items] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert items[0].color != items[-1].color
    del classes, confidence


@pytest.mark.parametrize("mode", ["subprocess", "in-process"])
def test_cancel_stops_the_backend_and_leaves_nothing(crossearth_provider, request, mode, scene, tmp_path):
    if mode == "subprocess":
        request.getfixturevalue("subprocess_mode")
    out = tmp_path / "classes.tif"
    feedback = QgsProcessingFeedback()
    cancelled_at: list[float] = []

    def cancel() -> None:
        cancelled_at.append(time.monotonic())
        feedback.cancel()

    timers: list[threading.Timer] = []

    def cancel_once_running(progress: float) -> None:
        if progress > 0 and not timers:
            timers.append(threading.Timer(0.3, cancel))
            timers[0].start()

    feedback.progressChanged.connect(cancel_once_running)
    parameters = {
        "INPUT": str(scene),
        **FAST,
        "STEPS": 100_000,
        "OUTPUT": str(out),
        "CONFIDENCE": str(tmp_path / "confidence.tif"),
    }
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("crossearth:adaptandsegment", parameters, feedback=feedback)
    assert time.monotonic() - cancelled_at[0] < 2.5  # SIGTERM, and SIGKILL after 2 s if still running
    assert backend_children() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_unreadable_input_is_a_clear_error(crossearth_provider, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    with pytest.raises(QgsProcessingException, match=r"broken\.tif"):
        processing.run("crossearth:segment", {"INPUT": str(broken), "OUTPUT": str(tmp_path / "out.tif")})


def test_backend_bad_input_message_reaches_the_user(crossearth_provider, subprocess_mode, scene, tmp_path):
    """A band the raster does not have: the backend's one-line message becomes the exception."""
    with pytest.raises(QgsProcessingException, match=r"scene\.tif.*band") as error:
        processing.run(
            "crossearth:segment", {"INPUT": str(scene), "BANDS": [1, 2, 7], "OUTPUT": str(tmp_path / "o.tif")}
        )
    assert "\n" not in str(error.value).strip()
    assert not (tmp_path / "o.tif").exists()


def test_a_fractional_top_k_count_is_refused_in_one_line_before_anything_runs(crossearth_provider, scene, tmp_path):
    """Top-k 2.5 reaches the job as 2.5 (no longer truncated to 2) and is refused as the CLI refuses it."""
    parameters = {"INPUT": str(scene), "ADAPTER": str(tmp_path / "a.safetensors"), "TOP_K": 2.5}
    with pytest.raises(QgsProcessingException, match=r"top-k 2\.5") as error:
        processing.run("crossearth:adapt", parameters)
    assert "\n" not in str(error.value).strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_roi_extent_clips_the_output(crossearth_provider, scene, tmp_path):
    x, y = SCENE_ORIGIN
    out = tmp_path / "classes.tif"
    roi = f"{x + 8},{x + 40},{y - 48},{y - 16} [EPSG:32640]"  # xmin,xmax,ymin,ymax: 32 x 32 m
    processing.run("crossearth:segment", {"INPUT": str(scene), "ROI": roi, **TORCH, "OUTPUT": str(out)})
    with rasterio.open(out) as dataset:
        assert (dataset.width, dataset.height) == (32, 32)
        assert (dataset.bounds.left, dataset.bounds.top) == (x + 8, y - 16)


def test_roi_polygons_mask_the_output(crossearth_provider, scene, tmp_path):
    """A memory layer (exported to a file for the backend) with a triangle: pixels outside it are nodata."""
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    x, y = SCENE_ORIGIN
    polygons = QgsVectorLayer("Polygon?crs=EPSG:32640", "roi", "memory")
    triangle = QgsFeature()
    triangle.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(x, y), QgsPointXY(x + 32, y), QgsPointXY(x, y - 32)]]))
    polygons.dataProvider().addFeatures([triangle])
    out = tmp_path / "classes.tif"
    processing.run("crossearth:segment", {"INPUT": str(scene), "ROI_LAYER": polygons, **TORCH, "OUTPUT": str(out)})
    with rasterio.open(out) as dataset:
        classes = dataset.read(1)
        top_left = dataset.index(x + 2, y - 2)
        bottom_right = dataset.index(x + 30, y - 30)
    assert classes[top_left] in CLASS_VALUES
    assert classes[bottom_right] == 255
    assert set(np.unique(classes).tolist()) - CLASS_VALUES == {255}


def test_resolution_reads_the_scene_at_that_pixel_size_and_writes_on_its_grid(crossearth_provider, scene, tmp_path):
    """RESOLUTION 0.5 and 2 on the 1 m scene: the model sees 128 and 32 px, the outputs are the scene's 64 px."""
    finer, coarser = tmp_path / "finer.tif", tmp_path / "coarser.tif"
    processing.run("crossearth:segment", {"INPUT": str(scene), "RESOLUTION": "0.5", **TORCH, "OUTPUT": str(finer)})
    adapted = {"INPUT": str(scene), "RESOLUTION": 2, **FAST, "OUTPUT": str(coarser)}
    processing.run("crossearth:adaptandsegment", adapted)
    with rasterio.open(scene) as source:
        grid = (source.crs, source.transform, source.shape)
    for out, factor in ((finer, 0.5), (coarser, 2.0)):
        with rasterio.open(out) as dataset:
            assert (dataset.crs, dataset.transform, dataset.shape) == grid
            assert json.loads(dataset.tags()["RESOLUTION"])["factor"] == factor
        assert class_values(out) <= CLASS_VALUES


@pytest.mark.parametrize(("resolution", "message"), [("0", "greater than 0"), ("10", "under one 32-pixel tile")])
def test_a_bad_resolution_is_refused_in_one_line_and_nothing_is_written(
    crossearth_provider, scene, tmp_path, resolution, message
):
    parameters = {"INPUT": str(scene), "RESOLUTION": resolution, **TORCH, "OUTPUT": str(tmp_path / "o.tif")}
    with pytest.raises(QgsProcessingException, match=message) as error:
        processing.run("crossearth:segment", parameters)
    assert "\n" not in str(error.value).strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_precision_reaches_the_engine_and_int8_on_torch_is_refused_in_one_line(crossearth_provider, scene, tmp_path):
    out = tmp_path / "fp32.tif"
    processing.run("crossearth:segment", {"INPUT": str(scene), "PRECISION": "fp32", **TORCH, "OUTPUT": str(out)})
    with rasterio.open(out) as dataset:
        assert (dataset.tags()["engine"], dataset.tags()["precision"]) == ("torch", "fp32")
    parameters = {"INPUT": str(scene), "PRECISION": "int8", **TORCH, "OUTPUT": str(tmp_path / "int8.tif")}
    with pytest.raises(QgsProcessingException, match="only the onnx engine runs int8") as error:
        processing.run("crossearth:segment", parameters)
    assert "\n" not in str(error.value).strip()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("int8")]
