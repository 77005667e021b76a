"""Issue #18 in Processing: the analyst's labelled shapes for adapt and adapt-and-segment, and suggest-labels."""

from __future__ import annotations

from pathlib import Path

import processing
import pytest
from plugin_data import SCENE_ORIGIN, TINY_CLASSES
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

from tests.conftest_rasters import write_labelled_vector

pytestmark = pytest.mark.qgis

FAST = {"SAMPLES": 4, "STEPS": 2, "TOP_K": 2}
X0, Y0 = SCENE_ORIGIN  # the scene's top-left corner, 1 m pixels, 64 x 64


def square(x: float, y: float, side: float = 12.0) -> str:
    """A square of ``side`` m whose top-left corner is (x, y) m right of and below the scene's corner."""
    left, top = X0 + x, Y0 - y
    right, bottom = left + side, top - side
    return f"POLYGON (({left} {top}, {right} {top}, {right} {bottom}, {left} {bottom}, {left} {top}))"


def polygons(tmp_path: Path, field: str = "class") -> Path:
    features = [
        (square(2, 2), "Building"),
        (square(20, 4), "Building"),
        (square(40, 40), "Building"),
        (square(4, 30), "Water"),
        (square(30, 20), "Water"),
        (square(46, 8), "Water"),
        (f"LINESTRING ({X0 + 2} {Y0 - 58}, {X0 + 60} {Y0 - 58})", "Road"),
    ]
    return write_labelled_vector(tmp_path / "labels.gpkg", features, epsg=32640, field=field)


