"""The "Adapt to this scene" dock: pick a raster and a region, press one button, get styled layers.

The dock builds a :class:`~qgis_crossearth.task.RunRequest` from its widgets (the same job dataclass
of backend.contract as the Processing algorithms), runs it as a QgsTask and shows progress and log lines.
"Suggest where to label" runs suggest-labels on the same scene and region the same way; the analyst's
labelled shapes (any vector layer, "Labels (optional)") go to the adaptation in DA and DG alike.
"""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QEvent, QObject, QSize, Qt
from qgis.PyQt.QtGui import QFont, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from backend.contract import (
    ADAPT_DEFAULTS,
    DEFAULT_LABEL_FIELD,
    DEFAULT_MODEL,
    NATIVE,
    AdaptOptions,
    AdaptSegmentJob,
    Scene,
    SegmentOptions,
    SuggestLabelsJob,
    encode,
)
from backend.errors import BadInput
from qgis_crossearth import paths
from qgis_crossearth.algorithms.base import crs_string
from qgis_crossearth.analysis_actions import AnalysisButtons
from qgis_crossearth.map_tool import RectangleMapTool
from qgis_crossearth.model_cards import ModelCard, list_model_cards
from qgis_crossearth.settings import backend_config, load_settings, save_settings
from qgis_crossearth.task import CANCELLED, SUCCESS, AdaptSegmentTask, RunRequest, TaskResult, spots_name

ROI_WHOLE, ROI_EXTENT, ROI_SELECTION, ROI_DRAWN = range(4)
ROI_CHOICES = ["Whole raster", "Current map extent", "Selected polygons", "Rectangle drawn on the map"]
RUN_ENDINGS = ("_classes.tif", ".adapter.safetensors")  # a run's files, by which a stem is taken
SPOTS_ENDING = ".places_to_label.gpkg"
LOG_TAG = "CrossEarth"


class DockError(ValueError):
    """A choice in the dock that cannot run; shown to the user as is."""


