"""``crossearth accuracy``: a class raster against a reference (raster, points or polygons).

The confusion matrix counts pixels (raster or polygon reference) or points; rows are the map's
classes, columns the reference's. When the points are a stratified random sample drawn by
``sample-points --stratified`` (its layer records the strata's areas), the report adds the
area-weighted estimators of :mod:`backend.analysis.estimators` with their 95 % confidence intervals.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import bounds, geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from backend.analysis.classes import ClassRaster, ValueIndex, read_class_raster, strips
from backend.analysis.estimators import confusion_scores, stratified_estimates
from backend.analysis.vectors import VectorLayer, read_features
from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.rasters.atomic import atomic_output, check_writable

STRATA_KEY = "CROSSEARTH_STRATA"  # layer metadata written by sample-points --stratified


class ReferenceClasses:
    """Maps reference values (class values or names) onto the map's class indices; refuses unknown ones."""

    def __init__(self, raster: ClassRaster, source: str) -> None:
        self.raster, self.source = raster, source
        self.index = {c.value: k for k, c in enumerate(raster.classes)}
        self.names = {c.name.casefold(): k for k, c in enumerate(raster.classes)}

    def of(self, value) -> int:
        if isinstance(value, str):
            text = value.strip()
            if text.casefold() in self.names:
                return self.names[text.casefold()]
            try:
                value = int(float(text))
            except ValueError:
                raise BadInput(self._unknown(value)) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value in self.index:
            return self.index[value]
        raise BadInput(self._unknown(value))

    def _unknown(self, value) -> str:
        known = ", ".join(f"{c.value} {c.name}" for c in self.raster.classes)
        return f"{self.source}: reference class {value!r} is not a class of {self.raster.path} ({known})"


def confusion_from_raster(
    raster: ClassRaster, reference: str, progress: ProgressFn, is_cancelled: CancelFn
) -> tuple[np.ndarray, list[str]]:
    """Pixel counts of a reference raster (on any grid: read through a nearest-neighbour warp onto the map's)."""
    warnings_: list[str] = []
    try:
        ref_ds = rasterio.open(reference)
    except rasterio.RasterioIOError as exc:
        raise BadInput(f"{reference}: not a raster GDAL can read") from exc
    with ref_ds:
        try:
            ref_info = read_class_raster(reference)
            ref_classes = {c.value: c.name for c in ref_info.classes}
        except BadInput:
            ref_classes = {}  # a plain label raster: its values are the map's class values
        ref_nodata = ref_ds.nodata
        if not np.issubdtype(np.dtype(ref_ds.dtypes[0]), np.integer):
            raise BadInput(f"{reference}: a reference raster holds integer classes, not {ref_ds.dtypes[0]}")
        same = ref_ds.crs == raster.crs and ref_ds.transform.almost_equals(raster.transform)
        same = same and (ref_ds.width, ref_ds.height) == (raster.width, raster.height)
        if not same:
            if ref_ds.crs is None or raster.crs is None:
                raise BadInput(f"{reference}: lies on another grid than {raster.path} and one of them has no CRS")
            warnings_.append(f"{reference}: read on the grid of {raster.path} (nearest neighbour)")
        source = (
            ref_ds
            if same
            else WarpedVRT(
                ref_ds,
                crs=raster.crs,
                transform=raster.transform,
                width=raster.width,
                height=raster.height,
                resampling=Resampling.nearest,
                nodata=ref_nodata if ref_nodata is not None else 255,
            )
        )
        fill = source.nodata
        mapping = ReferenceClasses(raster, reference)
        known: dict[int, int] = {}

        def reference_index(value: int) -> int:
            if value not in known:
                known[value] = mapping.of(ref_classes.get(value, value) if ref_classes else value)
            return known[value]

        to_index = ValueIndex.of(raster)
        k = len(raster.classes)
        counts = np.zeros((k, k), np.int64)
        windows = list(strips(raster.width, raster.height))
        with rasterio.open(raster.path) as map_ds:
            for done, window in enumerate(windows, start=1):
                check_cancelled(is_cancelled)
                predicted = to_index(map_ds.read(1, window=window))
                truth = source.read(1, window=window)
                skip = int(fill) if fill is not None and float(fill).is_integer() else 255  # 255: "no label"
                if truth.dtype.kind == "u" and truth.size and int(truth.max()) < 65536:
                    present = np.flatnonzero(np.bincount(truth.ravel()))
                else:
                    present = np.unique(truth)
                values = {int(v): reference_index(int(v)) for v in present if int(v) != skip}
                truth_index = ValueIndex(values, skip)(truth)
                both = (predicted >= 0) & (truth_index >= 0)
                pairs = predicted[both].astype(np.intp) * k + truth_index[both]
                counts += np.bincount(pairs, minlength=k * k).reshape(k, k)
                rows = f"{int(window.row_off)}-{int(window.row_off + window.height)}"
                progress(done / len(windows), f"comparing rows {rows}")
        if not same:
            source.close()
    if counts.sum() == 0:
        raise BadInput(f"{reference}: no labelled pixel overlaps a classified pixel of {raster.path}")
    return counts, warnings_


