"""``crossearth:evaluate``: compare a class raster with reference labels (per-class IoU, mIoU, accuracy)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from backend.contract import EvaluateJob
from qgis_crossearth.algorithms.base import CrossEarthAlgorithm
from qgis_crossearth.runner import BackendRun


class EvaluateAlgorithm(CrossEarthAlgorithm):
    MIOU = "MIOU"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return "Evaluate segmentation"

    def shortHelpString(self) -> str:
        return (
            "Compares a class raster (INPUT, e.g. the output of 'Segment raster') with a reference "
            "class-index raster (LABELS, 255 = ignore) of the same grid: per-class IoU (classes named by "
            "MODEL), mean IoU and overall accuracy, written as JSON."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Prediction (class raster)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, "Reference labels"))
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Metrics", "JSON (*.json)"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Mean IoU"))
        self.addOutput(QgsProcessingOutputNumber(self.OVERALL_ACCURACY, "Overall accuracy"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> EvaluateJob:
        prediction = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        labels = self.parameterAsRasterLayer(parameters, self.LABELS, context)
        if prediction is None or labels is None:
            raise QgsProcessingException("INPUT and LABELS must be raster layers QGIS can read")
        return EvaluateJob(
            prediction.source(),
            labels.source(),
            model=str(self.model_card(parameters, context).folder),  # it names the classes of the scores
            json_out=self.parameterAsFileOutput(parameters, self.OUTPUT, context),
            overwrite=True,
        )

    def results(
        self,
        job: EvaluateJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        for name, iou in run.metrics.get("iou", {}).items():
            feedback.pushInfo(f"IoU {name}: {'-' if iou is None else f'{100 * iou:.1f} %'}")
        return {
            self.OUTPUT: job.json_out,
            self.MIOU: run.metrics.get("miou"),
            self.OVERALL_ACCURACY: run.metrics.get("overall_accuracy"),
        }
