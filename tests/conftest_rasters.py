"""Small fixed-seed GeoTIFFs (and broken files) written into a test's tmp_path.

Each writer returns the path; pixel values are chosen so that tests can predict the results.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

CRS_UTM = "EPSG:32640"  # UTM 40N, where the Dubai tiles are
TRANSFORM = from_origin(300000.0, 2800000.0, 2.0, 2.0)
# A triangle over the 48 x 40 test rasters, in UTM; its bounds give the pixel window (5, 4, 31, 31).
TRIANGLE = {
    "type": "Polygon",
    "coordinates": [[(300010.3, 2799990.7), (300071.1, 2799985.2), (300030.6, 2799931.9), (300010.3, 2799990.7)]],
}
TRIANGLE_WKT = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in TRIANGLE["coordinates"][0]) + "))"


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = CRS_UTM,
    transform: Any = TRANSFORM,
    colorinterp: list[ColorInterp] | None = None,
    mask: np.ndarray | None = None,
    overviews: list[int] | None = None,
    **profile: Any,
) -> Path:
    """Write [C, H, W] ``data`` as a GeoTIFF; ``mask`` (bool, True = valid) becomes a dataset mask."""
    count, height, width = data.shape
    options = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name}
    if crs is not None:
        options.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **options, **profile) as dst:
            dst.write(data)
            if colorinterp is not None:
                dst.colorinterp = colorinterp
            if mask is not None:
                dst.write_mask(mask.astype(np.uint8) * 255)
        if overviews:
            with rasterio.open(path, "r+") as dst:
                dst.build_overviews(overviews)
    return path


def position_rgb(height: int, width: int) -> np.ndarray:
    """uint8 RGB whose red band is the column and green band the row: a tile knows where it is."""
    rows, cols = np.mgrid[0:height, 0:width]
    blue = np.random.default_rng(0).integers(0, 256, (height, width))
    return np.stack([cols % 256, rows % 256, blue]).astype(np.uint8)


def rgb_uint8(tmp_path: Path, height: int = 40, width: int = 48, name: str = "rgb.tif") -> Path:
    return write_raster(tmp_path / name, position_rgb(height, width), photometric="RGB")


def bgrn_uint16(tmp_path: Path, nodata: int | None = 0) -> Path:
    """4 bands blue, green, red, NIR (colour interpretation set), values 100..4000, a nodata corner."""
    rng = np.random.default_rng(1)
    data = rng.integers(100, 4000, (4, 32, 40)).astype(np.uint16)
    if nodata is not None:
        data[:, :5, :7] = nodata
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    return write_raster(tmp_path / "bgrn.tif", data, colorinterp=interp, nodata=nodata)


def float_with_nan(tmp_path: Path) -> Path:
    """float32, 3 bands, no nodata value; NaN in one band of a block of pixels."""
    rng = np.random.default_rng(2)
    data = rng.normal(0.2, 0.05, (3, 24, 30)).astype(np.float32)
    data[1, 10:14, 3:9] = np.nan
    return write_raster(tmp_path / "float.tif", data)


def rgba_uint8(tmp_path: Path) -> Path:
    """RGB + alpha band, alpha 0 over the left 6 columns."""
    data = np.concatenate([position_rgb(20, 26), np.full((1, 20, 26), 255, np.uint8)])
    data[3, :, :6] = 0
    return write_raster(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")


def masked_uint8(tmp_path: Path) -> Path:
    """RGB with a per-dataset mask hiding the bottom 4 rows."""
    valid = np.ones((20, 26), bool)
    valid[-4:] = False
    return write_raster(tmp_path / "masked.tif", position_rgb(20, 26), photometric="RGB", mask=valid)


def no_crs(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "nocrs.tif", position_rgb(20, 24), crs=None, photometric="RGB")


def truncated(tmp_path: Path) -> Path:
    """A tiled, compressed GeoTIFF cut short: the header opens, the last tiles are gone."""
    data = np.random.default_rng(3).integers(0, 256, (3, 256, 256)).astype(np.uint8)
    path = write_raster(tmp_path / "truncated.tif", data, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return path


def text_named_tif(tmp_path: Path, name: str = "notes.tif") -> Path:
    path = tmp_path / name
    path.write_text("this is not a raster\n")
    return path


def write_vector(path: Path, wkts: list[str], epsg: int | None, driver: str = "GPKG") -> Path:
    """A one-layer vector file of the given WKT geometries, written with OGR."""
    from osgeo import ogr, osr

    source = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    srs = None
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = source.CreateLayer("roi", srs, ogr.wkbUnknown)
    for wkt in wkts:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    feature = layer = None  # OGR's objects must go before their file
    source = None  # closing writes the file
    return path


def write_labelled_vector(
    path: Path, features: list[tuple[str, Any]], epsg: int | None, field: str = "class", kind: str = "string"
) -> Path:
    """A one-layer GeoPackage of (WKT, class) features, the class in ``field`` as a string or an integer."""
    from osgeo import ogr, osr

    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = None
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = source.CreateLayer("labels", srs, ogr.wkbUnknown)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString if kind == "string" else ogr.OFTInteger))
    for wkt, value in features:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        feature.SetField(field, value)
        layer.CreateFeature(feature)
    feature = layer = None  # OGR's objects must go before their file
    source = None  # closing writes the file
    return path
