"""``crossearth:adapt``: fit Fisher-selected adapter modules to one scene and save them."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterFileDestination,
)

from backend.contract import AdaptJob
from qgis_crossearth.algorithms.base import CrossEarthAlgorithm
from qgis_crossearth.runner import BackendRun


class AdaptAlgorithm(CrossEarthAlgorithm):
    def name(self) -> str:
        return "adapt"

    def displayName(self) -> str:
        return "Adapt model to scene"

    def shortHelpString(self) -> str:
        return (
            "Adapts the frozen model to the input scene (CrossEarth-Gate): scores every LoRA, Adapter and "
            "Earth-Adapter module by its Fisher information on tiles sampled from the scene, trains the "
            "TOP_K best and saves them as ADAPTER for 'Segment raster'. DA needs no labels; DG trains on "
            "LABELS (a class raster) or LABEL_LAYER. LABEL_LAYER: your labelled polygons (points and lines "
            "become LABEL_BUFFER metres wide; any CRS), classes in LABEL_FIELD; in DA its pixels train with "
            "the loss and the rest self-trains, and a third of each class's shapes is held out to check "
            "that the adapted model is better (the verdict is in the log). REPORT records which modules "
            "were selected."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_scene_parameters()
        self.add_adaptation_parameters()
        self.addParameter(QgsProcessingParameterFileDestination(self.ADAPTER, "Adapter", "Safetensors (*.safetensors)"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.REPORT, "Selection report", "JSON (*.json)", optional=True, createByDefault=False
            )
        )
        self.addOutput(QgsProcessingOutputFile(self.REPORT_PLOT, "Selection heatmap"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> AdaptJob:
        adapter_out = self.parameterAsFileOutput(parameters, self.ADAPTER, context)
        report_out = self.optional_file_output(parameters, self.REPORT, context)
        return AdaptJob(
            self.read_scene(parameters, context, feedback),
            self.read_adaptation(parameters, context, feedback, adapter_out=adapter_out, report_out=report_out),
        )

    def results(
        self,
        job: AdaptJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        return {self.ADAPTER: job.options.adapter_out, self.REPORT: job.options.report_out, **run.outputs}
