"""The plugin's GUI pieces without running the backend: loading, the dock's command, the options page."""

from __future__ import annotations

import pytest
from plugin_data import SCENE_ORIGIN, TINY_MODEL
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from qgis_crossearth.dock import ROI_DRAWN, ROI_EXTENT, ROI_SELECTION, AdaptDock, DockError
from qgis_crossearth.options import CrossEarthOptionsPage
from qgis_crossearth.plugin import CrossEarthPlugin
from qgis_crossearth.settings import load_settings

pytestmark = pytest.mark.qgis


@pytest.fixture
def scene_layer(scene):
    layer = QgsRasterLayer(str(scene), "My scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeMapLayer(layer.id())


@pytest.fixture
def dock(qgis_iface, plugin_settings, scene_layer, tmp_path):
    qgis_iface.setActiveLayer(scene_layer)
    dock = AdaptDock(qgis_iface)
    dock.output_widget.setFilePath(str(tmp_path / "out"))
    yield dock
    dock.shutdown()
    dock.deleteLater()


REPLACED_PROVIDERS: list = []


def test_plugin_registers_and_removes_its_provider(qgis_iface, qgis_processing, plugin_settings):
    from qgis_crossearth.provider import CrossEarthProvider

    registry = QgsApplication.processingRegistry()
    shared = registry.providerById("crossearth") is not None  # the provider of the tests that ran before
    if shared:
        registry.removeProvider("crossearth")
    try:
        plugin = CrossEarthPlugin(qgis_iface)
        plugin.initGui()
        assert registry.providerById("crossearth") is plugin.provider
        assert registry.algorithmById("crossearth:adaptandsegment") is not None
        assert plugin.dock is not None and plugin.dock.model_combo.currentText() == TINY_MODEL
        plugin.unload()
        assert registry.providerById("crossearth") is None
    finally:
        if shared:  # kept referenced: the registry would otherwise hold a provider without its Python side
            REPLACED_PROVIDERS.append(CrossEarthProvider())
            registry.addProvider(REPLACED_PROVIDERS[-1])


def test_a_second_crossearth_provider_does_not_break_unloading(qgis_iface, crossearth_provider):
    """QGIS deletes a provider whose id is taken (a plugin reloaded by hand): unloading must not touch it."""
    plugin = CrossEarthPlugin(qgis_iface)
    plugin.initGui()
    assert plugin.provider is None
    plugin.unload()
    assert QgsApplication.processingRegistry().providerById("crossearth") is not None  # the first one stays


def test_dock_follows_the_active_raster_and_builds_the_whole_scene_command(dock, scene_layer, tmp_path):
    assert dock.layer_combo.currentLayer() is scene_layer
    request = dock.build_request()
    assert request.title == "My_scene"
    job = request.job
    assert job.command == "adapt-segment" and job.scene.input == scene_layer.source()
    assert job.scene.model.endswith(TINY_MODEL)
    assert job.segment.output == str(tmp_path / "out" / "My_scene_classes.tif")
    assert job.segment.confidence == str(tmp_path / "out" / "My_scene_confidence.tif")
    assert job.adapt.report_out == str(tmp_path / "out" / "My_scene.selection.json")
    assert job.scene.bbox is None and job.scene.roi is None


def test_dock_passes_a_fractional_top_k_as_it_is_and_refuses_a_fractional_count(dock):
    """Top-k is a fraction (< 1) or a whole count: 0.25 stays 0.25; 2.5 is refused in one line, not truncated."""
    dock.top_k_spin.setValue(0.25)
    assert dock.build_request().job.adapt.top_k == 0.25
    dock.top_k_spin.setValue(2.5)
    with pytest.raises(DockError, match=r"top-k 2\.5"):
        dock.build_request()
    dock.start()
    assert not dock.running and "top-k 2.5" in dock.status.text()


def test_a_second_run_does_not_overwrite_the_first(dock, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "My_scene_classes.tif").write_bytes(b"")
    assert dock.build_request().title == "My_scene_2"


def test_map_extent_and_drawn_rectangle_become_a_bbox(dock, qgis_canvas, scene_layer):
    qgis_canvas.setDestinationCrs(scene_layer.crs())
    qgis_canvas.setExtent(QgsRectangle(SCENE_ORIGIN[0], SCENE_ORIGIN[1] - 32, SCENE_ORIGIN[0] + 32, SCENE_ORIGIN[1]))
    dock.roi_combo.setCurrentIndex(ROI_EXTENT)
    scene = dock.build_request().job.scene
    xmin, ymin, xmax, ymax = scene.bbox
    extent = qgis_canvas.extent()
    assert (xmin, ymin, xmax, ymax) == pytest.approx(
        (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    )
    assert scene.bbox_crs == "EPSG:32640"

    dock.roi_combo.setCurrentIndex(ROI_DRAWN)
    with pytest.raises(DockError, match="Draw a rectangle"):
        dock.build_request()
    x, y = SCENE_ORIGIN
    dock.on_rectangle_drawn(QgsRectangle(x + 4, y - 20, x + 20, y - 4))
    assert list(dock.build_request().job.scene.bbox) == [x + 4, y - 20, x + 20, y - 4]


def test_selected_polygons_are_exported_for_the_backend(dock, tmp_path):
    polygons = QgsVectorLayer("Polygon?crs=EPSG:32640", "fields", "memory")
    features = []
    for offset in (0, 40):
        feature = QgsFeature()
        x, y = SCENE_ORIGIN[0] + offset, SCENE_ORIGIN[1] - offset
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y - 16, x + 16, y)))
        features.append(feature)
    polygons.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(polygons)
    try:
        dock.roi_combo.setCurrentIndex(ROI_SELECTION)
        dock.polygon_combo.setLayer(polygons)
        with pytest.raises(DockError, match="Select one or more polygons"):
            dock.build_request()
        polygons.selectByIds([next(polygons.getFeatures()).id()])
        roi = dock.build_request().job.scene.roi
        exported = QgsVectorLayer(roi, "roi", "ogr")
        assert exported.isValid() and exported.featureCount() == 1
        del exported
    finally:
        QgsProject.instance().removeMapLayer(polygons.id())


