"""What every CrossEarth algorithm shares: parameter groups, reading them into the job dataclasses
of :mod:`backend.contract`, and running the job with Processing's feedback.

The algorithms stay thin: they declare parameters, build one job (``build_job``, whose bad values
raise the backend's one-line BadInput, shown as the Processing error) and hand it to
:func:`qgis_crossearth.runner.run_backend`; ``results`` names what it wrote.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QThread
from qgis.PyQt.QtGui import QIcon

from backend.contract import (
    ADAPT_DEFAULTS,
    AUTO,
    DEFAULT_LABEL_BUFFER_M,
    DEFAULT_LABEL_FIELD,
    DEFAULT_MODEL,
    ENGINES,
    LOG,
    MODES,
    PRECISIONS,
    PROGRESS,
    AdaptOptions,
    Job,
    Scene,
    SegmentOptions,
    encode,
)
from backend.errors import BadInput
from qgis_crossearth import paths
from qgis_crossearth.model_cards import ModelCard
from qgis_crossearth.runner import BackendRun, Event, EventFn, run_backend
from qgis_crossearth.settings import backend_config, load_settings
from qgis_crossearth.styling import StyleOnLoad, style_class_layer, style_confidence_layer

MODE_LABELS = [
    "DA: domain adaptation (self-training; labelled shapes, if given, train with the loss)",
    "DG: domain generalisation (needs LABELS or LABEL_LAYER)",
]
VECTOR_FORMATS = ["gpkg", "shp", "geojson"]  # what the backend (OGR) reads without a copy
SEGMENT_DEFAULTS = SegmentOptions(output="")


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


class CrossEarthAlgorithm(QgsProcessingAlgorithm):
    """Base of the four algorithms; ``model_cards`` fill the MODEL choice."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    MODEL = "MODEL"
    ROI = "ROI"
    ROI_LAYER = "ROI_LAYER"
    RESOLUTION = "RESOLUTION"
    TILE_SIZE = "TILE_SIZE"
    STRIDE = "STRIDE"
    BATCH_SIZE = "BATCH_SIZE"
    MODE = "MODE"
    LABELS = "LABELS"
    LABEL_LAYER = "LABEL_LAYER"
    LABEL_FIELD = "LABEL_FIELD"
    LABEL_BUFFER = "LABEL_BUFFER"
    SAMPLES = "SAMPLES"
    STEPS = "STEPS"
    TOP_K = "TOP_K"
    RESELECT_EVERY = "RESELECT_EVERY"
    SEED = "SEED"
    SOURCE_SAMPLES = "SOURCE_SAMPLES"
    ENGINE = "ENGINE"
    PRECISION = "PRECISION"
    DEVICE = "DEVICE"
    CLUSTER = "CLUSTER"
    OUTPUT = "OUTPUT"
    CONFIDENCE = "CONFIDENCE"
    ENTROPY = "ENTROPY"
    ADAPTER = "ADAPTER"
    REPORT = "REPORT"
    REPORT_PLOT = "REPORT_PLOT"

    def __init__(self, model_cards: list[ModelCard]) -> None:
        super().__init__()
        self.model_cards = model_cards

    def createInstance(self) -> CrossEarthAlgorithm:
        return type(self)(self.model_cards)

    def icon(self) -> QIcon:
        return QIcon(paths.icon_path("crossearth.svg"))

    # --- parameter groups -------------------------------------------------------------------

    def add_scene_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(
            QgsProcessingParameterBand(
                self.BANDS,
                "Bands fed to the model, in order (empty: R,G,B or the first three)",
                None,
                self.INPUT,
                optional=True,
                allowMultiple=True,
            )
        )
        self.add_model_parameter()
        self.addParameter(
            QgsProcessingParameterExtent(self.ROI, "Region of interest (empty: whole raster)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.ROI_LAYER,
                "Region of interest polygons (pixels outside become nodata)",
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.RESOLUTION,
                "Pixel size to read the raster at: auto (the model's, when it states one), native, or metres",
                defaultValue=AUTO,
                optional=True,  # a model made before it existed stays valid
            )
        )

    def default_model_name(self) -> str | None:
        names = [card.name for card in self.model_cards]
        return DEFAULT_MODEL if DEFAULT_MODEL in names else (names[0] if names else None)

    def add_model_parameter(self) -> None:
        """Optional (empty: the default model), so that a model built in the modeler needs no value for it."""
        names = [card.name for card in self.model_cards]
        model = QgsProcessingParameterEnum(
            self.MODEL, "Model", options=names, defaultValue=self.default_model_name(), optional=True
        )
        model.setUsesStaticStrings(True)
        self.addParameter(model)

    def add_adaptation_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Adaptation mode", MODE_LABELS, defaultValue=0))
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.LABELS,
                "Label raster (class indices aligned with the input, 255 = ignore; for DG)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.LABEL_LAYER,
                "Labelled shapes (polygons, points or lines with a class field; any CRS)",
                [QgsProcessing.TypeVectorAnyGeometry],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.LABEL_FIELD,
                "Class field of the labelled shapes (class names or values)",
                DEFAULT_LABEL_FIELD,
                parentLayerParameterName=self.LABEL_LAYER,
                optional=True,
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.LABEL_BUFFER,
                    "Labelled points and lines: width on each side (m)",
                    QgsProcessingParameterNumber.Double,
                    DEFAULT_LABEL_BUFFER_M,
                    optional=True,  # a model made before it existed stays valid
                    minValue=0.01,
                )
            )
        )
        integer = QgsProcessingParameterNumber.Integer
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SAMPLES, "Adaptation tiles", integer, ADAPT_DEFAULTS["samples"], minValue=1
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.STEPS, "Adaptation steps", integer, ADAPT_DEFAULTS["steps"], minValue=1)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TOP_K,
                "Modules to adapt (count, or fraction < 1 of all)",
                QgsProcessingParameterNumber.Double,
                ADAPT_DEFAULTS["top_k"],
                minValue=0.001,
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.RESELECT_EVERY,
                    "Re-select modules every N steps (empty: the mode's default)",
                    integer,
                    None,
                    optional=True,
                    minValue=1,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(self.SEED, "Random seed", integer, ADAPT_DEFAULTS["seed"], minValue=0)
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterBoolean(
                    self.SOURCE_SAMPLES,
                    "DA: mix in labelled crops of the model's training tiles (if it ships them)",
                    ADAPT_DEFAULTS["source_samples"],
                )
            )
        )

    def add_tiling_parameters(self) -> None:
        integer = QgsProcessingParameterNumber.Integer
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.TILE_SIZE,
                    "Tile size in pixels (empty: the model's)",
                    integer,
                    None,
                    optional=True,
                    minValue=16,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.STRIDE, "Stride in pixels (empty: the model's)", integer, None, optional=True, minValue=1
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.BATCH_SIZE, "Tiles per batch", integer, SEGMENT_DEFAULTS.batch_size, minValue=1
                )
            )
        )
        engine = QgsProcessingParameterEnum(
            self.ENGINE, "Inference engine (auto: onnx, torch for small scenes)", list(ENGINES), defaultValue="auto"
        )
        engine.setUsesStaticStrings(True)
        self.addParameter(advanced(engine))
        precision = QgsProcessingParameterEnum(
            self.PRECISION,
            "Precision (auto: int8 on onnx, fp32 on torch)",
            list(PRECISIONS),
            defaultValue="auto",
            optional=True,  # a model made before it existed stays valid
        )
        precision.setUsesStaticStrings(True)
        self.addParameter(advanced(precision))
        self.addParameter(
            advanced(
                QgsProcessingParameterString(
                    self.DEVICE,
                    "Device (auto, cpu, cuda or cuda:N; empty: the plugin's Device setting)",
                    defaultValue="",
                    optional=True,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterString(
                    self.CLUSTER,
                    "Dask cluster (local, local:N or scheduler address; empty: this machine)",
                    defaultValue="",
                    optional=True,
                )
            )
        )

    def add_segmentation_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Classes"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.CONFIDENCE, "Confidence", optional=True, createByDefault=False)
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.ENTROPY, "Entropy", optional=True, createByDefault=False)
        )

    # --- reading parameters -----------------------------------------------------------------

    def model_card(self, parameters: dict[str, Any], context: QgsProcessingContext) -> ModelCard:
        name = self.parameterAsEnumString(parameters, self.MODEL, context) or self.default_model_name()
        card = next((card for card in self.model_cards if card.name == name), None)
        if card is None:
            folder = load_settings().effective_model_folder
            raise QgsProcessingException(
                f"no model {name!r} in {folder}: set the model folder in Settings > Options > CrossEarth"
            )
        return card

    def read_scene(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> Scene:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(f"{parameters.get(self.INPUT)}: not a raster layer QGIS can read")
        bbox, bbox_crs, roi = None, None, None
        extent = self.parameterAsExtent(parameters, self.ROI, context)
        if not extent.isNull():
            crs = self.parameterAsExtentCrs(parameters, self.ROI, context)
            bbox = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            bbox_crs = crs_string(crs) if crs.isValid() else None
        if self.parameterAsSource(parameters, self.ROI_LAYER, context) is not None:
            roi = self.parameterAsCompatibleSourceLayerPath(
                parameters, self.ROI_LAYER, context, ["gpkg", "shp", "geojson"], "gpkg", feedback
            )
        return Scene(
            input=layer.source(),
            model=str(self.model_card(parameters, context).folder),
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            bbox=bbox,
            bbox_crs=bbox_crs,
            roi=roi,
            threads=load_settings().threads,
            resolution=self.parameterAsString(parameters, self.RESOLUTION, context),
        )

    def read_labels(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback | None
    ) -> str | None:
        """The label raster's path, or the labelled shapes' file (a memory or non-file layer is written to a
        temporary GeoPackage first); never both."""
        raster = self.parameterAsRasterLayer(parameters, self.LABELS, context)
        shapes = None
        if parameters.get(self.LABEL_LAYER) not in (None, "") and self.parameterAsSource(
            parameters, self.LABEL_LAYER, context
        ):
            shapes = self.parameterAsCompatibleSourceLayerPath(
                parameters, self.LABEL_LAYER, context, VECTOR_FORMATS, "gpkg", feedback
            )
        if raster is not None and shapes:
            raise BadInput("give either a label raster (LABELS) or labelled shapes (LABEL_LAYER), not both")
        return raster.source() if raster is not None else shapes

    def read_adaptation(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback | None = None,
        **paths: str,
    ) -> AdaptOptions:
        """``paths``: adapter_out, report_out. Outputs are replaced: QGIS has asked the user already."""
        label_field = (self.parameterAsFields(parameters, self.LABEL_FIELD, context) or [DEFAULT_LABEL_FIELD])[0]
        return AdaptOptions(
            mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
            labels=self.read_labels(parameters, context, feedback),
            label_field=label_field or DEFAULT_LABEL_FIELD,
            label_buffer=self.parameterAsDouble(parameters, self.LABEL_BUFFER, context) or DEFAULT_LABEL_BUFFER_M,
            samples=self.parameterAsInt(parameters, self.SAMPLES, context),
            steps=self.parameterAsInt(parameters, self.STEPS, context),
            top_k=self.parameterAsDouble(parameters, self.TOP_K, context),
            reselect_every=self.optional_int(parameters, self.RESELECT_EVERY, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            source_samples=self.parameterAsBoolean(parameters, self.SOURCE_SAMPLES, context),
            overwrite=True,
            **paths,
        )

    def read_segmentation(
        self, parameters: dict[str, Any], context: QgsProcessingContext, **more: Any
    ) -> SegmentOptions:
        """``more``: further SegmentOptions fields (the adapter)."""
        return SegmentOptions(
            output=self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            tile_size=self.optional_int(parameters, self.TILE_SIZE, context),
            stride=self.optional_int(parameters, self.STRIDE, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            confidence=self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or None,
            entropy=self.parameterAsOutputLayer(parameters, self.ENTROPY, context) or None,
            engine=self.parameterAsEnumString(parameters, self.ENGINE, context) or "auto",
            precision=self.parameterAsEnumString(parameters, self.PRECISION, context) or "auto",
            device=self.parameterAsString(parameters, self.DEVICE, context).strip() or load_settings().device,
            overwrite=True,
            **more,
        )

    def read_cluster(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str | None:
        return self.parameterAsString(parameters, self.CLUSTER, context).strip() or None

    def optional_int(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> int | None:
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsInt(parameters, name, context)

    def optional_file_output(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        return self.parameterAsFileOutput(parameters, name, context) or ""

    # --- running ----------------------------------------------------------------------------

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> Job:
        """The backend job this algorithm's parameters ask for (each algorithm builds its own)."""
        raise NotImplementedError

    def results(
        self,
        job: Job,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """The algorithm's outputs from a finished run (each algorithm names and loads its own)."""
        raise NotImplementedError

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        try:
            job = self.build_job(parameters, context, feedback)
        except BadInput as error:  # a value the backend would refuse: its one line, before anything runs
            raise QgsProcessingException(str(error)) from None
        run = self.run_job(job, feedback)
        results = self.results(job, run, parameters, context, feedback)
        forget_unasked_outputs(context)
        return results

    def run_job(self, job: Job, feedback: QgsProcessingFeedback) -> BackendRun:
        """Run the backend; progress and log lines go to ``feedback``; failures raise."""
        settings = load_settings()
        feedback.pushDebugInfo("crossearth " + " ".join(encode(job)))

        def on_event(event: Event) -> None:
            kind = event.get("type")
            message = str(event.get("message", ""))
            if kind == PROGRESS:
                feedback.setProgress(100.0 * float(event.get("fraction", 0.0)))
                if message:
                    feedback.setProgressText(message)
            elif kind == LOG:
                level = event.get("level", "info")
                if level == "warning":
                    feedback.pushWarning(message)
                elif level == "debug":
                    feedback.pushDebugInfo(message)
                else:
                    feedback.pushInfo(message)

        config = backend_config(settings)
        if QThread.currentThread() == QCoreApplication.instance().thread():
            run = run_keeping_qgis_responsive(
                lambda events: run_backend(job, config, events, feedback.isCanceled), on_event
            )
        else:  # a Processing task's thread: QGIS is free already
            run = run_backend(job, config, on_event, feedback.isCanceled)
        if run.cancelled:
            raise QgsProcessingException("cancelled: no output was written")
        if not run.ok:
            raise QgsProcessingException(run.error)
        return run

    def style_outputs_on_load(
        self,
        card: ModelCard,
        segmentation: SegmentOptions,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
    ) -> None:
        """When QGIS loads the results, draw them in the model's class colours and a confidence ramp, and name
        them after the scene ("scene classes"), not all "Classes" (a file name the user chose still wins)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        scene = layer.name() if layer is not None else ""
        for path, style, kind in (
            (segmentation.output, lambda layer: style_class_layer(layer, card), "classes"),
            (segmentation.confidence, style_confidence_layer, "confidence"),
            (segmentation.entropy, None, "entropy"),
        ):
            if path and context.willLoadLayerOnCompletion(path):
                details = context.layerToLoadOnCompletionDetails(path)
                if scene:
                    details.name = f"{scene} {kind}"
                if style is not None:
                    details.setPostProcessor(StyleOnLoad(style))


def forget_unasked_outputs(context: QgsProcessingContext) -> None:
    """An optional output left empty (the batch table passes it as an empty path) is registered to load as "":
    QGIS would then report it after every row as a layer "not correctly generated"."""
    layers = context.layersToLoadOnCompletion()
    if "" in layers:
        context.setLayersToLoadOnCompletion({path: details for path, details in layers.items() if path})


def run_keeping_qgis_responsive(run: Callable[[EventFn], BackendRun], on_event: EventFn) -> BackendRun:
    """Run the backend in a worker thread while this (QGIS's main) thread keeps handling events and delivers
    the backend's events to ``on_event``: QGIS 3.22 runs batch rows and models on the main thread."""
    events: queue.Queue[Event] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["run"] = run(events.put)
        except BaseException as error:  # re-raised below, in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=work, name="crossearth-backend", daemon=True)
    worker.start()
    while True:
        alive = worker.is_alive()
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        while not events.empty():
            on_event(events.get_nowait())
        if not alive:
            break
        worker.join(0.02)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["run"]


def crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """An authority id when there is one (rasterio reads it), else WKT."""
    return crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