class AdaptDock(QDockWidget):
    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__("Adapt to this scene", parent)
        self.setObjectName("CrossEarthAdaptDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.task: AdaptSegmentTask | None = None
        self.drawn: QgsRectangle | None = None
        self.drawn_crs = None
        self.map_tool = RectangleMapTool(self.canvas)
        self.map_tool.rectangle_drawn.connect(self.on_rectangle_drawn)
        self.last_result: TaskResult | None = None  # the last adapt-and-segment run (the analyses start from it)
        self.request: RunRequest | None = None  # the running one
        self.cards: list[ModelCard] = []
        self.build()
        self.reload_models()
        self.follow_active_layer(iface.activeLayer())
        iface.currentLayerChanged.connect(self.follow_active_layer)
        self.update_widgets()

    # --- widgets ----------------------------------------------------------------------------

    def build(self) -> None:
        body = QWidget(self)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(8, 8, 8, 8)

        header = QLabel(
            "Adapts the model to the scene you are looking at (no labels needed), then classifies every pixel."
        )
        header.setWordWrap(True)
        layout.addWidget(header)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Raster", self.layer_combo)

        self.roi_combo = QComboBox(body)
        self.roi_combo.addItems(ROI_CHOICES)
        self.roi_combo.currentIndexChanged.connect(self.update_widgets)
        form.addRow("Region", self.roi_combo)
        self.polygon_combo = QgsMapLayerComboBox(body)
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_row = QLabel("Polygons", body)
        form.addRow(self.polygon_row, self.polygon_combo)
        self.draw_button = QPushButton("Draw rectangle", body)
        self.draw_button.setCheckable(True)
        self.draw_button.toggled.connect(self.on_draw_toggled)
        self.drawn_label = QLabel("no rectangle yet", body)
        draw_row = QHBoxLayout()
        draw_row.addWidget(self.draw_button)
        draw_row.addWidget(self.drawn_label, 1)
        self.draw_row_label = QLabel("Rectangle", body)
        form.addRow(self.draw_row_label, draw_row)

        self.model_combo = QComboBox(body)
        self.model_combo.currentIndexChanged.connect(self.show_model_resolution)
        form.addRow("Model", self.model_combo)
        self.resolution_edit = QLineEdit(body)
        self.resolution_edit.setToolTip(
            "The pixel size the raster is read at, in metres: the model's ground resolution, from its card, or "
            "native (the raster's own, when the model states none); the map is on the raster's grid either way"
        )
        form.addRow("Pixel size (m)", self.resolution_edit)
        self.output_widget = QgsFileWidget(body)
        self.output_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_widget.setFilePath(str(load_settings().effective_output_folder))
        form.addRow("Output folder", self.output_widget)
        layout.addLayout(form)

        self.settings_box = QgsCollapsibleGroupBox("Adaptation", body)
        self.settings_box.setCollapsed(True)
        # opening the box shows all its children, the Labels row of DA too: hide what the mode does not use again
        self.settings_box.collapsedStateChanged.connect(lambda _collapsed: self.update_widgets())
        settings_form = QFormLayout(self.settings_box)
        self.mode_combo = QComboBox(self.settings_box)
        self.mode_combo.addItem("Unlabelled scene (DA)", "da")
        self.mode_combo.addItem("With labels (DG)", "dg")
        self.mode_combo.currentIndexChanged.connect(self.update_widgets)
        settings_form.addRow("Mode", self.mode_combo)
        self.shapes_combo = QgsMapLayerComboBox(self.settings_box)
        self.shapes_combo.setFilters(
            QgsMapLayerProxyModel.PolygonLayer | QgsMapLayerProxyModel.PointLayer | QgsMapLayerProxyModel.LineLayer
        )
        self.shapes_combo.setAllowEmptyLayer(True)
        self.shapes_combo.setLayer(None)
        self.shapes_combo.setToolTip(
            "Your labelled polygons (points and lines too; any CRS): their pixels train with the loss, the rest "
            "self-trains, and a third of each class's shapes is held out to check the adapted model"
        )
        self.shapes_combo.layerChanged.connect(self.on_shapes_changed)
        settings_form.addRow("Labels (optional)", self.shapes_combo)
        self.field_combo = QgsFieldComboBox(self.settings_box)
        self.field_combo.setToolTip("The field holding class names (or values) of the model's classes")
        self.field_label = QLabel("Class field", self.settings_box)
        settings_form.addRow(self.field_label, self.field_combo)
        self.labels_combo = QgsMapLayerComboBox(self.settings_box)
        self.labels_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.labels_label = QLabel("Label raster", self.settings_box)
        settings_form.addRow(self.labels_label, self.labels_combo)
        self.steps_spin = spin(1, 100_000, ADAPT_DEFAULTS["steps"])
        settings_form.addRow("Steps", self.steps_spin)
        self.samples_spin = spin(1, 10_000, ADAPT_DEFAULTS["samples"])
        settings_form.addRow("Sample tiles", self.samples_spin)
        self.top_k_spin = QDoubleSpinBox(self.settings_box)
        self.top_k_spin.setRange(0.01, 1000)
        self.top_k_spin.setDecimals(2)
        self.top_k_spin.setValue(ADAPT_DEFAULTS["top_k"])
        self.top_k_spin.setToolTip("Modules to adapt: a count, or a fraction (< 1) of all modules")
        settings_form.addRow("Top-k modules", self.top_k_spin)
        layout.addWidget(self.settings_box)

        buttons = QHBoxLayout()
        self.run_button = QPushButton(QIcon(paths.icon_path("crossearth.svg")), "Adapt and segment", body)
        font = QFont(self.run_button.font())
        font.setBold(True)
        self.run_button.setFont(font)
        self.run_button.setMinimumHeight(32)
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.suggest_button = QPushButton("Suggest where to label", body)
        self.suggest_button.setToolTip(
            "Boxes where the model is least sure, spread over the scene and its classes: label a few of them "
            "with polygons and choose that layer as Labels under Adaptation"
        )
        self.suggest_button.clicked.connect(self.start_suggest)
        layout.addWidget(self.suggest_button)

        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel("Ready.", body)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.log_view = QPlainTextEdit(body)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Backend log")
        self.log_view.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        layout.addWidget(self.log_view, 1)

        self.heatmap_button = QPushButton("Open selection heatmap", body)
        self.heatmap_button.setToolTip("Which modules the Fisher gate chose, block by block")
        self.heatmap_button.clicked.connect(self.open_heatmap)
        layout.addWidget(self.heatmap_button)
        self.analysis_buttons = AnalysisButtons(self.last_outputs, body)
        layout.addWidget(self.analysis_buttons)
        # docked under another panel the dock gets little height: scroll rather than squeeze the fields
        scroll = VerticalScrollArea(self)
        scroll.setWidget(body)
        self.setWidget(scroll)

    def reload_models(self) -> None:
        current = self.model_combo.currentText() or DEFAULT_MODEL
        self.cards = list_model_cards(load_settings().effective_model_folder)
        self.model_combo.clear()
        for card in self.cards:
            self.model_combo.addItem(card.name)
            self.model_combo.setItemData(self.model_combo.count() - 1, card.description, Qt.ToolTipRole)
        index = self.model_combo.findText(current)
        self.model_combo.setCurrentIndex(max(index, 0))
        self.show_model_resolution()
        self.update_widgets()

    def chosen_card(self) -> ModelCard | None:
        return next((c for c in self.cards if c.name == self.model_combo.currentText()), None)

    def show_model_resolution(self) -> None:
        """The resolution field starts at the chosen model's ground resolution (native when it states none)."""
        card = self.chosen_card()
        known = card is not None and card.resolution_m is not None
        self.resolution_edit.setText(f"{card.resolution_m:g}" if known else NATIVE)

    def follow_active_layer(self, layer) -> None:
        if isinstance(layer, QgsRasterLayer) and not self.running:
            self.layer_combo.setLayer(layer)

    @property
    def running(self) -> bool:
        return self.task is not None

    def update_widgets(self) -> None:
        roi = self.roi_combo.currentIndex()
        for widget in (self.polygon_row, self.polygon_combo):
            widget.setVisible(roi == ROI_SELECTION)
        for widget in (self.draw_row_label, self.draw_button, self.drawn_label):
            widget.setVisible(roi == ROI_DRAWN)
        dg = self.mode_combo.currentData() == "dg"
        shapes = self.shapes_combo.currentLayer() is not None
        self.labels_label.setVisible(dg and not shapes)  # the class raster, when DG has no labelled shapes
        self.labels_combo.setVisible(dg and not shapes)
        self.field_label.setVisible(shapes)
        self.field_combo.setVisible(shapes)
        for widget in (
            self.layer_combo,
            self.roi_combo,
            self.polygon_combo,
            self.draw_button,
            self.model_combo,
            self.output_widget,
            self.settings_box,
        ):
            widget.setEnabled(not self.running)
        self.run_button.setEnabled(not self.running and bool(self.cards))
        self.suggest_button.setEnabled(not self.running and bool(self.cards))
        self.cancel_button.setEnabled(self.running)
        self.heatmap_button.setEnabled(bool(self.last_result and self.last_result.report_plot))
        self.analysis_buttons.refresh()
        if not self.cards and not self.running:
            self.status.setText(
                f"No model in {load_settings().effective_model_folder}: set the model folder in "
                "Settings > Options > CrossEarth."
            )

    def on_shapes_changed(self, layer) -> None:
        """The class field follows the labels layer: its ``class`` field when it has one."""
        self.field_combo.setLayer(layer)
        if isinstance(layer, QgsVectorLayer) and layer.fields().indexOf(DEFAULT_LABEL_FIELD) >= 0:
            self.field_combo.setField(DEFAULT_LABEL_FIELD)
        elif isinstance(layer, QgsVectorLayer) and layer.fields().count():
            self.field_combo.setField(layer.fields().at(0).name())
        self.update_widgets()

    # --- region of interest -----------------------------------------------------------------

    def on_draw_toggled(self, checked: bool) -> None:
        if checked:
            self.canvas.setMapTool(self.map_tool)
        elif self.canvas.mapTool() is self.map_tool:
            self.canvas.unsetMapTool(self.map_tool)

    def on_rectangle_drawn(self, rectangle: QgsRectangle) -> None:
        self.drawn = QgsRectangle(rectangle)
        self.drawn_crs = self.canvas.mapSettings().destinationCrs()
        self.drawn_label.setText(f"{rectangle.width():.0f} × {rectangle.height():.0f} map units")
        self.draw_button.setChecked(False)

    def region(self, folder: Path, stem: str) -> dict:
        """The Scene fields of the chosen region: bbox and bbox_crs, or roi."""
        roi = self.roi_combo.currentIndex()
        if roi == ROI_EXTENT:
            extent = self.canvas.extent()
            return {
                "bbox": (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()),
                "bbox_crs": crs_string(self.canvas.mapSettings().destinationCrs()),
            }
        if roi == ROI_DRAWN:
            if self.drawn is None:
                raise DockError("Draw a rectangle on the map first.")
            d = self.drawn
            return {
                "bbox": (d.xMinimum(), d.yMinimum(), d.xMaximum(), d.yMaximum()),
                "bbox_crs": crs_string(self.drawn_crs),
            }
        if roi == ROI_SELECTION:
            return {"roi": export_selection(self.polygon_combo.currentLayer(), folder / f"{stem}.roi.gpkg")}
        return {}

    # --- running ----------------------------------------------------------------------------

    def chosen(self, endings: tuple[str, ...]) -> tuple[QgsRasterLayer, ModelCard, Path, str]:
        """The raster, the model card, the output folder and a stem no earlier run with ``endings`` used."""
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            raise DockError("Choose a raster layer.")
        card = self.chosen_card()
        if card is None:
            raise DockError("Choose a model.")
        folder = Path(self.output_widget.filePath()).expanduser()
        if not str(folder).strip():
            raise DockError("Choose an output folder.")
        folder.mkdir(parents=True, exist_ok=True)
        return layer, card, folder, unique_stem(folder, layer.name(), endings)

    def scene(self, layer: QgsRasterLayer, card: ModelCard, folder: Path, stem: str) -> Scene:
        return Scene(
            input=layer.source(),
            model=str(card.folder),
            threads=load_settings().threads,
            resolution=self.resolution_edit.text(),
            **self.region(folder, stem),
        )

    def labels(self, folder: Path, stem: str) -> tuple[str | None, str]:
        """The labels of the adaptation and their field: the labelled shapes (exported to a GeoPackage), or in
        DG without them the label raster."""
        shapes = self.shapes_combo.currentLayer()
        field = self.field_combo.currentField() or DEFAULT_LABEL_FIELD
        if isinstance(shapes, QgsVectorLayer):
            return export_labels(shapes, field, folder / f"{stem}.labels.gpkg"), field
        if self.mode_combo.currentData() != "dg":
            return None, field
        raster = self.labels_combo.currentLayer()
        if raster is None:
            raise DockError("DG mode needs labels: a labels layer of polygons, or a label raster.")
        return raster.source(), field

    def build_request(self) -> RunRequest:
        layer, card, folder, stem = self.chosen(RUN_ENDINGS)
        settings = load_settings()
        mode = self.mode_combo.currentData()
        try:  # the job checks its values as the backend would (e.g. a top-k of 2.5)
            scene = self.scene(layer, card, folder, stem)
            labels, label_field = self.labels(folder, stem)
            adaptation = AdaptOptions(
                mode=mode,
                labels=labels,
                label_field=label_field,
                samples=self.samples_spin.value(),
                steps=self.steps_spin.value(),
                top_k=self.top_k_spin.value(),
                adapter_out=str(folder / f"{stem}.adapter.safetensors"),
                report_out=str(folder / f"{stem}.selection.json"),
                overwrite=True,
            )
            segmentation = SegmentOptions(
                output=str(folder / f"{stem}_classes.tif"),
                confidence=str(folder / f"{stem}_confidence.tif"),
                device=settings.device,
                overwrite=True,
            )
            job = AdaptSegmentJob(scene, adaptation, segmentation)
        except BadInput as error:
            raise DockError(str(error)) from None
        shapes = self.shapes_combo.currentLayer()
        with_labels = f", labels from {shapes.name()}" if isinstance(shapes, QgsVectorLayer) else ""
        return RunRequest(
            title=stem,
            job=job,
            card=card,
            description=(
                f"Adapting {card.name} to {stem} ({adaptation.mode.upper()}, {adaptation.steps} steps, "
                f"{adaptation.samples} tiles, top-k {adaptation.top_k:g}{with_labels}), then segmenting."
            ),
        )

    def build_suggest_request(self) -> RunRequest:
        layer, card, folder, stem = self.chosen((SPOTS_ENDING,))
        try:
            job = SuggestLabelsJob(self.scene(layer, card, folder, stem), str(folder / f"{stem}{SPOTS_ENDING}"))
        except BadInput as error:
            raise DockError(str(error)) from None
        return RunRequest(
            title=stem,
            job=job,
            card=card,
            description=f"Finding {job.count} places in {stem} where {card.name} is least sure.",
        )

    def start(self) -> None:
        """Adapt and segment the scene."""
        self.launch(self.build_request, "Adapting to {title}…")

    def start_suggest(self) -> None:
        """Suggest where to label in the scene; the last map (and its analyses) stays."""
        self.launch(self.build_suggest_request, "Looking for places to label in {title}…")

    def launch(self, build, status: str) -> None:
        if self.running:
            return
        try:
            request = build()
        except (DockError, OSError) as error:
            self.clear_last_run()  # the last run's progress, log and heatmap would read as this one's
            self.status.setText(str(error))
            return
        settings = load_settings()
        settings.output_folder = self.output_widget.filePath()
        save_settings(settings)
        if not request.suggests:
            self.last_result = None
        self.request = request
        self.log_view.clear()
        self.append_log("info", request.description)
        QgsMessageLog.logMessage("crossearth " + " ".join(encode(request.job)), LOG_TAG, Qgis.Info)
        self.progress.setValue(0)
        self.status.setText(status.format(title=request.title))
        self.task = AdaptSegmentTask(request, backend_config(settings))
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.progress_text.connect(self.status.setText)
        self.task.log_line.connect(self.append_log)
        self.task.completed.connect(self.on_completed)
        self.update_widgets()
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Cancelling…")
            self.task.cancel()

    def on_completed(self, result: TaskResult) -> None:
        self.task = None
        request, self.request = self.request, None
        bar = self.iface.messageBar()
        if request is not None and request.suggests:
            self.on_suggested(request, result)
            return
        self.last_result = result
        if result.status == SUCCESS and result.kept_unadapted:
            self.progress.setValue(100)
            reason = result.metrics["self_check"]["reason"]
            self.status.setText(
                f"Done, without adaptation: it did not help this scene ({reason}), so the layers in group "
                f"“{result.group}” are the unadapted model's map."
            )
            bar.pushWarning(LOG_TAG, f"{result.group}: adaptation did not help; segmented with the unadapted model.")
        elif result.status == SUCCESS:
            self.progress.setValue(100)
            estimate = f" {estimate_text(result.estimate)}." if result.estimate else ""
            self.status.setText(f"Done: layers added in group “{result.group}”.{estimate}")
            bar.pushSuccess(LOG_TAG, f"adapted and segmented; the layers are in “{result.group}”.")
        elif result.status == CANCELLED:
            self.progress.setValue(0)
            self.status.setText("Cancelled; no output was written.")
        else:
            self.status.setText(f"Failed: {result.error}")
            self.append_log("warning", result.error)
            bar.pushCritical(LOG_TAG, result.error)
        self.update_widgets()

    def on_suggested(self, request: RunRequest, result: TaskResult) -> None:
        if result.status == SUCCESS:
            self.progress.setValue(100)
            count = result.metrics.get("spots", "the")
            self.status.setText(
                f"Done: {count} places to label in layer “{spots_name(request.title)}”. Draw polygons of what you "
                "see in a few of them (a class field with the model's class names), then choose that layer as "
                "Labels under Adaptation."
            )
        elif result.status == CANCELLED:
            self.progress.setValue(0)
            self.status.setText("Cancelled; no output was written.")
        else:
            self.status.setText(f"Failed: {result.error}")
            self.append_log("warning", result.error)
            self.iface.messageBar().pushCritical(LOG_TAG, result.error)
        self.update_widgets()

    def clear_last_run(self) -> None:
        self.last_result = None
        self.progress.setValue(0)
        self.log_view.clear()
        self.update_widgets()

    def append_log(self, level: str, message: str) -> None:
        """Info and warnings in the dock; everything, the backend's stderr too, in the QGIS log panel."""
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Warning if level == "warning" else Qgis.Info)
        if level != "debug":
            self.log_view.appendPlainText(("⚠ " if level == "warning" else "") + message)

    def last_outputs(self) -> dict[str, str]:
        """The last successful run's outputs (the analysis buttons start from its class raster)."""
        return self.last_result.outputs if self.last_result and self.last_result.status == SUCCESS else {}

    def open_heatmap(self) -> HeatmapDialog | None:
        """The selection heatmap in a window of QGIS's own (an external viewer may be missing, and fail silently)."""
        path = self.last_result.report_plot if self.last_result else ""
        if not path:
            return None
        pixmap = QPixmap(path)
        if pixmap.isNull():
            self.status.setText(f"Cannot show the selection heatmap: {path} is missing or not an image.")
            return None
        dialog = HeatmapDialog(pixmap, path, self)
        dialog.show()
        return dialog

    def shutdown(self) -> None:
        """Stop a running task and release the canvas before the plugin unloads."""
        self.cancel()
        self.iface.currentLayerChanged.disconnect(self.follow_active_layer)
        if self.canvas.mapTool() is self.map_tool:
            self.canvas.unsetMapTool(self.map_tool)
        self.map_tool.clear()
        self.canvas.scene().removeItem(self.map_tool.band)


