"""``crossearth:vectorize``: polygons per connected region of a class raster, categorized in its colours."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from backend.contract import VectorizeJob
from qgis_crossearth.algorithms.analysis_base import AnalysisAlgorithm, categorized_by_class, style_on_load
from qgis_crossearth.runner import BackendRun


class VectorizeAlgorithm(AnalysisAlgorithm):
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    FEATURES = "FEATURES"

    def name(self) -> str:
        return "vectorize"

    def displayName(self) -> str:
        return "Class raster to polygons"

    def shortHelpString(self) -> str:
        return (
            "One polygon per connected region of a class raster (e.g. from 'Segment raster'), with its class "
            "value, name, area in m2 and, given the CONFIDENCE raster, its mean confidence. Regions smaller "
            "than MIN_AREA (m2) are merged into their largest neighbour first (GDAL's sieve); SIMPLIFY (m) "
            "simplifies each polygon. Nodata (and so anything outside the segmented region) is skipped. "
            "The areas of a class's polygons add up to the raster's area of that class."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.CONFIDENCE, "Confidence raster", optional=True))
        double = QgsProcessingParameterNumber.Double
        self.addParameter(
            QgsProcessingParameterNumber(self.MIN_AREA, "Minimum region area (m2)", double, 0.0, minValue=0.0)
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.SIMPLIFY, "Simplification tolerance (m)", double, 0.0, minValue=0.0)
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT, "Polygons", QgsProcessing.TypeVectorPolygon, defaultValue="TEMPORARY_OUTPUT"
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.FEATURES, "Number of polygons"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> VectorizeJob:
        confidence = None
        if self.parameterAsRasterLayer(parameters, self.CONFIDENCE, context) is not None:
            confidence = self.raster_path(parameters, self.CONFIDENCE, context)
        return VectorizeJob(
            self.raster_path(parameters, self.INPUT, context),
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            confidence=confidence,
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            simplify=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            overwrite=True,
        )

    def results(
        self,
        job: VectorizeJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        style_on_load(context, job.output, categorized_by_class(run.metrics.get("classes", [])))
        return {self.OUTPUT: job.output, self.FEATURES: run.metrics.get("features")}
