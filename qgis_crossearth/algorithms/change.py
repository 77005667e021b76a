"""``crossearth:change``: from-to classes between two class rasters and the transition matrix."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from backend.contract import ChangeJob
from qgis_crossearth.algorithms.analysis_base import AnalysisAlgorithm, load_table, paletted_by_class, style_on_load
from qgis_crossearth.runner import BackendRun


class ChangeAlgorithm(AnalysisAlgorithm):
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    ONLY_CHANGES = "ONLY_CHANGES"
    MATRIX = "MATRIX"
    CHANGED_M2 = "CHANGED_M2"
    CHANGED_PERCENT = "CHANGED_PERCENT"

    def name(self) -> str:
        return "change"

    def displayName(self) -> str:
        return "Change between two class rasters"

    def shortHelpString(self) -> str:
        return (
            "Compares the class rasters of two dates. AFTER is read on BEFORE's grid (resampled by mode, with "
            "a warning, when the grids differ). Writes a from-to class raster ('Vegetation -> Building') with "
            "its colours and names, and the transition matrix in m2 and percent (CSV, loaded as a table; JSON "
            "beside it). ONLY_CHANGES leaves unchanged pixels as nodata."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.BEFORE, "Class raster, first date"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.AFTER, "Class raster, second date"))
        self.addParameter(QgsProcessingParameterBoolean(self.ONLY_CHANGES, "Only changed pixels", False))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "From-to classes"))
        self.addParameter(QgsProcessingParameterFileDestination(self.MATRIX, "Transition matrix", "CSV (*.csv)"))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_M2, "Changed area (m2)"))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_PERCENT, "Changed area (%)"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> ChangeJob:
        return ChangeJob(
            self.raster_path(parameters, self.BEFORE, context),
            self.raster_path(parameters, self.AFTER, context),
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            matrix=self.parameterAsFileOutput(parameters, self.MATRIX, context),
            only_changes=self.parameterAsBoolean(parameters, self.ONLY_CHANGES, context),
            overwrite=True,
        )

    def results(
        self,
        job: ChangeJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        style_on_load(context, job.output, paletted_by_class(run.metrics.get("classes", [])))
        load_table(context, job.matrix, "Transition matrix", self.MATRIX)
        return {
            self.OUTPUT: job.output,
            self.MATRIX: job.matrix,
            self.CHANGED_M2: run.metrics.get("changed_m2"),
            self.CHANGED_PERCENT: run.metrics.get("changed_percent"),
        }
