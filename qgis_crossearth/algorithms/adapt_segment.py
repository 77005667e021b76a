"""``crossearth:adaptandsegment``: adapt to the scene, then segment it, in one backend run."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterFileDestination,
)

from backend.contract import AdaptSegmentJob
from qgis_crossearth.algorithms.base import CrossEarthAlgorithm
from qgis_crossearth.runner import BackendRun


class AdaptAndSegmentAlgorithm(CrossEarthAlgorithm):
    def name(self) -> str:
        return "adaptandsegment"

    def displayName(self) -> str:
        return "Adapt to scene and segment"

    def shortHelpString(self) -> str:
        return (
            "Adapts the model to the input scene (Fisher-gated LoRA / Adapter / Earth-Adapter modules), "
            "then segments the whole raster with the adapted model. Without ADAPTER and REPORT paths, "
            "the adapter and the selection report are written beside OUTPUT. LABEL_LAYER: your labelled "
            "polygons (points and lines become LABEL_BUFFER metres wide; any CRS), classes in LABEL_FIELD; "
            "they train with the loss in DA and DG, and a third of each class's shapes is held out to check "
            "the adapted model against the unadapted one. LABELS: a class raster, for DG."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_scene_parameters()
        self.add_adaptation_parameters()
        self.add_tiling_parameters()
        self.add_segmentation_outputs()
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.ADAPTER, "Adapter", "Safetensors (*.safetensors)", optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.REPORT, "Selection report", "JSON (*.json)", optional=True, createByDefault=False
            )
        )
        self.addOutput(QgsProcessingOutputFile(self.REPORT_PLOT, "Selection heatmap"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> AdaptSegmentJob:
        adapter_out = self.optional_file_output(parameters, self.ADAPTER, context)
        report_out = self.optional_file_output(parameters, self.REPORT, context)
        return AdaptSegmentJob(
            self.read_scene(parameters, context, feedback),
            self.read_adaptation(parameters, context, feedback, adapter_out=adapter_out, report_out=report_out),
            self.read_segmentation(parameters, context),
            cluster=self.read_cluster(parameters, context),
        )

    def results(
        self,
        job: AdaptSegmentJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        self.style_outputs_on_load(self.model_card(parameters, context), job.segment, parameters, context)
        return {
            self.OUTPUT: job.segment.output,
            self.CONFIDENCE: job.segment.confidence,
            self.ENTROPY: job.segment.entropy,
            self.ADAPTER: job.adapt.adapter_out,
            self.REPORT: job.adapt.report_out,
            **run.outputs,
        }