def _pixel_of(raster: ClassRaster, x: float, y: float) -> tuple[int, int] | None:
    col, row = ~raster.transform * (x, y)
    col, row = math.floor(col), math.floor(row)
    if 0 <= col < raster.width and 0 <= row < raster.height:
        return row, col
    return None


def sample_map_at_points(raster: ClassRaster, layer: VectorLayer) -> list[tuple[int | None, object]]:
    """The map class index under each point (None off the raster or on nodata), with the point's value."""
    to_index = ValueIndex.of(raster)
    located = []
    for feature in layer.features:
        coords = feature.geometry["coordinates"]
        points = [coords] if feature.geometry["type"] == "Point" else coords
        for x, y, *_ in points:
            located.append((_pixel_of(raster, x, y), feature.value))
    out: list[tuple[int | None, object]] = []
    with rasterio.open(raster.path) as dataset:
        for pixel, value in located:
            if pixel is None:
                out.append((None, value))
                continue
            row, col = pixel
            data = dataset.read(1, window=Window(col, row, 1, 1))
            index = int(to_index(data)[0, 0])
            out.append((index if index >= 0 else None, value))
    return out


def confusion_from_points(raster: ClassRaster, layer: VectorLayer) -> tuple[np.ndarray, list[str]]:
    mapping = ReferenceClasses(raster, layer.path)
    k = len(raster.classes)
    counts = np.zeros((k, k), np.int64)
    sampled = sample_map_at_points(raster, layer)
    off = sum(1 for index, _ in sampled if index is None)
    unset = sum(1 for index, value in sampled if index is not None and value in (None, ""))
    if off == len(sampled):
        raise BadInput(f"{layer.path}: none of its {len(sampled)} points lies on a classified pixel of {raster.path}")
    for index, value in sampled:
        if index is None or value in (None, ""):
            continue
        counts[index, mapping.of(value)] += 1
    if counts.sum() == 0:
        raise BadInput(f"{layer.path}: no point on the map has a reference class in its field")
    notes = []
    if off:
        notes.append(f"{layer.path}: {off} point(s) off the raster or on nodata were skipped")
    if unset:
        notes.append(f"{layer.path}: {unset} point(s) without a reference class were skipped")
    return counts, notes


def confusion_from_polygons(
    raster: ClassRaster, layer: VectorLayer, progress: ProgressFn, is_cancelled: CancelFn
) -> tuple[np.ndarray, list[str]]:
    """Every pixel whose centre lies in a reference polygon counts once per polygon."""
    mapping = ReferenceClasses(raster, layer.path)
    to_index = ValueIndex.of(raster)
    k = len(raster.classes)
    counts = np.zeros((k, k), np.int64)
    with rasterio.open(raster.path) as dataset:
        for done, feature in enumerate(layer.features, start=1):
            check_cancelled(is_cancelled)
            if feature.value in (None, ""):
                continue
            truth = mapping.of(feature.value)
            xmin, ymin, xmax, ymax = bounds(feature.geometry)
            window = from_bounds(xmin, ymin, xmax, ymax, transform=raster.transform)
            col0, row0 = max(math.floor(window.col_off), 0), max(math.floor(window.row_off), 0)
            col1 = min(math.ceil(window.col_off + window.width), raster.width)
            row1 = min(math.ceil(window.row_off + window.height), raster.height)
            if col1 <= col0 or row1 <= row0:
                continue
            for part in strips(col1 - col0, row1 - row0):
                win = Window(col0, row0 + part.row_off, col1 - col0, part.height)
                inside = geometry_mask(
                    [feature.geometry],
                    out_shape=(int(win.height), int(win.width)),
                    transform=window_transform(win, raster.transform),
                    invert=True,
                )
                predicted = to_index(dataset.read(1, window=win))[inside]
                predicted = predicted[predicted >= 0]
                counts[:, truth] += np.bincount(predicted.astype(np.intp), minlength=k)
            progress(done / len(layer.features), f"polygon {done} of {len(layer.features)}")
    if counts.sum() == 0:
        raise BadInput(f"{layer.path}: its polygons cover no classified pixel centre of {raster.path}")
    return counts, []


