"""``crossearth:accuracy``: a class raster against a reference raster, points or polygons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsVectorLayer,
)

from backend.contract import AccuracyJob
from qgis_crossearth.algorithms.analysis_base import AnalysisAlgorithm, load_table, percent, write_html
from qgis_crossearth.runner import BackendRun


class AccuracyAlgorithm(AnalysisAlgorithm):
    REFERENCE = "REFERENCE"
    FIELD = "FIELD"
    TABLE = "TABLE"
    PLOT = "PLOT"
    REPORT_HTML = "REPORT_HTML"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"
    OVERALL_ACCURACY_WEIGHTED = "OVERALL_ACCURACY_WEIGHTED"
    KAPPA = "KAPPA"
    MIOU = "MIOU"

    def name(self) -> str:
        return "accuracy"

    def displayName(self) -> str:
        return "Accuracy assessment"

    def shortHelpString(self) -> str:
        return (
            "Compares a class raster with a REFERENCE: a class raster, or points or polygons whose FIELD "
            "holds class names or values (any CRS). Reports the confusion matrix (counts and proportions; "
            "rows: map, columns: reference), user's and producer's accuracy, F1, IoU, mIoU, overall accuracy "
            "and kappa. For a stratified sample drawn by 'Sample points for accuracy' (stratified), it adds "
            "the area-weighted estimates of Olofsson et al. (2014): overall, user's and producer's accuracy "
            "and each class's area, each with its 95 % confidence interval. 'Evaluate segmentation' stays "
            "the benchmark score against a full label raster."
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster (the map)"))
        self.addParameter(QgsProcessingParameterMapLayer(self.REFERENCE, "Reference (raster, points or polygons)"))
        self.addParameter(
            QgsProcessingParameterString(self.FIELD, "Reference class field (points or polygons)", "class")
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Accuracy report", "JSON (*.json)"))
        self.addParameter(QgsProcessingParameterFileDestination(self.TABLE, "Per-class table", "CSV (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination(self.PLOT, "Confusion matrix", "PNG (*.png)"))
        self.addOutput(QgsProcessingOutputHtml(self.REPORT_HTML, "Accuracy report"))
        self.addOutput(QgsProcessingOutputNumber(self.OVERALL_ACCURACY, "Overall accuracy"))
        self.addOutput(
            QgsProcessingOutputNumber(
                self.OVERALL_ACCURACY_WEIGHTED, "Area-weighted overall accuracy (stratified sample)"
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.KAPPA, "Kappa"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Mean IoU"))

    def build_job(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> AccuracyJob:
        reference_layer = self.parameterAsLayer(parameters, self.REFERENCE, context)
        if isinstance(reference_layer, QgsRasterLayer):
            reference = reference_layer.source()
        elif isinstance(reference_layer, QgsVectorLayer):
            reference = reference_layer.source().split("|")[0]
        else:
            raise QgsProcessingException(f"{parameters.get(self.REFERENCE)}: not a layer QGIS can read")
        return AccuracyJob(
            self.raster_path(parameters, self.INPUT, context),
            reference,
            self.parameterAsFileOutput(parameters, self.OUTPUT, context),
            class_field=self.parameterAsString(parameters, self.FIELD, context).strip(),
            table=self.parameterAsFileOutput(parameters, self.TABLE, context),
            plot=self.parameterAsFileOutput(parameters, self.PLOT, context),
            overwrite=True,
        )

    def results(
        self,
        job: AccuracyJob,
        run: BackendRun,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        output, table, plot = job.output, job.table, job.plot
        load_table(context, table, "Accuracy per class", self.TABLE)
        metrics = run.metrics
        rows = [
            ("overall accuracy", percent(metrics.get("overall_accuracy"))),
            ("kappa", "-" if metrics.get("kappa") is None else f"{metrics['kappa']:.3f}"),
            ("mean IoU", percent(metrics.get("miou"))),
            ("samples (pixels or points)", str(metrics.get("samples"))),
        ]
        weighted = metrics.get("overall_accuracy_weighted")
        if weighted:
            rows.append(
                (
                    "area-weighted overall accuracy",
                    f"{percent(weighted['estimate'])} ± {percent(weighted['ci95'])} (95 %)",
                )
            )
        page = write_html(str(Path(plot).with_suffix(".html")), "Accuracy assessment", [plot], rows)
        return {
            self.OUTPUT: output,
            self.TABLE: table,
            self.PLOT: plot,
            self.REPORT_HTML: page,
            self.OVERALL_ACCURACY: metrics.get("overall_accuracy"),
            self.OVERALL_ACCURACY_WEIGHTED: weighted["estimate"] if weighted else None,
            self.KAPPA: metrics.get("kappa"),
            self.MIOU: metrics.get("miou"),
        }
