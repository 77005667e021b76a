"""Class rasters and vector files for the analysis tests, with values chosen so results can be hand-computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from backend.rasters.class_raster import SegClass, SegmentationWriter

UTM = CRS.from_epsg(32640)
ORIGIN = (300_000.0, 2_800_000.0)
PIXEL = 2.0  # m: a pixel is 4 m2
CLASSES = [
    SegClass(0, "Building", "#3C1098"),
    SegClass(1, "Land", "#8429F6"),
    SegClass(2, "Vegetation", "#FEDD3A"),
]


def grid(pixel: float = PIXEL) -> Affine:
    return from_origin(*ORIGIN, pixel, pixel)


def class_raster(
    path: Path,
    data: np.ndarray,
    classes: list[SegClass] = CLASSES,
    transform: Affine | None = None,
    crs: CRS | None = UTM,
    confidence: np.ndarray | None = None,
) -> Path:
    """A class raster as ``segment`` writes it (colour table, category names, CLASSES tag), 255 = nodata."""
    height, width = data.shape
    conf_path = path.with_name(path.stem + "_conf.tif") if confidence is not None else None
    with SegmentationWriter(
        path,
        width=width,
        height=height,
        crs=crs,
        transform=transform or grid(),
        classes=classes,
        confidence=conf_path,
    ) as writer:
        writer.write_rows(data.astype(np.uint8), None if confidence is None else confidence.astype(np.float32))
    return path


def plain_raster(path: Path, data: np.ndarray, transform: Affine | None = None, nodata: Any = 255) -> Path:
    """A label raster without class names."""
    import rasterio

    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": UTM,
        "transform": transform or grid(),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data.astype(np.uint8), 1)
    return path


def vector(
    path: Path,
    geometries: list[str],
    epsg: int | None = 32640,
    field: str | None = None,
    values: list[Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A one-layer GeoPackage of WKT geometries, optionally with one attribute and layer metadata."""
    from osgeo import ogr, osr

    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = None
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = source.CreateLayer("layer", srs, ogr.wkbUnknown)
    if field is not None:
        kind = ogr.OFTString if values and isinstance(values[0], str) else ogr.OFTInteger
        layer.CreateField(ogr.FieldDefn(field, kind))
    layer.StartTransaction()
    for k, wkt in enumerate(geometries):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        if field is not None and values is not None and values[k] is not None:
            feature.SetField(field, values[k])
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    for key, value in (metadata or {}).items():
        layer.SetMetadataItem(key, value)
    source = None
    return path


def pixel_centre(row: int, col: int, pixel: float = PIXEL) -> tuple[float, float]:
    return ORIGIN[0] + (col + 0.5) * pixel, ORIGIN[1] - (row + 0.5) * pixel


def rectangle(col0: int, row0: int, col1: int, row1: int, pixel: float = PIXEL) -> str:
    """WKT of the pixel-edge rectangle covering columns col0..col1-1 and rows row0..row1-1."""
    x0, x1 = ORIGIN[0] + col0 * pixel, ORIGIN[0] + col1 * pixel
    y0, y1 = ORIGIN[1] - row1 * pixel, ORIGIN[1] - row0 * pixel
    return f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