def _strata(layer: VectorLayer, raster: ClassRaster) -> list[float] | None:
    """Mapped area (m2) of each map class, as sample-points recorded it; None for other references."""
    text = layer.metadata.get(STRATA_KEY)
    if not text:
        return None
    try:
        strata = {int(value): float(area) for value, area in json.loads(text)["strata_m2"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{layer.path}: unreadable {STRATA_KEY} metadata ({exc})") from exc
    return [strata.get(value, 0.0) for value in raster.values]


def assess(
    classes: str,
    reference: str,
    field: str | None = "class",
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> tuple[dict, list[str]]:
    """The accuracy report (a JSON-ready dict) and notes worth a warning."""
    raster = read_class_raster(classes)
    names = [c.name for c in raster.classes]
    strata = None
    suffix = Path(reference).suffix.lower()
    is_raster = suffix in (".tif", ".tiff", ".vrt", ".img", ".jp2") or _is_raster(reference)
    if is_raster:
        counts, notes = confusion_from_raster(raster, reference, progress, is_cancelled)
        kind = "raster"
    else:
        layer = read_features(reference, raster.crs, field)
        if layer.kind == "point":
            counts, notes = confusion_from_points(raster, layer)
            strata = _strata(layer, raster)
        else:
            counts, notes = confusion_from_polygons(raster, layer, progress, is_cancelled)
        kind = layer.kind + "s"
    report = {
        "classes_raster": classes,
        "reference": reference,
        "reference_kind": kind,
        "field": None if is_raster else field,
        "matrix_rows": "map",
        "matrix_columns": "reference",
        **confusion_scores(counts, names),
    }
    if strata is not None:
        if any(a > 0 and n < 2 for a, n in zip(strata, counts.sum(axis=1), strict=True)):
            notes.append(f"{reference}: strata with fewer than two labelled points have no confidence interval")
        report["stratified"] = stratified_estimates(counts, strata, names)
        report["stratified"]["area_unit"] = "m2"
    progress(1.0, "assessed")
    return report, notes


def _is_raster(path: str) -> bool:
    from osgeo import gdal

    if not Path(path).exists():
        raise BadInput(f"{path}: no such file")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        dataset = gdal.OpenEx(path, gdal.OF_RASTER)
    except RuntimeError:
        dataset = None
    finally:
        gdal.PopErrorHandler()
    return dataset is not None


def per_class_rows(report: dict) -> list[dict]:
    """One row per class for the CSV table: the plain measures, and the area-weighted ones when there are."""
    rows = []
    stratified = report.get("stratified")
    for name, values in report["per_class"].items():
        row = {"class": name, **values}
        if stratified:
            est = stratified["per_class"][name]
            for key in ("users_accuracy", "producers_accuracy"):
                row[f"{key}_weighted"] = est[key]["estimate"]
                row[f"{key}_weighted_ci95"] = est[key]["ci95"]
            row["area_m2_estimated"] = est["area"]["estimate"]
            row["area_m2_estimated_ci95"] = est["area"]["ci95"]
            row["area_m2_mapped"] = est["mapped_area"]
        rows.append(row)
    return rows


def write_csv(path: str | os.PathLike, rows: Sequence[dict], overwrite: bool) -> None:
    with atomic_output(path, overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def write_json(path: str | os.PathLike, data: dict, overwrite: bool) -> None:
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def plot_confusion(report: dict, path: str | os.PathLike, overwrite: bool, colors: Sequence[str] = ()) -> None:
    """The confusion matrix as a picture: counts in the cells, shaded by the share of each map class's row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(report["confusion_counts"], dtype=np.float64)
    names = report["classes"]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    size = 1.2 + 0.75 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{int(counts[i, j]):,}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("reference")
    ax.set_ylabel("map")
    oa, kappa = report["overall_accuracy"], report["kappa"]
    title = f"overall accuracy {100 * oa:.1f} %" if oa is not None else "confusion matrix"
    if kappa is not None:
        title += f", kappa {kappa:.2f}"
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the map class")
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def beside(path: str | os.PathLike, suffix: str) -> str:
    """``report.json`` -> ``report.csv`` / ``report.png``."""
    return str(Path(path).with_suffix(suffix))


def write_accuracy(report: dict, output: str, table: str, plot: str, overwrite: bool) -> dict:
    for target in (output, table, plot):
        check_writable(target, overwrite)
    write_json(output, report, overwrite)
    write_csv(table, per_class_rows(report), overwrite)
    plot_confusion(report, plot, overwrite)
    return {"OUTPUT": output, "TABLE": table, "PLOT": plot}
