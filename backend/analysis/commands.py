"""The analysis commands of the ``crossearth`` CLI: vectorize, areas, accuracy, sample-points, change.

Each builds its job of :mod:`backend.contract` (:class:`~backend.contract.VectorizeJob`, ...) and hands it to
the CLI's runner, so they speak the same ``--json-progress`` protocol, exit codes and atomic-output rules as
``segment`` (docs/cli.md); :func:`execute` runs such a job (``backend.cli.execute_job`` calls it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from backend.contract import AccuracyJob, AreasJob, ChangeJob, SamplePointsJob, VectorizeJob

Classes = Annotated[Path, typer.Argument(help="Class raster (e.g. written by segment).", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
JsonProgress = Annotated[bool, typer.Option("--json-progress", help="JSON events on stdout (docs/cli.md).")]


def register(app: typer.Typer, run: Callable) -> None:
    """Add the commands to ``app``; ``run(json_progress, build)`` is the CLI's job runner (``build()`` makes the
    job) and returns the metrics of a successful run."""

    @app.command()
    def vectorize(
        classes: Classes,
        output: Annotated[Path, typer.Option("--output", "-o", help="GeoPackage of polygons to write.")],
        confidence: Annotated[
            Path | None, typer.Option("--confidence", help="Confidence raster: adds each polygon's mean.")
        ] = None,
        min_area: Annotated[
            float, typer.Option("--min-area", min=0, help="m2; smaller regions merge into their neighbours.")
        ] = 0.0,
        simplify: Annotated[float, typer.Option("--simplify", min=0, help="Simplification tolerance, metres.")] = 0.0,
        overwrite: Overwrite = False,
        json_progress: JsonProgress = False,
    ) -> None:
        """One polygon per connected region: class, name, area_m2 (and mean confidence)."""
        run(json_progress, lambda: VectorizeJob(str(classes), output, confidence, min_area, simplify, overwrite))

    @app.command()
    def areas(
        classes: Classes,
        output: Annotated[Path, typer.Option("--output", "-o", help="CSV table to write (JSON beside it).")],
        zones: Annotated[Path | None, typer.Option("--zones", help="Polygons (any CRS): one table per zone.")] = None,
        zone_field: Annotated[str | None, typer.Option("--zone-field", help="Field naming the zones.")] = None,
        json_out: Annotated[Path | None, typer.Option("--json-out", help="JSON (default: OUTPUT.json).")] = None,
        chart: Annotated[Path | None, typer.Option("--chart", help="Bar chart PNG (default: OUTPUT.png).")] = None,
        no_chart: Annotated[bool, typer.Option("--no-chart", help="Write no chart.")] = False,
        overwrite: Overwrite = False,
        json_progress: JsonProgress = False,
    ) -> None:
        """Pixels, m2, ha and percentage of each class and of nodata, per zone or for the whole raster."""
        job: list[AreasJob] = []

        def build() -> AreasJob:
            job.append(AreasJob(str(classes), output, zones, zone_field, json_out, chart, no_chart, overwrite))
            return job[-1]

        if run(json_progress, build) is not None and not json_progress:
            _print_areas(json.loads(Path(job[-1].json_out).read_text()))

    @app.command()
    def accuracy(
        classes: Classes,
        reference: Annotated[
            Path, typer.Argument(help="Reference: class raster, or points/polygons with a class field.")
        ],
        output: Annotated[Path, typer.Option("--output", "-o", help="JSON report to write.")],
        field: Annotated[str, typer.Option("--field", help="Reference field (class names or values).")] = "class",
        table: Annotated[Path | None, typer.Option("--table", help="Per-class CSV (default: OUTPUT.csv).")] = None,
        plot: Annotated[Path | None, typer.Option("--plot", help="Confusion matrix PNG (default: OUTPUT.png).")] = None,
        overwrite: Overwrite = False,
        json_progress: JsonProgress = False,
    ) -> None:
        """Confusion matrix, user's/producer's accuracy, F1, IoU, kappa; area-weighted estimates with 95 % CIs
        for a stratified sample."""

        def build() -> AccuracyJob:
            return AccuracyJob(str(classes), str(reference), output, field, table, plot, overwrite)

        if run(json_progress, build) is not None and not json_progress:
            _print_accuracy(json.loads(Path(output).read_text()))

    @app.command("sample-points")
    def sample_points(
        classes: Classes,
        output: Annotated[Path, typer.Option("--output", "-o", help="GeoPackage of points to write.")],
        n: Annotated[int, typer.Option("-n", "--count", min=1, help="Number of points.")],
        stratified: Annotated[
            bool, typer.Option("--stratified", help="Split N equally between the map classes (records strata).")
        ] = False,
        seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
        overwrite: Overwrite = False,
        json_progress: JsonProgress = False,
    ) -> None:
        """Random points at pixel centres, with an empty `class` field to fill in for `accuracy`."""
        run(json_progress, lambda: SamplePointsJob(str(classes), output, n, stratified, seed, overwrite))

    @app.command()
    def change(
        before: Annotated[Path, typer.Argument(help="Class raster of the first date.", show_default=False)],
        after: Annotated[Path, typer.Argument(help="Class raster of the second date.", show_default=False)],
        output: Annotated[Path, typer.Option("--output", "-o", help="From-to class raster (GeoTIFF).")],
        matrix: Annotated[
            Path | None, typer.Option("--matrix", help="Transition matrix CSV (default: OUTPUT.matrix.csv).")
        ] = None,
        only_changes: Annotated[bool, typer.Option("--only-changes", help="Unchanged pixels become nodata.")] = False,
        overwrite: Overwrite = False,
        json_progress: JsonProgress = False,
    ) -> None:
        """From-to classes ("Vegetation -> Building") and the transition matrix in m2 and percent."""
        run(json_progress, lambda: ChangeJob(str(before), str(after), output, matrix, only_changes, overwrite))


def execute(job, progress, is_cancelled, log: Callable[[str, str], None]) -> tuple[dict[str, str], dict]:
    """Run an analysis job: the outputs it wrote (Processing's names) and its metrics."""
    from backend.rasters.atomic import check_writable

    if isinstance(job, VectorizeJob):
        from backend.analysis.vectorize import vectorize as polygons

        result = polygons(
            job.classes,
            job.output,
            job.confidence,
            job.min_area,
            job.simplify,
            job.overwrite,
            progress,
            is_cancelled,
        )
        metrics = {"features": result.features, "area_m2": result.area_m2, "classes": _classes(job.classes)}
        return {"OUTPUT": job.output}, metrics
    if isinstance(job, AreasJob):
        from backend.analysis.areas import class_areas, summary, write_areas

        for target in job.outputs():
            check_writable(target, job.overwrite)
        table = class_areas(job.classes, job.zones, job.zone_field, progress, is_cancelled)
        outputs = write_areas(table, job.output, job.json_out, job.chart, job.overwrite)
        return outputs, summary(table)
    if isinstance(job, AccuracyJob):
        from backend.analysis.accuracy import assess, write_accuracy

        for target in job.outputs():
            check_writable(target, job.overwrite)
        report, notes = assess(job.classes, job.reference, job.class_field, progress, is_cancelled)
        for note in notes:
            log(note, "warning")
        outputs = write_accuracy(report, job.output, job.table, job.plot, job.overwrite)
        metrics = {k: report[k] for k in ("overall_accuracy", "kappa", "miou", "samples")}
        if "stratified" in report:
            metrics["overall_accuracy_weighted"] = report["stratified"]["overall_accuracy"]
        return outputs, metrics
    if isinstance(job, SamplePointsJob):
        from backend.analysis.sampling import sample_points as draw

        result = draw(
            job.classes, job.output, job.count, job.stratified, job.seed, job.overwrite, progress, is_cancelled
        )
        return {"OUTPUT": job.output}, result
    if isinstance(job, ChangeJob):
        from backend.analysis.change import change as from_to

        report = from_to(
            job.before,
            job.after,
            job.output,
            job.matrix,
            job.matrix_json,
            job.only_changes,
            job.overwrite,
            progress,
            is_cancelled,
        )
        outputs = {"OUTPUT": job.output, "MATRIX": job.matrix, "MATRIX_JSON": job.matrix_json}
        metrics = {k: report[k] for k in ("changed_m2", "changed_percent", "compared_m2", "resampled")}
        return outputs, {**metrics, "classes": _classes(job.output)}
    raise TypeError(f"not an analysis job: {job!r}")


def _classes(path: Path) -> list[dict]:
    """The classes of a class raster as {"value", "name", "color"}: the plugin styles outputs with them."""
    from backend.analysis.classes import read_class_raster

    return [c.to_dict() for c in read_class_raster(path).classes]


def _print_areas(table: dict) -> None:
    out = Table(title=f"class areas of {Path(table['classes_raster']).name}")
    for column in ("zone", "class", "ha", "%"):
        out.add_column(column, justify="left" if column in ("zone", "class") else "right")
    for row in table["rows"]:
        out.add_row(str(row["zone"]), row["name"], f"{row['area_ha']:,.2f}", f"{row['percent']:.2f}")
    Console().print(out)


def _print_accuracy(report: dict) -> None:
    out = Table(title=f"{Path(report['classes_raster']).name} against {Path(report['reference']).name}")
    for column in ("class", "user's", "producer's", "F1", "IoU"):
        out.add_column(column, justify="left" if column == "class" else "right")

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    for name, row in report["per_class"].items():
        out.add_row(name, pct(row["users_accuracy"]), pct(row["producers_accuracy"]), pct(row["f1"]), pct(row["iou"]))
    out.add_row("[bold]overall accuracy", pct(report["overall_accuracy"]), "", "", "")
    out.add_row("kappa", "-" if report["kappa"] is None else f"{report['kappa']:.3f}", "", "", "")
    if "stratified" in report:
        oa = report["stratified"]["overall_accuracy"]
        out.add_row("area-weighted OA", f"{pct(oa['estimate'])} ± {pct(oa['ci95'])}", "", "", "")
    Console().print(out)
