"""``crossearth:classareas``: pixels, m2, ha and percentage of each class per zone, as a table and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputHtml,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from backend.contract import AreasJob
from qgis_crossearth.algorithms.analysis_base import AnalysisAlgorithm, load_table, write_html
from qgis_crossearth.runner import BackendRun


class ClassAreasAlgorithm(AnalysisAlgorithm):
    ZONES = "ZONES"
    ZONE_FIELD = "ZONE_FIELD"
    JSON = "JSON"
    CHART = "CHART"
    REPORT_HTML = "REPORT_HTML"

    def name(self) -> str:
        return "classareas"

    def displayName(self) -> str:
        return "Class areas"

    def shortHelpString(self) -> str:
        return (
            "Pixels, m2, ha and percentage of each class (and of nodata) of a class raster, for the whole "
            "raster or per polygon of ZONES (any CRS; a pixel counts in a zone when its centre lies inside), "
            "named by ZONE_FIELD. Writes a CSV table (loaded as a table layer), the same as JSON, and a bar "
            "chart shown in the results viewer."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster"))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.ZONES, "Zones (empty: the whole raster)", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.ZONE_FIELD, "Field naming the zones", parentLayerParameterName=self.ZONES, optional=True
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Class areas table", "CSV (*.csv)"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.JSON, "Class areas JSON", "JSON (*.json)", optional=True, createByDefault=False
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.CHART, "Chart", "PNG (*.png)"))
        self.addOutput(QgsProcessingOutputHtml(self.REPORT_HTML, "Class areas chart"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> AreasJob:
        zones, zone_field = None, None
        if self.parameterAsSource(parameters, self.ZONES, context) is not None:
            zones = self.vector_path(parameters, self.ZONES, context, feedback)
            zone_field = self.parameterAsString(parameters, self.ZONE_FIELD, context) or None
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        return AreasJob(
            self.raster_path(parameters, self.INPUT, context),
            output,
            zones=zones,
            zone_field=zone_field,
            json_out=self.optional_file_output(parameters, self.JSON, context) or None,
            chart=self.parameterAsFileOutput(parameters, self.CHART, context),
            overwrite=True,
        )

    def results(
        self,
        job: AreasJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        load_table(context, job.output, "Class areas", self.OUTPUT)
        rows = [(name, f"{ha:,.2f} ha") for name, ha in run.metrics.get("area_ha", {}).items()]
        page = write_html(str(Path(job.chart).with_suffix(".html")), "Class areas", [job.chart], rows)
        return {self.OUTPUT: job.output, self.JSON: job.json_out, self.CHART: job.chart, self.REPORT_HTML: page}