class Lines(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def pushDebugInfo(self, info: str) -> None:
        self.lines.append(info)

    def pushInfo(self, info: str) -> None:
        self.lines.append(info)


def test_adapt_trains_on_labelled_polygons_in_da_mode(crossearth_provider, scene, tmp_path):
    adapter = tmp_path / "scene.adapter.safetensors"
    feedback = Lines()
    result = processing.run(
        "crossearth:adapt",
        {"INPUT": str(scene), "LABEL_LAYER": str(polygons(tmp_path)), "ADAPTER": str(adapter), **FAST},
        feedback=feedback,
    )
    assert result["ADAPTER"] == str(adapter) and adapter.stat().st_size > 0
    command = next(line for line in feedback.lines if line.startswith("crossearth adapt "))
    assert f"--labels {tmp_path / 'labels.gpkg'}" in command and "--mode " not in command  # DA, the default
    assert any(line.startswith("held-out polygons (") for line in feedback.lines)  # the self-check's estimate


def test_adapt_and_segment_in_dg_mode_with_a_named_class_field_and_buffer(crossearth_provider, scene, tmp_path):
    out = tmp_path / "classes.tif"
    feedback = Lines()
    processing.run(
        "crossearth:adaptandsegment",
        {
            "INPUT": str(scene),
            "MODE": 1,
            "LABEL_LAYER": str(polygons(tmp_path, field="kind")),
            "LABEL_FIELD": "kind",
            "LABEL_BUFFER": 3.0,
            **FAST,
            "TILE_SIZE": 32,
            "STRIDE": 24,
            "ENGINE": "torch",
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    assert out.is_file()
    command = next(line for line in feedback.lines if line.startswith("crossearth adapt-segment "))
    assert "--label-field kind" in command and "--label-buffer 3" in command and "--mode dg" in command


def test_a_memory_layer_of_points_in_another_crs_is_written_to_a_geopackage(crossearth_provider, scene, tmp_path):
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "my labels", "memory")
    layer.dataProvider().addAttributes([QgsField("class", QVariant.String)])
    layer.updateFields()
    to_wgs84 = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:32640"), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    points = {(10, 10): "Building", (50, 12): "Water", (12, 50): "Road", (50, 50): "Building"}
    for (x, y), name in points.items():
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(to_wgs84.transform(QgsPointXY(X0 + x, Y0 - y))))
        feature.setAttribute("class", name)
        layer.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(layer)
    try:
        feedback = Lines()
        adapter = tmp_path / "a.safetensors"
        processing.run(
            "crossearth:adapt",
            {"INPUT": str(scene), "MODE": 1, "LABEL_LAYER": layer.id(), "ADAPTER": str(adapter), **FAST},
            feedback=feedback,
        )
        assert adapter.is_file()
        command = next(line for line in feedback.lines if line.startswith("crossearth adapt "))
        labels = command.split("--labels ")[1].split(" ")[0]
        assert labels.endswith(".gpkg") and Path(labels).is_file()
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_a_label_raster_and_labelled_shapes_together_are_refused(crossearth_provider, scene, labels, tmp_path):
    parameters = {
        "INPUT": str(scene),
        "MODE": 1,
        "LABELS": str(labels),
        "LABEL_LAYER": str(polygons(tmp_path)),
        "ADAPTER": str(tmp_path / "a.safetensors"),
        **FAST,
    }
    with pytest.raises(QgsProcessingException, match="not both"):
        processing.run("crossearth:adapt", parameters)
    assert not (tmp_path / "a.safetensors").exists()


def test_dg_without_any_labels_is_refused_in_one_line(crossearth_provider, scene, tmp_path):
    with pytest.raises(QgsProcessingException, match="DG adaptation needs labels"):
        processing.run("crossearth:adapt", {"INPUT": str(scene), "MODE": 1, "ADAPTER": str(tmp_path / "a.st")})


def test_suggest_labels_loads_outlined_boxes_labelled_with_rank_and_class(crossearth_provider, scene, tmp_path):
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (
        QgsApplication,
        QgsProcessingContext,
        QgsProcessingOutputLayerDefinition,
        QgsSingleSymbolRenderer,
    )

    from qgis_crossearth.styling import SPOT_COLOR, SPOT_LABEL

    project = QgsProject.instance()
    out = tmp_path / "spots.gpkg"
    parameters = {
        "INPUT": str(scene),
        "COUNT": 5,
        "BOX": 8,
        "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), project),
    }
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("crossearth:suggestlabels")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(project)
    results, ok = algorithm.run(algorithm.preprocessParameters(parameters), context, feedback)
    assert ok, results
    before = set(project.mapLayers())
    assert handleAlgorithmResults(algorithm, context, feedback, False, parameters)
    loaded = [layer for key, layer in project.mapLayers().items() if key not in before]
    try:
        assert results["OUTPUT"] == str(out) and 1 <= results["SPOTS"] <= 5
        (layer,) = loaded
        assert layer.name() == "scene places to label" and layer.featureCount() == results["SPOTS"]
        ranks = sorted(f["rank"] for f in layer.getFeatures())
        assert ranks == list(range(1, results["SPOTS"] + 1))
        assert {f["predicted"] for f in layer.getFeatures()} <= {c["name"] for c in TINY_CLASSES}
        assert isinstance(layer.renderer(), QgsSingleSymbolRenderer)
        assert layer.renderer().symbol().symbolLayer(0).strokeColor().name() == SPOT_COLOR
        assert layer.labelsEnabled() and layer.labeling().settings().fieldName == SPOT_LABEL
    finally:
        project.removeMapLayers([layer.id() for layer in loaded])


def test_suggest_labels_asks_the_adapted_model_when_given_an_adapter(crossearth_provider, scene, tmp_path):
    adapter = tmp_path / "a.safetensors"
    processing.run("crossearth:adapt", {"INPUT": str(scene), "ADAPTER": str(adapter), **FAST})
    feedback = Lines()
    result = processing.run(
        "crossearth:suggestlabels",
        {"INPUT": str(scene), "ADAPTER": str(adapter), "COUNT": 3, "OUTPUT": str(tmp_path / "s.gpkg")},
        feedback=feedback,
    )
    assert Path(result["OUTPUT"]).is_file() and result["SPOTS"] >= 1
    command = next(line for line in feedback.lines if line.startswith("crossearth suggest-labels "))
    assert f"--adapter {adapter}" in command and "--count 3" in command
