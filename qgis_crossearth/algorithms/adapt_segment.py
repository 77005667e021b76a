"""``crossearth:adaptandsegment``: adapt to the scene, then segment it, in one backend run."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterFileDestination,
)

from qgis_crossearth.algorithms.base import CrossEarthAlgorithm
from qgis_crossearth.commands import adapt_segment_argv


class AdaptAndSegmentAlgorithm(CrossEarthAlgorithm):
    def name(self) -> str:
        return "adaptandsegment"

    def displayName(self) -> str:
        return "Adapt to scene and segment"

    def shortHelpString(self) -> str:
        return (
            "Adapts the model to the input scene (Fisher-gated LoRA / Adapter / Earth-Adapter modules), "
            "then segments the whole raster with the adapted model. Without ADAPTER and REPORT paths, "
            "the adapter and the selection report are written beside OUTPUT."
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

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        scene = self.read_scene(parameters, context, feedback)
        adaptation = self.read_adaptation(parameters, context)
        adaptation.adapter_out = self.optional_file_output(parameters, self.ADAPTER, context)
        adaptation.report_out = self.optional_file_output(parameters, self.REPORT, context)
        segmentation = self.read_segmentation(parameters, context)
        run = self.run_command(
            adapt_segment_argv(scene, adaptation, segmentation),
            [*segmentation.outputs(), *adaptation.outputs()],
            feedback,
        )
        self.style_outputs_on_load(self.model_card(parameters, context), segmentation, context)
        return {
            self.OUTPUT: segmentation.output,
            self.CONFIDENCE: segmentation.confidence or None,
            self.ENTROPY: segmentation.entropy or None,
            self.ADAPTER: adaptation.adapter_out or None,
            self.REPORT: adaptation.report_out or None,
            **run.outputs,
        }
