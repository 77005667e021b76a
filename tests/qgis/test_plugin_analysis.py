"""The analysis algorithms through Processing: outputs, values, and how results load in a project."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from analysis_data import CLASSES, class_raster, pixel_centre, plain_raster, vector
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsVectorLayer,
)

pytestmark = pytest.mark.qgis


def scene_classes(height: int = 30, width: int = 40) -> np.ndarray:
    """Land with a 10 x 10 Vegetation square and a 5 x 20 Building strip."""
    data = np.ones((height, width), np.uint8)
    data[5:15, 5:15] = 2
    data[20:25, 10:30] = 0
    return data


def run_and_load(algorithm_id: str, parameters: dict, project: QgsProject) -> tuple[dict, list]:
    """What the toolbox does: run, then load the results into the project (their post-processors style them)."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    results, ok = algorithm.run(algorithm.preprocessParameters(parameters), context, feedback)
    assert ok, results
    before = set(project.mapLayers())
    assert handleAlgorithmResults(algorithm, context, feedback, False, parameters)
    return results, [layer for key, layer in project.mapLayers().items() if key not in before]


def test_vectorize_loads_polygons_categorized_in_the_class_colours(crossearth_provider, tmp_path):
    raster = class_raster(tmp_path / "classes.tif", scene_classes())
    project = QgsProject.instance()
    out = tmp_path / "polygons.gpkg"
    results, loaded = run_and_load(
        "crossearth:vectorize",
        {"INPUT": str(raster), "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), project)},
        project,
    )
    try:
        assert results["FEATURES"] == 3
        layer = next(layer for layer in loaded if isinstance(layer, QgsVectorLayer))
        areas = {f["name"]: f["area_m2"] for f in layer.getFeatures()}
        assert areas == {"Building": 400.0, "Land": 4.0 * (1200 - 200), "Vegetation": 400.0}
        renderer = layer.renderer()
        assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "class"
        assert [(c.value(), c.label(), c.symbol().color().name().upper()) for c in renderer.categories()] == [
            (c.value, c.name, c.color) for c in CLASSES
        ]
    finally:
        project.removeMapLayers([layer.id() for layer in loaded])


def test_class_areas_per_zone_load_as_a_table_with_a_chart(crossearth_provider, tmp_path):
    raster = class_raster(tmp_path / "classes.tif", scene_classes())
    x0, y0 = pixel_centre(0, 0)
    zone = (
        f"POLYGON (({x0 - 1} {y0 + 1}, {x0 + 29} {y0 + 1}, {x0 + 29} {y0 - 39}, {x0 - 1} {y0 - 39}, {x0 - 1} {y0 + 1}))"
    )
    zones = vector(tmp_path / "zones.gpkg", [zone], field="label", values=["north-west"])
    project = QgsProject.instance()
    out = tmp_path / "areas.csv"
    results, loaded = run_and_load(
        "crossearth:classareas",
        {
            "INPUT": str(raster),
            "ZONES": str(zones),
            "ZONE_FIELD": "label",
            "OUTPUT": str(out),
            "CHART": str(tmp_path / "areas.png"),
        },
        project,
    )
    try:
        table = json.loads(Path(results["JSON"]).read_text())
        zone_rows = {e["name"]: e["pixels"] for e in table["by_zone"][0]["classes"]}
        # columns 0..14, rows 0..19: Vegetation 10 x 10, the rest Land
        assert table["by_zone"][0]["zone"] == "north-west"
        assert zone_rows == {"Building": 0, "Land": 300 - 100, "Vegetation": 100, "nodata": 0}
        assert Path(results["CHART"]).read_bytes()[:4] == b"\x89PNG"
        assert "areas.png" in Path(results["REPORT_HTML"]).read_text()
        tables = [layer for layer in loaded if isinstance(layer, QgsVectorLayer) and not layer.isSpatial()]
        assert len(tables) == 1 and tables[0].featureCount() == 4
    finally:
        project.removeMapLayers([layer.id() for layer in loaded])


def test_accuracy_against_points_reports_the_measures_and_loads_the_table(crossearth_provider, tmp_path):
    raster = class_raster(tmp_path / "classes.tif", scene_classes())
    cells = [(6, 6, "Vegetation"), (7, 7, "Land"), (0, 0, "Land"), (22, 12, "Building")]
    points = vector(
        tmp_path / "refs.gpkg",
        [f"POINT ({pixel_centre(r, c)[0]} {pixel_centre(r, c)[1]})" for r, c, _ in cells],
        field="truth",
        values=[t for *_, t in cells],
    )
    result = processing.run(
        "crossearth:accuracy",
        {
            "INPUT": str(raster),
            "REFERENCE": str(points),
            "FIELD": "truth",
            "OUTPUT": str(tmp_path / "r.json"),
            "TABLE": str(tmp_path / "r.csv"),
            "PLOT": str(tmp_path / "r.png"),
        },
    )
    assert result["OVERALL_ACCURACY"] == pytest.approx(0.75)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["confusion_counts"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert Path(result["PLOT"]).read_bytes()[:4] == b"\x89PNG"


def test_accuracy_against_a_reference_raster_layer(crossearth_provider, tmp_path):
    data = scene_classes()
    raster = class_raster(tmp_path / "classes.tif", data)
    truth = data.copy()
    truth[:, :20] = np.where(truth[:, :20] == 1, 2, truth[:, :20])  # the map calls Land what is Vegetation
    reference = plain_raster(tmp_path / "truth.tif", truth)
    result = processing.run(
        "crossearth:accuracy",
        {
            "INPUT": str(raster),
            "REFERENCE": str(reference),
            "OUTPUT": str(tmp_path / "r.json"),
            "TABLE": str(tmp_path / "r.csv"),
            "PLOT": str(tmp_path / "r.png"),
        },
    )
    wrong = int((data != truth).sum())
    assert result["OVERALL_ACCURACY"] == pytest.approx(1 - wrong / data.size)


def test_sample_points_then_accuracy_gives_area_weighted_estimates(crossearth_provider, tmp_path):
    raster = class_raster(tmp_path / "classes.tif", scene_classes())
    points = tmp_path / "points.gpkg"
    processing.run(
        "crossearth:samplepoints", {"INPUT": str(raster), "COUNT": 15, "STRATIFIED": True, "OUTPUT": str(points)}
    )
    layer = QgsVectorLayer(str(points), "points", "ogr")
    assert layer.featureCount() == 15
    index = layer.fields().indexOf("class")
    layer.startEditing()
    for feature in layer.getFeatures():
        layer.changeAttributeValue(feature.id(), index, feature["map_name"])
    assert layer.commitChanges()
    del layer
    result = processing.run(
        "crossearth:accuracy",
        {
            "INPUT": str(raster),
            "REFERENCE": str(points),
            "OUTPUT": str(tmp_path / "r.json"),
            "TABLE": str(tmp_path / "r.csv"),
            "PLOT": str(tmp_path / "r.png"),
        },
    )
    weighted = json.loads((tmp_path / "r.json").read_text())["stratified"]
    assert result["OVERALL_ACCURACY"] == 1.0 and weighted["overall_accuracy"]["estimate"] == 1.0
    assert result["OVERALL_ACCURACY_WEIGHTED"] == 1.0
    assert weighted["per_class"]["Vegetation"]["area"]["estimate"] == pytest.approx(400.0)


def test_change_writes_a_paletted_from_to_raster_and_the_matrix(crossearth_provider, subprocess_mode, tmp_path):
    before = scene_classes()
    after = before.copy()
    after[5:15, 5:10] = 0  # half the Vegetation square built over
    first = class_raster(tmp_path / "before.tif", before)
    second = class_raster(tmp_path / "after.tif", after)
    project = QgsProject.instance()
    out = tmp_path / "change.tif"
    results, loaded = run_and_load(
        "crossearth:change",
        {
            "BEFORE": str(first),
            "AFTER": str(second),
            "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), project),
            "MATRIX": str(tmp_path / "matrix.csv"),
        },
        project,
    )
    try:
        assert results["CHANGED_M2"] == 200.0
        with rasterio.open(out) as dataset:
            assert dataset.read(1)[5, 5] == 2 * 3 + 0
        raster = next(layer for layer in loaded if layer.source() == str(out))
        renderer = raster.renderer()
        assert isinstance(renderer, QgsPalettedRasterRenderer)
        labels = {c.value: c.label for c in renderer.classes()}
        assert labels[6] == "Vegetation -> Building" and labels[4] == "Land (unchanged)"
        assert any(not layer.isSpatial() for layer in loaded if isinstance(layer, QgsVectorLayer))
    finally:
        project.removeMapLayers([layer.id() for layer in loaded])


def test_a_class_raster_without_names_fails_with_the_backends_one_line(crossearth_provider, tmp_path):
    plain = plain_raster(tmp_path / "plain.tif", scene_classes())
    with pytest.raises(QgsProcessingException, match=r"plain\.tif: has no class names"):
        processing.run(
            "crossearth:classareas",
            {"INPUT": str(plain), "OUTPUT": str(tmp_path / "a.csv"), "CHART": str(tmp_path / "a.png")},
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.tif"]


@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="QGIS's qgis_process.bin is not installed")
def test_qgis_process_runs_vectorize_from_a_shell(plugin_settings, tmp_path):
    from plugin_data import run_qgis_process

    from qgis_crossearth.paths import REPO_ROOT

    raster = class_raster(tmp_path / "classes.tif", scene_classes())
    out = tmp_path / "polygons.gpkg"
    settings = {"python": plugin_settings.python, "model_folder": plugin_settings.model_folder, "threads": "1"}
    args = ["run", "crossearth:vectorize", "--", f"INPUT={raster}", "MIN_AREA=8", f"OUTPUT={out}"]
    completed = run_qgis_process(REPO_ROOT, tmp_path / "profile", settings, args)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(completed.stdout[completed.stdout.index("{") :])["results"]
    assert Path(results["OUTPUT"]) == out and results["FEATURES"] == 3


def test_the_dock_offers_polygons_class_areas_and_accuracy_on_its_last_result(
    qgis_iface, plugin_settings, tmp_path, monkeypatch
):
    from qgis_crossearth.dock import AdaptDock
    from qgis_crossearth.task import FAILED, SUCCESS, TaskResult

    opened = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg, params: opened.append((alg, params)))
    dock = AdaptDock(qgis_iface)
    try:
        buttons = dock.analysis_buttons.buttons
        assert not any(b.isEnabled() for b in buttons.values())  # nothing to analyse before a run
        outputs = {"OUTPUT": str(tmp_path / "classes.tif"), "CONFIDENCE": str(tmp_path / "conf.tif")}
        dock.on_completed(TaskResult(SUCCESS, outputs=outputs))
        assert all(b.isEnabled() for b in buttons.values())
        buttons["crossearth:vectorize"].click()
        buttons["crossearth:classareas"].click()
        assert opened == [
            ("crossearth:vectorize", {"INPUT": outputs["OUTPUT"], "CONFIDENCE": outputs["CONFIDENCE"]}),
            ("crossearth:classareas", {"INPUT": outputs["OUTPUT"]}),
        ]
        dock.on_completed(TaskResult(FAILED, error="boom"))
        assert not any(b.isEnabled() for b in buttons.values())
    finally:
        dock.shutdown()
        dock.deleteLater()


def test_graphical_modeler_chains_change_into_polygons(crossearth_provider, tmp_path):
    """A model: the from-to raster of two dates, then its polygons (what changed, as features)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    before = scene_classes()
    after = before.copy()
    after[5:15, 5:10] = 0
    first = class_raster(tmp_path / "before.tif", before)
    second = class_raster(tmp_path / "after.tif", after)
    model = QgsProcessingModelAlgorithm("changes as polygons", "tests")
    for name in ("before", "after"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    change = QgsProcessingModelChildAlgorithm("crossearth:change")
    change.setChildId("change")
    change.addParameterSources("BEFORE", [QgsProcessingModelChildParameterSource.fromModelParameter("before")])
    change.addParameterSources("AFTER", [QgsProcessingModelChildParameterSource.fromModelParameter("after")])
    change.addParameterSources("ONLY_CHANGES", [QgsProcessingModelChildParameterSource.fromStaticValue(True)])
    model.addChildAlgorithm(change)
    polygons = QgsProcessingModelChildAlgorithm("crossearth:vectorize")
    polygons.setChildId("polygons")
    polygons.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("change", "OUTPUT")])
    output = QgsProcessingModelOutput("changed", "Changed areas")
    output.setChildId("polygons")
    output.setChildOutputName("OUTPUT")
    polygons.setModelOutputs({"changed": output})
    model.addChildAlgorithm(polygons)
    out = tmp_path / "changed.gpkg"
    results = processing.run(model, {"before": str(first), "after": str(second), "polygons:changed": str(out)})
    layer = QgsVectorLayer(results["polygons:changed"], "changed", "ogr")
    assert [(f["name"], f["area_m2"]) for f in layer.getFeatures()] == [("Vegetation -> Building", 200.0)]
