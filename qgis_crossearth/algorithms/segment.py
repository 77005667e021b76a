"""``crossearth:segment``: classify a whole raster with sliding windows, optionally with a saved adapter."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFile,
)

from backend.contract import SegmentJob
from qgis_crossearth.algorithms.base import CrossEarthAlgorithm, advanced
from qgis_crossearth.runner import BackendRun


class SegmentAlgorithm(CrossEarthAlgorithm):
    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:
        return "Segment raster"

    def shortHelpString(self) -> str:
        return (
            "Classifies every pixel of the input raster with the chosen model, tile by tile with "
            "overlapping sliding windows. Give an ADAPTER (from 'Adapt model to scene') to use a model "
            "adapted to this kind of scene. CONFIDENCE is the winning class's probability, ENTROPY the "
            "uncertainty over all classes."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.add_scene_parameters()
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
        self.add_tiling_parameters()
        self.add_segmentation_outputs()

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> SegmentJob:
        adapter = self.parameterAsFile(parameters, self.ADAPTER, context) or None
        return SegmentJob(
            self.read_scene(parameters, context, feedback),
            self.read_segmentation(parameters, context, adapter=adapter),
            cluster=self.read_cluster(parameters, context),
        )

    def results(
        self,
        job: SegmentJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        self.style_outputs_on_load(self.model_card(parameters, context), job.options, parameters, context)
        return {
            self.OUTPUT: job.options.output,
            self.CONFIDENCE: job.options.confidence,
            self.ENTROPY: job.options.entropy,
            **run.outputs,
        }
