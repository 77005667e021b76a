"""``crossearth:suggestlabels``: boxes where the model is least sure, the places to label next."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorDestination,
)

from backend.contract import DEFAULT_SPOT_PIXELS, DEFAULT_SUGGESTED_SPOTS, SuggestLabelsJob
from qgis_crossearth.algorithms.analysis_base import style_on_load
from qgis_crossearth.algorithms.base import CrossEarthAlgorithm, advanced
from qgis_crossearth.runner import BackendRun
from qgis_crossearth.styling import style_spots_layer


class SuggestLabelsAlgorithm(CrossEarthAlgorithm):
    COUNT = "COUNT"
    BOX = "BOX"
    SPOTS = "SPOTS"

    def name(self) -> str:
        return "suggestlabels"

    def displayName(self) -> str:
        return "Suggest where to label"

    def shortHelpString(self) -> str:
        return (
            "Segments the scene and proposes COUNT boxes of BOX x BOX pixels where the model is least sure, "
            "most uncertain first (rank 1), spread over the scene and going round the predicted classes so "
            "that a rare class gets its share. Each box has its rank, predicted class and uncertainty "
            "(1 - mean confidence). Draw polygons of what you see in a few of them and give them to 'Adapt "
            "model to scene' (LABEL_LAYER). With an ADAPTER, the adapted model is asked instead."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_scene_parameters()
        integer = QgsProcessingParameterNumber.Integer
        self.addParameter(
            QgsProcessingParameterNumber(self.COUNT, "Number of places", integer, DEFAULT_SUGGESTED_SPOTS, minValue=1)
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.BOX, "Box side (pixels)", integer, DEFAULT_SPOT_PIXELS, minValue=4)
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterFile(
                    self.ADAPTER,
                    "Adapter (.safetensors from 'Adapt model to scene')",
                    extension="safetensors",
                    optional=True,
                )
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT, "Places to label", QgsProcessing.TypeVectorPolygon, defaultValue="TEMPORARY_OUTPUT"
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.SPOTS, "Number of boxes"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> SuggestLabelsJob:
        return SuggestLabelsJob(
            self.read_scene(parameters, context, feedback),
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            count=self.parameterAsInt(parameters, self.COUNT, context),
            box=self.parameterAsInt(parameters, self.BOX, context),
            adapter=self.parameterAsFile(parameters, self.ADAPTER, context) or None,
            overwrite=True,
        )

    def results(
        self,
        job: SuggestLabelsJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        style_on_load(context, job.output, style_spots_layer)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is not None and context.willLoadLayerOnCompletion(job.output):
            context.layerToLoadOnCompletionDetails(job.output).name = f"{layer.name()} places to label"
        return {self.OUTPUT: job.output, self.SPOTS: run.metrics.get("spots")}
