"""``crossearth:segment``: classify a whole raster with sliding windows, optionally with a saved adapter."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFile,
)

from qgis_crossearth.algorithms.base import CrossEarthAlgorithm, advanced
from qgis_crossearth.commands import segment_argv


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

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        scene = self.read_scene(parameters, context, feedback)
        segmentation = self.read_segmentation(parameters, context)
        adapter = self.parameterAsFile(parameters, self.ADAPTER, context)
        run = self.run_command(segment_argv(scene, segmentation, adapter), segmentation.outputs(), feedback)
        self.style_outputs_on_load(self.model_card(parameters, context), segmentation, context)
        return {
            self.OUTPUT: segmentation.output,
            self.CONFIDENCE: segmentation.confidence or None,
            self.ENTROPY: segmentation.entropy or None,
            **run.outputs,
        }