def test_dg_mode_needs_labels(dock):
    dock.mode_combo.setCurrentIndex(dock.mode_combo.findData("dg"))
    dock.labels_combo.setLayer(None)
    with pytest.raises(DockError, match="labels"):
        dock.build_request()


def test_options_page_saves_what_the_user_chose(plugin_settings, tmp_path):
    applied = []
    page = CrossEarthOptionsPage(None, lambda: applied.append(True))
    try:
        assert page.python_widget.filePath() == plugin_settings.python
        page.threads_spin.setValue(2)
        page.device_combo.setCurrentText("cpu")
        page.apply()
        assert applied == [True]
        stored = load_settings()
        assert (stored.threads, stored.device, stored.model_folder) == (2, "cpu", plugin_settings.model_folder)
    finally:
        page.threads_spin.setValue(plugin_settings.threads)
        page.apply()
        page.deleteLater()


def test_drawing_a_rectangle_sets_the_region(dock, qgis_canvas):
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    qgis_canvas.resize(400, 300)
    dock.roi_combo.setCurrentIndex(ROI_DRAWN)
    dock.draw_button.setChecked(True)
    assert qgis_canvas.mapTool() is dock.map_tool
    tool = dock.map_tool
    start, end = QPoint(40, 30), QPoint(200, 150)
    tool.canvasPressEvent(QgsMapMouseEvent(qgis_canvas, QEvent.MouseButtonPress, start, Qt.LeftButton))
    tool.canvasMoveEvent(QgsMapMouseEvent(qgis_canvas, QEvent.MouseMove, end, Qt.NoButton))
    tool.canvasReleaseEvent(QgsMapMouseEvent(qgis_canvas, QEvent.MouseButtonRelease, end, Qt.LeftButton))
    assert not dock.draw_button.isChecked() and qgis_canvas.mapTool() is not tool
    corner_a, corner_b = tool.toMapCoordinates(start), tool.toMapCoordinates(end)
    assert dock.drawn.xMinimum() == pytest.approx(min(corner_a.x(), corner_b.x()))
    assert dock.drawn.yMaximum() == pytest.approx(max(corner_a.y(), corner_b.y()))
    assert dock.build_request().job.scene.bbox


