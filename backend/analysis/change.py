"""``crossearth change``: from-to classes between two class rasters, and the transition matrix.

AFTER is read on BEFORE's grid: as it is when the grids match, otherwise through a warp by mode (the
most frequent AFTER class under each BEFORE pixel), with a warning. Code ``i * K_after + j`` of the
from-to raster means "class i of BEFORE became class j of AFTER"; its colour table draws changes in the
new class's colour and unchanged pixels in a washed-out colour of their class.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from backend.analysis.classes import ClassRaster, ValueIndex, add_counts, read_class_raster, strips
from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.rasters.atomic import check_writable
from backend.rasters.class_raster import CLASS_NODATA, SegClass, SegmentationWriter
from backend.rasters.roi import raster_bounds


def _washed(color: str) -> str:
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(0.2 * c + 0.8 * 225):02X}" for c in rgb)


def from_to_classes(before: ClassRaster, after: ClassRaster, only_changes: bool) -> list[SegClass]:
    k_after = len(after.classes)
    if len(before.classes) * k_after > CLASS_NODATA:
        raise BadInput(
            f"{after.path}: {len(before.classes)} x {k_after} from-to classes do not fit in one byte (at most 255)"
        )
    out = []
    for i, b in enumerate(before.classes):
        for j, a in enumerate(after.classes):
            same = b.name.casefold() == a.name.casefold()
            if same and only_changes:
                continue
            name = f"{b.name} (unchanged)" if same else f"{b.name} -> {a.name}"
            out.append(SegClass(i * k_after + j, name, _washed(b.color) if same else a.color))
    return out


def _overlaps(before: ClassRaster, after: ClassRaster) -> bool:
    left, bottom, right, top = transform_bounds(after.crs, before.crs, *raster_bounds(after), densify_pts=21)
    b_left, b_bottom, b_right, b_top = raster_bounds(before)
    return left < b_right and right > b_left and bottom < b_top and top > b_bottom


def change(
    before_path: str,
    after_path: str,
    output: str,
    matrix_csv: str,
    matrix_json: str,
    only_changes: bool = False,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> dict:
    before, after = read_class_raster(before_path), read_class_raster(after_path)
    same = before.same_grid(after)
    if not same:
        if before.crs is None or after.crs is None:
            raise BadInput(f"{after_path}: lies on another grid than {before_path} and one of them has no CRS")
        if not _overlaps(before, after):
            raise BadInput(f"{after_path}: does not overlap {before_path}")
        warnings.warn(
            f"{after_path}: resampled onto the grid of {before_path} by mode (most frequent class)",
            UserWarning,
            stacklevel=2,
        )
    classes = from_to_classes(before, after, only_changes)
    for target in (output, matrix_csv, matrix_json):
        check_writable(target, overwrite)
    kb, ka = len(before.classes), len(after.classes)
    index_b, index_a = ValueIndex.of(before), ValueIndex.of(after)
    unchanged_pairs = _same_name(before, after).ravel()
    flat_pixels, flat_m2 = np.zeros(kb * ka, np.int64), np.zeros(kb * ka)
    windows = list(strips(before.width, before.height))
    with rasterio.open(before.path) as b_ds, rasterio.open(after.path) as a_ds:
        source = (
            a_ds
            if same
            else WarpedVRT(
                a_ds,
                crs=before.crs,
                transform=before.transform,
                width=before.width,
                height=before.height,
                resampling=Resampling.mode,
                nodata=after.nodata if after.nodata is not None else CLASS_NODATA,
            )
        )
        try:
            with SegmentationWriter(
                output,
                width=before.width,
                height=before.height,
                crs=before.crs,
                transform=before.transform,
                classes=classes,
                overwrite=overwrite,
                metadata={"BEFORE": str(before_path), "AFTER": str(after_path)},
            ) as writer:
                for done, window in enumerate(windows, start=1):
                    check_cancelled(is_cancelled)
                    b = index_b(b_ds.read(1, window=window)).astype(np.int16)
                    a = index_a(source.read(1, window=window)).astype(np.int16)
                    valid = (b >= 0) & (a >= 0)
                    pair = np.where(valid, b * ka + a, -1)
                    code = np.where(valid, pair, CLASS_NODATA)
                    if only_changes:
                        code[valid & unchanged_pairs[np.clip(pair, 0, None)]] = CLASS_NODATA
                    writer.write_rows(code.astype(np.uint8))
                    areas = before.row_areas_m2(int(window.row_off), int(window.height))
                    add_counts(pair, areas, kb * ka, flat_pixels, flat_m2)
                    progress(
                        0.95 * done / len(windows), f"rows {int(window.row_off + window.height)} of {before.height}"
                    )
        finally:
            if not same:
                source.close()
    report = _matrix(before, after, flat_pixels.reshape(kb, ka), flat_m2.reshape(kb, ka), same)
    _write_matrix(report, matrix_csv, matrix_json, overwrite)
    progress(1.0, "change written")
    return report


def _same_name(before: ClassRaster, after: ClassRaster) -> np.ndarray:
    return np.array(
        [[b.name.casefold() == a.name.casefold() for a in after.classes] for b in before.classes], dtype=bool
    )


def _matrix(before: ClassRaster, after: ClassRaster, pixels: np.ndarray, m2: np.ndarray, same: bool) -> dict:
    total = m2.sum()
    unchanged = float((m2 * _same_name(before, after)).sum())
    rows = []
    for i, b in enumerate(before.classes):
        for j, a in enumerate(after.classes):
            rows.append(
                {
                    "from": b.name,
                    "to": a.name,
                    "pixels": int(pixels[i, j]),
                    "area_m2": round(float(m2[i, j]), 3),
                    "area_ha": round(float(m2[i, j]) / 10_000, 6),
                    "percent": round(100 * float(m2[i, j]) / total, 4) if total else 0.0,
                }
            )
    return {
        "before": before.path,
        "after": after.path,
        "resampled": not same,
        "from_classes": [c.name for c in before.classes],
        "to_classes": [c.name for c in after.classes],
        "matrix_m2": np.round(m2, 3).tolist(),
        "matrix_percent": (np.round(100 * m2 / total, 4) if total else m2).tolist(),
        "compared_m2": round(float(total), 3),
        "changed_m2": round(float(total) - unchanged, 3),
        "changed_percent": round(100 * (1 - unchanged / total), 4) if total else 0.0,
        "rows": rows,
    }


def _write_matrix(report: dict, csv_path: str | os.PathLike, json_path: str | os.PathLike, overwrite: bool) -> None:
    from backend.analysis.accuracy import write_csv, write_json

    write_csv(csv_path, report["rows"], overwrite)
    write_json(json_path, report, overwrite)


def default_matrix_paths(output: str | os.PathLike) -> tuple[str, str]:
    stem = Path(output).with_suffix("")
    return f"{stem}.matrix.csv", f"{stem}.matrix.json"
