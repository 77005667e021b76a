"""``crossearth sample-points``: random points on a class raster for an accuracy assessment.

Simple random: ``n`` classified pixels, each equally likely. Stratified (the strata are the map
classes, as Olofsson et al. 2014 recommend): ``n`` split equally between the classes (a class with
fewer pixels gives all it has, the rest goes to the others). Two passes over the raster in strips:
the first counts the pixels of each class, the second picks the pixels whose rank was drawn, so memory
does not grow with the raster. Points sit at pixel centres; the layer records the strata's mapped areas
(``CROSSEARTH_STRATA``) for the area-weighted estimators of ``crossearth accuracy``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from backend.analysis.accuracy import STRATA_KEY
from backend.analysis.classes import ClassRaster, read_class_raster, strips
from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.rasters.atomic import atomic_output

REFERENCE_FIELD = "class"  # left empty for the interpreter; `crossearth accuracy --field class` reads it


def allocate(n: int, available: list[int]) -> list[int]:
    """Equal allocation of ``n`` over strata, none getting more than it has."""
    share = [0] * len(available)
    left = n
    open_ = [k for k, a in enumerate(available) if a > 0]
    while left > 0 and open_:
        each = max(1, left // len(open_))
        for k in list(open_):
            take = min(each, available[k] - share[k], left)
            share[k] += take
            left -= take
            if share[k] >= available[k]:
                open_.remove(k)
            if left == 0:
                break
    return share


def _counts_and_areas(raster: ClassRaster, is_cancelled: CancelFn) -> tuple[np.ndarray, np.ndarray]:
    k = len(raster.classes)
    counts, areas = np.zeros(k, np.int64), np.zeros(k)
    with rasterio.open(raster.path) as dataset:
        for window in strips(raster.width, raster.height):
            check_cancelled(is_cancelled)
            data = dataset.read(1, window=window)
            row_area = raster.row_areas_m2(int(window.row_off), int(window.height))
            for i, value in enumerate(raster.values):
                hit = data == value
                counts[i] += int(hit.sum())
                areas[i] += float((hit.sum(axis=1) * row_area).sum())
    return counts, areas


def sample_points(
    classes: str,
    output: str,
    n: int,
    stratified: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> dict:
    from osgeo import ogr, osr

    if Path(output).suffix.lower() != ".gpkg":
        raise BadInput(f"{output}: the output must be a GeoPackage (.gpkg)")
    raster = read_class_raster(classes)
    if n < 1:
        raise BadInput(f"{classes}: -n must be at least 1")
    counts, areas = _counts_and_areas(raster, is_cancelled)
    progress(0.4, "pixels counted")
    if counts.sum() == 0:
        raise BadInput(f"{classes}: has no classified pixel to sample")
    rng = np.random.default_rng(seed)
    k = len(raster.classes)
    if stratified:
        wanted = allocate(n, counts.tolist())
        ranks = [np.sort(rng.choice(int(counts[i]), wanted[i], replace=False)) for i in range(k)]
    else:
        total = int(counts.sum())
        ranks_all = np.sort(rng.choice(total, min(n, total), replace=False))
    picked: list[tuple[float, float, int]] = []  # x, y, class value
    seen = np.zeros(k, np.int64)
    seen_all = 0
    lookup = {value: i for i, value in enumerate(raster.values)}
    with rasterio.open(raster.path) as dataset:
        for window in strips(raster.width, raster.height):
            check_cancelled(is_cancelled)
            data = dataset.read(1, window=window)
            if stratified:
                for i, value in enumerate(raster.values):
                    rows, cols = np.nonzero(data == value)
                    lo, hi = np.searchsorted(ranks[i], [seen[i], seen[i] + len(rows)])
                    for rank in ranks[i][lo:hi]:
                        at = int(rank - seen[i])
                        picked.append((cols[at], rows[at] + int(window.row_off), value))
                    seen[i] += len(rows)
            else:
                valid = np.isin(data, raster.values)
                rows, cols = np.nonzero(valid)
                lo, hi = np.searchsorted(ranks_all, [seen_all, seen_all + len(rows)])
                for rank in ranks_all[lo:hi]:
                    at = int(rank - seen_all)
                    r, c = rows[at], cols[at]
                    picked.append((c, r + int(window.row_off), int(data[r, c])))
                seen_all += len(rows)
    progress(0.8, f"{len(picked)} points drawn")
    srs = None
    if raster.crs is not None:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(raster.crs.to_wkt())
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    names = {c.value: c.name for c in raster.classes}
    with atomic_output(output, overwrite) as tmp:
        vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
        layer = vector.CreateLayer("points", srs, ogr.wkbPoint)
        for name, kind in (
            ("map_class", ogr.OFTInteger),
            ("map_name", ogr.OFTString),
            (REFERENCE_FIELD, ogr.OFTString),
        ):
            layer.CreateField(ogr.FieldDefn(name, kind))
        layer.StartTransaction()
        order = sorted(picked, key=lambda p: (p[1], p[0]))
        for col, row, value in order:
            x, y = raster.transform * (col + 0.5, row + 0.5)
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetField("map_class", int(value))
            feature.SetField("map_name", names[int(value)])
            point = ogr.Geometry(ogr.wkbPoint)
            point.AddPoint_2D(float(x), float(y))
            feature.SetGeometry(point)
            layer.CreateFeature(feature)
        layer.CommitTransaction()
        design = {
            "design": "stratified" if stratified else "simple",
            "classes_raster": str(classes),
            "seed": seed,
            "strata_m2": {str(v): float(areas[lookup[v]]) for v in raster.values},
            "strata_pixels": {str(v): int(counts[lookup[v]]) for v in raster.values},
        }
        if stratified:
            layer.SetMetadataItem(STRATA_KEY, json.dumps(design))
        else:
            layer.SetMetadataItem("CROSSEARTH_SAMPLE", json.dumps(design))
        vector = layer = None
    per_class = {names[v]: sum(1 for p in picked if p[2] == v) for v in raster.values}
    progress(1.0, f"{len(picked)} points written")
    return {"points": len(picked), "per_class": per_class, "design": "stratified" if stratified else "simple"}