@pytest.mark.parametrize(
    "algorithm",
    [
        "crossearth:segment",
        "crossearth:adapt",
        "crossearth:adaptandsegment",
        "crossearth:evaluate",
        "crossearth:suggestlabels",
    ],
)
def test_algorithm_and_batch_dialogs_build_every_parameter_widget(
    crossearth_provider, qgis_iface, monkeypatch, algorithm
):
    import processing
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)

    dialog = processing.createAlgorithmDialog(algorithm)
    assert dialog is not None
    panel = dialog.mainWidget()
    definitions = dialog.algorithm().parameterDefinitions()
    assert set(panel.wrappers) == {d.name() for d in definitions}
    batch = BatchAlgorithmDialog(dialog.algorithm().create())
    assert batch.mainWidget().batchRowCount() >= 1
    batch.deleteLater()
    dialog.deleteLater()


def test_the_dock_says_when_the_self_check_kept_the_unadapted_model(dock):
    from qgis_crossearth.task import SUCCESS, TaskResult

    verdict = {"kept": "unadapted", "reason": "it changed 29% of the pixels the unadapted model was sure of"}
    dock.on_completed(TaskResult(SUCCESS, group="My scene", metrics={"self_check": verdict}))
    assert dock.status.text() == (
        "Done, without adaptation: it did not help this scene (it changed 29% of the pixels the unadapted model "
        "was sure of), so the layers in group “My scene” are the unadapted model's map."
    )
    dock.on_completed(TaskResult(SUCCESS, group="My scene", metrics={"self_check": {**verdict, "kept": "adapted"}}))
    assert dock.status.text() == "Done: layers added in group “My scene”."


def test_labels_row_shows_only_in_labelled_mode_even_after_the_settings_open(dock):
    dock.show()
    dock.settings_box.setCollapsed(False)  # a collapsible group box shows its children when it opens
    QgsApplication.processEvents()
    assert not dock.labels_combo.isVisible() and not dock.labels_label.isVisible()
    dock.mode_combo.setCurrentIndex(dock.mode_combo.findData("dg"))
    assert dock.labels_combo.isVisible() and dock.labels_label.isVisible()
    dock.settings_box.setCollapsed(True)
    dock.settings_box.setCollapsed(False)
    dock.mode_combo.setCurrentIndex(dock.mode_combo.findData("da"))
    assert not dock.labels_combo.isVisible()
    dock.hide()


def test_the_dock_scrolls_instead_of_squeezing_its_fields(dock):
    """Docked under the Processing toolbox the dock gets little height: its fields keep theirs and it scrolls."""
    from qgis.PyQt.QtWidgets import QScrollArea

    assert isinstance(dock.widget(), QScrollArea) and dock.widget().widgetResizable()
    dock.settings_box.setCollapsed(False)
    dock.resize(320, 120)
    dock.show()
    QgsApplication.processEvents()
    assert dock.steps_spin.height() >= dock.steps_spin.minimumSizeHint().height()
    assert dock.widget().verticalScrollBar().maximum() > 0
    body = dock.widget().widget()  # never cut on the right: the dock is as wide as its fields need
    assert dock.widget().minimumSizeHint().width() >= body.minimumSizeHint().width()
    assert dock.widget().viewport().width() >= body.minimumSizeHint().width()
    dock.hide()


def test_a_refused_run_clears_the_last_runs_progress_log_and_heatmap(dock, tmp_path):
    from qgis_crossearth.task import SUCCESS, TaskResult

    heatmap = tmp_path / "r.selection.png"
    heatmap.write_bytes(b"")
    dock.on_completed(TaskResult(SUCCESS, outputs={"REPORT_PLOT": str(heatmap)}, group="g"))
    dock.append_log("info", "the last run's log")
    assert dock.heatmap_button.isEnabled() and dock.progress.value() == 100
    dock.top_k_spin.setValue(2.5)
    dock.start()
    assert "top-k 2.5" in dock.status.text()
    assert dock.progress.value() == 0 and dock.log_view.toPlainText() == ""
    assert not dock.heatmap_button.isEnabled()


def test_the_selection_heatmap_opens_inside_qgis(dock, tmp_path):
    from qgis.PyQt.QtGui import QColor, QImage

    from qgis_crossearth.task import SUCCESS, TaskResult

    heatmap = tmp_path / "r.selection.png"
    image = QImage(60, 40, QImage.Format_RGB32)
    image.fill(QColor("red"))
    assert image.save(str(heatmap))
    dock.on_completed(TaskResult(SUCCESS, outputs={"REPORT_PLOT": str(heatmap)}, group="g"))
    dialog = dock.open_heatmap()
    try:
        assert dialog.isVisible() and not dialog.image.pixmap().isNull()
        assert dialog.image.pixmap().width() == 60
    finally:
        dialog.close()
    heatmap.unlink()  # gone since: the dock says so instead of failing silently
    assert dock.open_heatmap() is None and "r.selection.png" in dock.status.text()


