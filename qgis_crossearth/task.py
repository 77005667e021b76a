"""The dock's background runs: a QgsTask around one backend job (adapt-and-segment, or suggest-labels).

``run()`` (worker thread) only runs the backend and turns every outcome into a :class:`TaskResult`;
``finished()`` (main thread) loads and styles the result layers (class and confidence rasters in a group,
or the boxes to label), then emits ``completed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsLayerTreeGroup,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import pyqtSignal

from backend.contract import LOG, PROGRESS, AdaptSegmentJob, SuggestLabelsJob
from qgis_crossearth.model_cards import ModelCard
from qgis_crossearth.runner import BackendConfig, BackendRun, Event, run_backend
from qgis_crossearth.styling import style_class_layer, style_confidence_layer, style_spots_layer

SUCCESS, FAILED, CANCELLED = "success", "failed", "cancelled"


@dataclass
class RunRequest:
    """Everything a run needs, built by the dock in the main thread."""

    title: str
    job: AdaptSegmentJob | SuggestLabelsJob
    card: ModelCard
    description: str = ""

    @property
    def suggests(self) -> bool:
        """A suggest-labels run: its result is a layer of boxes to label, not a map."""
        return isinstance(self.job, SuggestLabelsJob)

    @property
    def classes(self) -> str:
        return "" if self.suggests else self.job.segment.output

    @property
    def confidence(self) -> str:
        return "" if self.suggests else (self.job.segment.confidence or "")


@dataclass
class TaskResult:
    status: str
    error: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    group: str = ""
    metrics: dict = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: BackendRun) -> TaskResult:
        if run.ok:
            return cls(SUCCESS, outputs=run.outputs, metrics=run.metrics)
        return cls(CANCELLED if run.cancelled else FAILED, error=run.error)

    @property
    def report_plot(self) -> str:
        return self.outputs.get("REPORT_PLOT", "")

    @property
    def estimate(self) -> dict | None:
        """The self-check's scores on held-out labelled polygons, when the user gave some."""
        return self.metrics.get("self_check", {}).get("estimate")

    @property
    def kept_unadapted(self) -> bool:
        """The backend's self-check found that adaptation did not help and segmented with the unadapted model."""
        return self.metrics.get("self_check", {}).get("kept") == "unadapted"


class AdaptSegmentTask(QgsTask):
    progress_text = pyqtSignal(str)
    log_line = pyqtSignal(str, str)
    completed = pyqtSignal(object)

    def __init__(self, request: RunRequest, config: BackendConfig, project: QgsProject | None = None) -> None:
        what = "suggest where to label in" if request.suggests else "adapt and segment"
        super().__init__(f"CrossEarth: {what} {request.title}", QgsTask.CanCancel)
        self.request = request
        self.config = config
        self.project = project or QgsProject.instance()
        self.result = TaskResult(FAILED, error="the task did not run")

    def run(self) -> bool:
        try:
            run = run_backend(self.request.job, self.config, self.on_event, self.isCanceled)
            self.result = TaskResult.from_run(run)
        except Exception as error:  # everything becomes a result; QGIS must not see an exception here
            self.result = TaskResult(FAILED, error=f"{type(error).__name__}: {error}")
        if self.result.status == CANCELLED or (self.isCanceled() and self.result.status != SUCCESS):
            # A user's cancel is no failure: a task that returns False is announced as "Task failed".
            self.result = TaskResult(CANCELLED, error="cancelled")
            self.setDescription(f"CrossEarth: {self.request.title} cancelled, nothing was written")
            return True
        return self.result.status == SUCCESS

    def on_event(self, event: Event) -> None:
        kind = event.get("type")
        if kind == PROGRESS:
            self.setProgress(100.0 * float(event.get("fraction", 0.0)))
            self.progress_text.emit(str(event.get("message", "")))
        elif kind == LOG:
            self.log_line.emit(str(event.get("level", "info")), str(event.get("message", "")))

    def finished(self, ok: bool) -> None:
        if self.isCanceled() and self.result.status != SUCCESS:
            self.result = TaskResult(CANCELLED, error="cancelled")
        if self.result.status == SUCCESS:
            try:
                load = load_spots if self.request.suggests else load_results
                self.result.group, self.result.layers = load(self.request, self.result, self.project)
            except Exception as error:
                self.result = TaskResult(
                    FAILED, error=f"loading the results failed: {error}", outputs=self.result.outputs
                )
        self.completed.emit(self.result)


def group_name(title: str) -> str:
    """The results' group: named for what it holds, not like the source layer it sits beside."""
    return f"CrossEarth: {title} (adapted)"


def load_results(request: RunRequest, result: TaskResult, project: QgsProject) -> tuple[str, list[str]]:
    """Classes and confidence layers, styled, in a group at the top of the tree, open; the confidence layer
    starts hidden under the classes. The group is filled before it enters the tree: a layer tree view then
    shows it open (it ignores the expansion of a group that is empty when it arrives)."""
    group = QgsLayerTreeGroup(group_name(request.title))
    layer_ids = []
    for key, path, name, style in (
        ("CONFIDENCE", request.confidence, "confidence", style_confidence_layer),
        ("OUTPUT", request.classes, "classes", lambda layer: style_class_layer(layer, request.card)),
    ):
        source = result.outputs.get(key, path)
        if not source or not Path(source).is_file():
            continue
        layer = QgsRasterLayer(source, f"{request.title} {name}", "gdal")
        if not layer.isValid():
            raise RuntimeError(f"{source}: QGIS cannot open the result")
        style(layer)
        project.addMapLayer(layer, False)
        group.insertLayer(0, layer).setItemVisibilityChecked(key == "OUTPUT")
        layer_ids.append(layer.id())
    group.setExpanded(True)
    for node in group.findLayers():  # the class legend (names and colours) open, the ramp closed
        node.setExpanded(node.layerId() == layer_ids[-1])
    project.layerTreeRoot().insertChildNode(0, group)
    return group.name(), layer_ids


def spots_name(title: str) -> str:
    return f"{title} places to label"


def load_spots(request: RunRequest, result: TaskResult, project: QgsProject) -> tuple[str, list[str]]:
    """The boxes to label, outlined and labelled with rank and class, on top of the layer tree."""
    source = result.outputs.get("OUTPUT", request.job.output)
    layer = QgsVectorLayer(source, spots_name(request.title), "ogr")
    if not layer.isValid():
        raise RuntimeError(f"{source}: QGIS cannot open the result")
    style_spots_layer(layer)
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
    return "", [layer.id()]
