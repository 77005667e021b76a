"""``crossearth:adapt``: fit Fisher-selected adapter modules to one scene and save them."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterFileDestination,
)

from qgis_crossearth.algorithms.base import CrossEarthAlgorithm
from qgis_crossearth.commands import adapt_argv


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
            "LABELS. REPORT records which modules were selected."
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

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        scene = self.read_scene(parameters, context, feedback)
        adaptation = self.read_adaptation(parameters, context)
        adaptation.adapter_out = self.parameterAsFileOutput(parameters, self.ADAPTER, context)
        adaptation.report_out = self.optional_file_output(parameters, self.REPORT, context)
        run = self.run_command(adapt_argv(scene, adaptation), adaptation.outputs(), feedback)
        return {self.ADAPTER: adaptation.adapter_out, self.REPORT: adaptation.report_out or None, **run.outputs}