def test_options_page_sets_up_the_backend_in_a_task_that_reports_progress_and_cancels(
    plugin_settings, monkeypatch, tmp_path
):
    """The button runs backend_setup.setup_backend (here a stand-in) in a task; pressed again, it cancels."""
    import time

    from qgis_crossearth import options
    from qgis_crossearth.backend_setup import SetupResult

    calls = []

    def fake_setup(requirements, target, find_links, progress, is_cancelled, **_):
        calls.append((requirements, find_links))
        progress(0.5, "installing")
        while not is_cancelled():
            time.sleep(0.02)
        return SetupResult(False, "set-up cancelled; no environment was left ready", cancelled=True)

    monkeypatch.setattr(options, "setup_backend", fake_setup)
    page = CrossEarthOptionsPage(None, lambda: None)
    try:
        page.find_links_widget.setFilePath(str(tmp_path))
        page.setup_button.click()
        deadline = time.monotonic() + 10
        while page.setup_progress.value() < 50:
            assert time.monotonic() < deadline
            QgsApplication.processEvents()
        assert page.setup_button.text() == "Cancel set-up"
        page.setup_button.click()
        while page.setup_task is not None:
            assert time.monotonic() < deadline
            QgsApplication.processEvents()
        assert calls[0][1] == str(tmp_path) and calls[0][0].name.startswith("requirements")
        assert page.setup_button.text() == "Set up the backend" and "cancelled" in page.report_view.toPlainText()
    finally:
        page.deleteLater()


def test_an_installed_zip_is_not_told_to_run_make_setup(monkeypatch, model_folder):
    from qgis_crossearth import paths
    from qgis_crossearth.environment import check_environment
    from qgis_crossearth.runner import BackendConfig

    monkeypatch.setattr(paths, "is_checkout", lambda: False)
    config = BackendConfig(python="", root=paths.BUNDLED_LIB)
    report = check_environment(config, paths.requirements_file(), model_folder)
    fix = report.findings[-1].fix
    assert "Set up the backend" in fix and "make setup" not in fix


def test_the_dock_widens_when_its_fields_do(qgis_iface, plugin_settings):
    """A row shown later (the drawn rectangle's size) must widen the docked dock, not be cut on the right."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow, QWidget

    window = QMainWindow()
    window.setCentralWidget(QWidget())
    dock = AdaptDock(qgis_iface)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.resize(1600, 1000)
    window.show()
    try:
        QgsApplication.processEvents()
        dock.roi_combo.setCurrentIndex(ROI_DRAWN)
        dock.drawn_label.setText("1417 × 1710 map units, and a little more")
        dock.settings_box.setCollapsed(False)
        for _ in range(5):
            QgsApplication.processEvents()
        body = dock.widget().widget()
        assert dock.widget().viewport().width() >= body.minimumSizeHint().width()
    finally:
        dock.shutdown()
        window.close()


def labelled_polygons(name: str = "my labels", field: str = "class", count: int = 2) -> QgsVectorLayer:
    """A memory layer of squares over the scene, in WGS 84 (not the scene's CRS), classes in ``field``."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsField, QgsPointXY
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
    layer.dataProvider().addAttributes([QgsField("id", QVariant.Int), QgsField(field, QVariant.String)])
    layer.updateFields()
    to_wgs84 = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:32640"), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    x0, y0 = SCENE_ORIGIN
    for i in range(count):
        corners = [(x0 + 4 + 20 * i + dx, y0 - 4 - dy) for dx, dy in ((0, 0), (10, 0), (10, 10), (0, 10))]
        ring = [to_wgs84.transform(QgsPointXY(x, y)) for x, y in corners]
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPolygonXY([ring]))
        feature.setAttributes([i, ["Building", "Water"][i % 2]])
        layer.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_labels_layer_is_offered_in_both_modes_and_its_field_only_once_chosen(dock):
    dock.show()
    dock.settings_box.setCollapsed(False)
    QgsApplication.processEvents()
    assert dock.shapes_combo.isVisible() and dock.shapes_combo.currentLayer() is None  # empty by default
    assert not dock.field_combo.isVisible() and not dock.field_label.isVisible()
    layer = labelled_polygons(field="kind")
    try:
        dock.shapes_combo.setLayer(layer)
        assert dock.field_combo.isVisible() and dock.field_combo.currentField() == "id"  # no "class": the first
        dock.field_combo.setField("kind")
        dock.mode_combo.setCurrentIndex(dock.mode_combo.findData("dg"))
        assert not dock.labels_combo.isVisible()  # DG takes the shapes: no label raster asked for
        dock.shapes_combo.setLayer(None)
        assert dock.labels_combo.isVisible() and not dock.field_combo.isVisible()
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
        dock.hide()


