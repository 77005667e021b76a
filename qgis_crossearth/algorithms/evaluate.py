"""``crossearth:evaluate``: compare a class raster with reference labels (per-class IoU, mIoU, accuracy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from qgis_crossearth.algorithms.base import CrossEarthAlgorithm
from qgis_crossearth.commands import evaluate_argv


class EvaluateAlgorithm(CrossEarthAlgorithm):
    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return "Evaluate segmentation"

    def shortHelpString(self) -> str:
        return (
            "Compares a class raster (INPUT, e.g. the output of 'Segment raster') with a reference "
            "class-index raster (LABELS, 255 = ignore) of the same grid and writes the metrics as JSON."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Prediction (class raster)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, "Reference labels"))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Metrics", "JSON (*.json)"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        prediction = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        labels = self.parameterAsRasterLayer(parameters, self.LABELS, context)
        if prediction is None or labels is None:
            raise QgsProcessingException("INPUT and LABELS must be raster layers QGIS can read")
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        self.run(evaluate_argv(prediction.source(), labels.source(), output), [output], feedback)
        metrics = json.loads(Path(output).read_text(encoding="utf-8"))
        feedback.pushInfo(json.dumps(metrics, indent=1))
        return {self.OUTPUT: output}
