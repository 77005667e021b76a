"""``crossearth:samplepoints``: random (or stratified random) points to label for an accuracy assessment."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from backend.contract import SamplePointsJob
from qgis_crossearth.algorithms.analysis_base import AnalysisAlgorithm
from qgis_crossearth.runner import BackendRun


class SamplePointsAlgorithm(AnalysisAlgorithm):
    COUNT = "COUNT"
    STRATIFIED = "STRATIFIED"

    def name(self) -> str:
        return "samplepoints"

    def displayName(self) -> str:
        return "Sample points for accuracy"

    def shortHelpString(self) -> str:
        return (
            "Draws COUNT random points at pixel centres of a class raster, with the map's class (map_class, "
            "map_name) and an empty 'class' field for you to fill in with what you see. STRATIFIED splits "
            "COUNT equally between the map classes and records their mapped areas, so that 'Accuracy "
            "assessment' can give area-weighted estimates with confidence intervals."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster"))
        integer = QgsProcessingParameterNumber.Integer
        self.addParameter(QgsProcessingParameterNumber(self.COUNT, "Number of points", integer, 100, minValue=1))
        self.addParameter(QgsProcessingParameterBoolean(self.STRATIFIED, "Stratified by map class", True))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Random seed", integer, 0, minValue=0))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT, "Sample points", QgsProcessing.TypeVectorPoint, defaultValue="TEMPORARY_OUTPUT"
            )
        )

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> SamplePointsJob:
        return SamplePointsJob(
            self.raster_path(parameters, self.INPUT, context),
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            self.parameterAsInt(parameters, self.COUNT, context),
            stratified=self.parameterAsBoolean(parameters, self.STRATIFIED, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            overwrite=True,
        )

    def results(
        self,
        job: SamplePointsJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        return {self.OUTPUT: job.output}