@pytest.mark.parametrize("mode", ["da", "dg"])
def test_labelled_shapes_of_a_memory_layer_go_to_the_adaptation_as_a_geopackage(dock, tmp_path, mode):
    layer = labelled_polygons()
    try:
        dock.mode_combo.setCurrentIndex(dock.mode_combo.findData(mode))
        dock.shapes_combo.setLayer(layer)
        assert dock.field_combo.currentField() == "class"
        request = dock.build_request()
        options = request.job.adapt
        assert (options.mode, options.label_field) == (mode, "class")
        assert options.labels == str(tmp_path / "out" / "My_scene.labels.gpkg")
        written = QgsVectorLayer(options.labels, "written", "ogr")
        assert written.featureCount() == 2 and written.fields().names()[-1] == "class"
        assert written.crs().authid() == "EPSG:4326"  # any CRS: the backend reprojects
        assert "labels from my labels" in request.description
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_an_empty_labels_layer_or_a_missing_field_is_refused(dock):
    empty = labelled_polygons(name="empty", count=0)
    try:
        dock.shapes_combo.setLayer(empty)
        with pytest.raises(DockError, match="no shapes yet"):
            dock.build_request()
    finally:
        QgsProject.instance().removeMapLayer(empty.id())
    assert dock.build_request().job.adapt.labels is None  # DA without labels, as before


def test_suggest_where_to_label_builds_a_suggest_labels_job_on_the_same_scene(dock, tmp_path):
    dock.roi_combo.setCurrentIndex(ROI_EXTENT)
    request = dock.build_suggest_request()
    job = request.job
    assert job.command == "suggest-labels" and request.suggests
    assert job.output == str(tmp_path / "out" / "My_scene.places_to_label.gpkg")
    assert job.scene.bbox and job.scene.model.endswith(TINY_MODEL)
    assert dock.suggest_button.isEnabled()


def test_the_status_line_gives_the_held_out_estimate_and_a_suggestion_keeps_the_last_map(dock, tmp_path):
    from qgis_crossearth.task import SUCCESS, TaskResult

    estimate = {"polygons": 4, "pixels": 300, "before": {"miou": 0.412, "iou": {}}, "after": {"miou": 0.5, "iou": {}}}
    mapped = TaskResult(
        SUCCESS,
        group="g",
        outputs={"OUTPUT": "c.tif"},
        metrics={"self_check": {"kept": "adapted", "estimate": estimate}},
    )
    dock.on_completed(mapped)
    assert dock.status.text() == "Done: layers added in group “g”. held-out polygons (4): mIoU 41.2 -> 50.0."
    dock.request = dock.build_suggest_request()
    dock.on_completed(TaskResult(SUCCESS, outputs={"OUTPUT": "s.gpkg"}, metrics={"spots": 20}))
    assert dock.status.text().startswith("Done: 20 places to label in layer “My_scene places to label”.")
    assert dock.last_result is mapped and dock.analysis_buttons.buttons["crossearth:vectorize"].isEnabled()


def test_the_pixel_size_field_shows_the_models_resolution_and_goes_to_the_scene(dock):
    """The tiny model states no ground resolution: native; a card that does shows its metres; a bad value is one
    line in the status, and no run starts."""
    from dataclasses import replace

    assert dock.resolution_edit.text() == "native"
    assert dock.build_request().job.scene.resolution == "native"
    dock.cards[0] = replace(dock.cards[0], resolution_m=0.3)
    dock.show_model_resolution()
    assert dock.resolution_edit.text() == "0.3"
    assert dock.build_request().job.scene.resolution == "0.3"
    assert dock.build_suggest_request().job.scene.resolution == "0.3"
    dock.resolution_edit.setText("-1")
    dock.start()
    assert not dock.running and "resolution '-1'" in dock.status.text() and "\n" not in dock.status.text()