class VerticalScrollArea(QScrollArea):
    """Scrolls up and down only, and asks for the width its content needs, so that nothing is cut on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def _with_content_width(self, hint: QSize, content: QSize) -> QSize:
        scrollbar = self.style().pixelMetric(QStyle.PM_ScrollBarExtent)
        return QSize(max(hint.width(), content.width() + scrollbar), hint.height())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()  # a row shown or a longer label: the dock is asked for the new width
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return self._with_content_width(hint, self.widget().minimumSizeHint()) if self.widget() else hint

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return self._with_content_width(hint, self.widget().sizeHint()) if self.widget() else hint


class HeatmapDialog(QDialog):
    """Which modules the Fisher gate chose, block by block: the PNG beside the selection report."""

    def __init__(self, pixmap: QPixmap, path: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Selection heatmap: {Path(path).name}")
        self.setAttribute(Qt.WA_DeleteOnClose)
        self.image = QLabel(self)
        self.image.setPixmap(pixmap)
        self.image.setAlignment(Qt.AlignCenter)
        scroll = QScrollArea(self)
        scroll.setWidget(self.image)
        scroll.setWidgetResizable(True)
        where = QLabel(path, self)
        where.setTextInteractionFlags(Qt.TextSelectableByMouse)
        where.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(where)
        self.resize(min(pixmap.width() + 40, 1000), min(pixmap.height() + 80, 800))


def spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


def estimate_text(estimate: dict) -> str:
    """The self-check's scores on the held-out labelled polygons, in one phrase."""
    before, after = 100 * estimate["before"]["miou"], 100 * estimate["after"]["miou"]
    return f"held-out polygons ({estimate['polygons']}): mIoU {before:.1f} -> {after:.1f}"


