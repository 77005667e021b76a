"""``crossearth vectorize``: one polygon per connected region of a class raster.

GDAL does the streaming work: ``SieveFilter`` merges regions smaller than ``--min-area`` into their
largest neighbour, ``Polygonize`` traces the regions (4-connected, nodata skipped) into a GeoPackage.
Each feature gets ``class``, ``name``, ``area_m2`` (the area of its pixels, measured before any
simplification, so the areas of a class add up to the raster's area of that class) and, with a
confidence raster, ``confidence``: the mean of its pixels (polygon ids are burnt back into a raster and
averaged block by block). ``--simplify`` simplifies each polygon without letting it self-intersect or
lose its holes.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from backend.analysis.classes import ClassRaster, read_class_raster, strips
from backend.errors import BadInput
from backend.progress import CancelFn, Cancelled, ProgressFn, never_cancelled, no_progress, sub_progress
from backend.rasters.atomic import atomic_output

LAYER = "polygons"
EQUAL_AREA = "EPSG:6933"  # areas of polygons in a geographic CRS


@dataclass(frozen=True)
class VectorizeResult:
    features: int
    area_m2: dict[str, float]  # per class name


def _callback(progress: ProgressFn, is_cancelled: CancelFn, message: str):
    def report(fraction, _message, _data):
        progress(fraction, message)
        return 0 if is_cancelled() else 1

    return report


def _gtiff(path: Path, raster: ClassRaster, data_type: int, nodata: float | None):
    from osgeo import gdal

    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), raster.width, raster.height, 1, data_type, ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
    )
    dataset.SetGeoTransform(raster.transform.to_gdal())
    if raster.crs is not None:
        dataset.SetProjection(raster.crs.to_wkt())
    if nodata is not None:
        dataset.GetRasterBand(1).SetNoDataValue(nodata)
    return dataset


def _open_band(path: str):
    from osgeo import gdal

    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(1)
    return dataset, band


def vectorize(
    classes: str,
    output: str,
    confidence: str | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> VectorizeResult:
    from osgeo import gdal, ogr, osr

    if Path(output).suffix.lower() != ".gpkg":
        raise BadInput(f"{output}: the output must be a GeoPackage (.gpkg)")
    raster = read_class_raster(classes)
    if min_area < 0 or simplify < 0:
        raise BadInput(f"{classes}: --min-area and --simplify must not be negative")
    pixel_area = float(raster.row_areas_m2(raster.height // 2, 1)[0])
    if confidence is not None:
        try:
            with rasterio.open(confidence) as conf:
                if (conf.width, conf.height) != (raster.width, raster.height) or not conf.transform.almost_equals(
                    raster.transform
                ):
                    raise BadInput(f"{confidence}: lies on another grid than {classes}")
        except rasterio.RasterioIOError as exc:
            raise BadInput(f"{confidence}: not a raster GDAL can read") from exc
    names = {c.value: c.name for c in raster.classes}
    srs = osr.SpatialReference()
    if raster.crs is not None:
        srs.ImportFromWkt(raster.crs.to_wkt())
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_equal_area = None
    if raster.crs is not None and raster.crs.is_geographic:
        target = osr.SpatialReference()
        target.SetFromUserInput(EQUAL_AREA)
        target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        to_equal_area = osr.CoordinateTransformation(srs, target)
    unit = raster.crs.linear_units_factor[1] if raster.crs is not None and not raster.crs.is_geographic else 1.0
    tolerance = simplify / unit if to_equal_area is None else simplify / 111_320.0

    with atomic_output(output, overwrite) as tmp, tempfile.TemporaryDirectory(dir=Path(output).parent) as work:
        source_ds, source_band = _open_band(raster.path)
        band, keep = source_band, [source_ds]
        if min_area > 0:
            threshold = max(1, math.ceil(min_area / pixel_area - 1e-9))
            sieved = _gtiff(Path(work) / "sieved.tif", raster, source_band.DataType, raster.nodata)
            if gdal.SieveFilter(
                source_band,
                source_band.GetMaskBand(),
                sieved.GetRasterBand(1),
                threshold,
                4,
                callback=_callback(sub_progress(progress, 0.0, 0.3), is_cancelled, "merging small regions"),
            ):
                raise Cancelled("cancelled") if is_cancelled() else RuntimeError("GDAL SieveFilter failed")
            sieved.FlushCache()
            band, keep = sieved.GetRasterBand(1), [*keep, sieved]
        driver = ogr.GetDriverByName("GPKG")
        vector = driver.CreateDataSource(str(tmp))
        layer = vector.CreateLayer(LAYER, srs if raster.crs is not None else None, ogr.wkbPolygon)
        for name, kind in (("class", ogr.OFTInteger), ("name", ogr.OFTString), ("area_m2", ogr.OFTReal)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        if confidence is not None:
            layer.CreateField(ogr.FieldDefn("confidence", ogr.OFTReal))
        layer.StartTransaction()
        if gdal.Polygonize(
            band,
            band.GetMaskBand(),
            layer,
            0,
            [],
            callback=_callback(sub_progress(progress, 0.3, 0.7), is_cancelled, "tracing polygons"),
        ):
            raise Cancelled("cancelled") if is_cancelled() else RuntimeError("GDAL Polygonize failed")
        layer.CommitTransaction()
        means = None
        if confidence is not None:
            means = _mean_confidence(vector, raster, confidence, Path(work), sub_progress(progress, 0.7, 0.85))
        totals: dict[str, float] = {}
        count = layer.GetFeatureCount()
        layer.StartTransaction()
        layer.ResetReading()
        for done, feature in enumerate(layer, start=1):
            if done % 2000 == 0:
                if is_cancelled():
                    raise Cancelled("cancelled")
                progress(0.85 + 0.15 * done / max(count, 1), f"attributes {done} of {count}")
            geom = feature.GetGeometryRef()
            if to_equal_area is not None:
                measured = geom.Clone()
                measured.Transform(to_equal_area)
                area = measured.GetArea()
            else:
                area = geom.GetArea() * unit**2
            value = feature.GetField("class")
            name = names.get(value, str(value))
            feature.SetField("name", name)
            feature.SetField("area_m2", area)
            totals[name] = totals.get(name, 0.0) + area
            if means is not None:
                fid = feature.GetFID()
                mean = means[fid] if fid < len(means) else math.nan
                if math.isfinite(mean):
                    feature.SetField("confidence", float(mean))
            if tolerance > 0:
                simpler = geom.SimplifyPreserveTopology(tolerance)
                if simpler is not None and not simpler.IsEmpty():
                    feature.SetGeometry(simpler)
            layer.SetFeature(feature)
        layer.CommitTransaction()
        features = layer.GetFeatureCount()
        vector = layer = None
        keep.clear()
    progress(1.0, f"{features} polygons")
    return VectorizeResult(features, totals)


def _mean_confidence(vector, raster: ClassRaster, confidence: str, work: Path, progress: ProgressFn) -> np.ndarray:
    """Mean confidence per feature id: ids burnt into a raster (pixel centres), then averaged strip by strip."""
    from osgeo import gdal

    ids = _gtiff(work / "ids.tif", raster, gdal.GDT_Int32, 0)
    result = vector.ExecuteSQL(f'SELECT fid + 0 AS rid, geom FROM "{LAYER}"')
    try:
        gdal.RasterizeLayer(ids, [1], result, options=["ATTRIBUTE=rid"])
    finally:
        vector.ReleaseResultSet(result)
    ids.FlushCache()
    ids = None
    sums = np.zeros(1)
    counts = np.zeros(1)
    windows = list(strips(raster.width, raster.height))
    with rasterio.open(work / "ids.tif") as id_ds, rasterio.open(confidence) as conf_ds:
        for done, window in enumerate(windows, start=1):
            fid = id_ds.read(1, window=window).ravel()
            conf = conf_ds.read(1, window=window, masked=True).astype(np.float64).filled(np.nan).ravel()
            keep = (fid > 0) & np.isfinite(conf)
            top = int(fid.max()) + 1 if fid.size else 1
            if top > len(sums):
                sums = np.pad(sums, (0, top - len(sums)))
                counts = np.pad(counts, (0, top - len(counts)))
            sums += np.bincount(fid[keep], weights=conf[keep], minlength=len(sums))
            counts += np.bincount(fid[keep], minlength=len(counts))
            progress(done / len(windows), "averaging confidence")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)
