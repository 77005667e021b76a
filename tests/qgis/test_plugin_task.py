"""The dock's QgsTask: results loaded and styled in a group, and the dock's run and cancel buttons."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from plugin_data import TINY_CLASSES, TINY_MODEL, backend_children
from qgis.core import (
    QgsApplication,
    QgsLayerTreeModel,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsSingleBandPseudoColorRenderer,
    QgsTask,
)
from qgis.gui import QgsLayerTreeView

from backend.contract import AdaptOptions, AdaptSegmentJob, Scene, SegmentOptions
from qgis_crossearth.dock import AdaptDock
from qgis_crossearth.model_cards import ModelCard
from qgis_crossearth.settings import backend_config, load_settings
from qgis_crossearth.task import CANCELLED, SUCCESS, AdaptSegmentTask, RunRequest, group_name

pytestmark = pytest.mark.qgis


def remove_group(title: str) -> None:
    project = QgsProject.instance()
    group = project.layerTreeRoot().findGroup(group_name(title))
    if group is not None:
        project.removeMapLayers(group.findLayerIds())
        project.layerTreeRoot().removeChildNode(group)


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        QgsApplication.processEvents()
        time.sleep(0.02)


def test_task_result_layers_are_styled_in_a_group(plugin_settings, model_folder, scene, tmp_path):
    card = ModelCard.from_folder(model_folder / TINY_MODEL)
    adaptation = AdaptOptions(
        samples=4, steps=2, adapter_out=str(tmp_path / "a.safetensors"), report_out=str(tmp_path / "r.json")
    )
    segmentation = SegmentOptions(output=str(tmp_path / "c.tif"), confidence=str(tmp_path / "p.tif"), engine="torch")
    job = AdaptSegmentJob(Scene(input=str(scene), model=str(card.folder)), adaptation, segmentation)
    request = RunRequest(title="scene", job=job, card=card)
    task = AdaptSegmentTask(request, backend_config(load_settings()))
    view = QgsLayerTreeView()  # what the Layers panel shows
    tree_model = QgsLayerTreeModel(QgsProject.instance().layerTreeRoot())
    view.setModel(tree_model)
    completed = []
    task.completed.connect(completed.append)
    assert task.run()  # synchronously, as the task manager's thread would
    task.finished(True)
    result = completed[0]
    try:
        assert result.status == SUCCESS, result.error
        group = QgsProject.instance().layerTreeRoot().findGroup("CrossEarth: scene (adapted)")
        assert result.group == group.name()
        assert view.isExpanded(view.node2index(group))  # open, not collapsed
        names = [node.layer().name() for node in group.findLayers()]
        assert names == ["scene classes", "scene confidence"]
        classes, confidence = (node.layer() for node in group.findLayers())
        assert isinstance(classes.renderer(), QgsPalettedRasterRenderer)
        assert [c.label for c in classes.renderer().classes()] == [c["name"] for c in TINY_CLASSES]
        assert isinstance(confidence.renderer(), QgsSingleBandPseudoColorRenderer)
        assert [n.itemVisibilityChecked() for n in group.findLayers()] == [True, False]
        assert Path(result.report_plot).is_file()
        del classes, confidence
    finally:
        remove_group("scene")


@pytest.fixture
def dock(qgis_iface, plugin_settings, scene, tmp_path):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(scene), "dock scene", "gdal")
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    dock = AdaptDock(qgis_iface)
    dock.output_widget.setFilePath(str(tmp_path / "out"))
    dock.steps_spin.setValue(2)
    dock.samples_spin.setValue(4)
    yield dock
    dock.shutdown()
    dock.deleteLater()
    remove_group("dock_scene")
    QgsProject.instance().removeMapLayer(layer.id())


def test_dock_runs_in_the_background_and_shows_the_result(dock, subprocess_mode, tmp_path):
    dock.start()
    assert dock.running and not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    wait_until(lambda: not dock.running, timeout=240)
    assert dock.last_result.status == SUCCESS, dock.last_result.error
    assert dock.progress.value() == 100
    assert "dock_scene" in dock.status.text()
    assert dock.heatmap_button.isEnabled()
    assert "Adapting tiny-test to dock_scene" in dock.log_view.toPlainText()
    assert (tmp_path / "out" / "dock_scene_classes.tif").is_file()
    assert QgsProject.instance().layerTreeRoot().findGroup(group_name("dock_scene")) is not None


def test_dock_cancel_stops_the_backend(dock, subprocess_mode, tmp_path):
    dock.steps_spin.setValue(100_000)
    dock.start()
    wait_until(lambda: dock.progress.value() > 0 or not dock.running, timeout=120)
    task = dock.task
    dock.cancel()
    cancelled = time.monotonic()
    wait_until(lambda: not dock.running, timeout=10)
    assert task.status() == QgsTask.Complete and "cancelled" in task.description()  # not "Task failed"
    assert time.monotonic() - cancelled < 2.5
    assert dock.last_result.status == CANCELLED
    assert backend_children() == []
    assert list((tmp_path / "out").iterdir()) == []
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()


def test_dock_suggests_where_to_label_in_the_background_and_loads_the_boxes(dock, subprocess_mode, tmp_path):
    from qgis.core import QgsSingleSymbolRenderer

    from qgis_crossearth.task import spots_name

    dock.start_suggest()
    assert dock.running and not dock.suggest_button.isEnabled() and dock.cancel_button.isEnabled()
    wait_until(lambda: not dock.running, timeout=240)
    assert dock.last_result is None  # no map yet: the analyses stay off
    assert dock.progress.value() == 100 and "places to label" in dock.status.text(), dock.status.text()
    assert (tmp_path / "out" / "dock_scene.places_to_label.gpkg").is_file()
    (layer,) = QgsProject.instance().mapLayersByName(spots_name("dock_scene"))
    try:
        assert layer.featureCount() >= 1 and layer.labelsEnabled()
        assert isinstance(layer.renderer(), QgsSingleSymbolRenderer)
        assert QgsProject.instance().layerTreeRoot().children()[0].name() == layer.name()  # on top
        assert "Finding 20 places in dock_scene" in dock.log_view.toPlainText()
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_dock_adapts_with_labelled_polygons_and_reports_the_held_out_estimate(dock, tmp_path):
    from plugin_data import SCENE_ORIGIN
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsPointXY, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer("Polygon?crs=EPSG:32640", "drawn labels", "memory")
    layer.dataProvider().addAttributes([QgsField("class", QVariant.String)])
    layer.updateFields()
    x0, y0 = SCENE_ORIGIN
    for i in range(6):
        left, top = x0 + 2 + 10 * i, y0 - 2 - 9 * i
        ring = [QgsPointXY(left + dx, top - dy) for dx, dy in ((0, 0), (8, 0), (8, 8), (0, 8))]
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPolygonXY([ring]))
        feature.setAttributes([["Building", "Water"][i % 2]])
        layer.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(layer)
    try:
        dock.shapes_combo.setLayer(layer)
        dock.start()
        wait_until(lambda: not dock.running, timeout=240)
        assert dock.last_result.status == SUCCESS, dock.last_result.error
        assert dock.last_result.estimate["polygons"] >= 1
        assert "held-out polygons" in dock.status.text(), dock.status.text()  # as the verdict's reason, or after it
        assert "held-out polygons (" in dock.log_view.toPlainText()  # the per-class line
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