def unique_stem(folder: Path, name: str, endings: tuple[str, ...] = RUN_ENDINGS) -> str:
    """A file-safe stem from the layer name that no earlier run in ``folder`` used (its files end in ``endings``)."""
    base = re.sub(r"[^\w.-]+", "_", name).strip("._") or "scene"
    stem, n = base, 1
    while any((folder / f"{stem}{ending}").exists() for ending in endings):
        n += 1
        stem = f"{base}_{n}"
    return stem


def export_selection(layer: QgsVectorLayer | None, path: Path) -> str:
    """The selected polygons as a one-layer GeoPackage the backend reads as ``--roi``."""
    if not isinstance(layer, QgsVectorLayer):
        raise DockError("Choose a polygon layer.")
    if layer.selectedFeatureCount() == 0:
        raise DockError(f"Select one or more polygons in {layer.name()} first.")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.onlySelectedFeatures = True
    options.layerName = "roi"
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        raise DockError(f"{path}: cannot write the selected polygons ({message})")
    return str(path)


def export_labels(layer: QgsVectorLayer, field: str, path: Path) -> str:
    """The labelled shapes (all of them, any geometry and CRS) with their class field, as the GeoPackage the
    backend reads as ``--labels``: a memory layer or a database table works as well as a file."""
    index = layer.fields().indexOf(field)
    if index < 0:
        raise DockError(f"{layer.name()} has no field {field!r}: choose the field holding the class names.")
    if layer.featureCount() == 0:
        raise DockError(f"{layer.name()} has no shapes yet: draw polygons of what you see, or choose no labels.")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "labels"
    options.attributes = [index]
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        raise DockError(f"{path}: cannot write the labelled shapes ({message})")
    return str(path)
