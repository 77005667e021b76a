import numpy as np
import pytest
from conftest_rasters import CRS_UTM, TRANSFORM, TRIANGLE, no_crs, rgb_uint8, text_named_tif, write_vector
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from backend.contract import parse_bbox
from backend.errors import BadInput
from backend.rasters.raster_io import inspect_raster
from backend.rasters.roi import resolve_roi

# The test raster: 48 x 40 pixels of 2 m from (300000, 2800000): x 300000..300096, y 2799920..2800000.


def wkt(shape):
    ring = ", ".join(f"{x!r} {y!r}" for x, y in shape["coordinates"][0])
    return f"POLYGON (({ring}))"


def to_wgs84(shape):
    return transform_geom(CRS_UTM, "EPSG:4326", shape)


def window_tuple(window):
    return int(window.col_off), int(window.row_off), int(window.width), int(window.height)


@pytest.fixture
def info(tmp_path):
    return inspect_raster(rgb_uint8(tmp_path))


def test_no_bbox_no_vector_is_the_whole_raster(info):
    roi = resolve_roi(info)
    assert window_tuple(roi.window) == (0, 0, 48, 40)
    assert roi.mask(Window(0, 0, 48, 40)).all()


def test_bbox_in_raster_crs_gives_the_enclosing_pixels(info):
    assert window_tuple(resolve_roi(info, bbox=(300010, 2799950, 300030, 2799990)).window) == (5, 5, 10, 20)
    assert window_tuple(resolve_roi(info, bbox=(300011, 2799951, 300029.5, 2799989)).window) == (5, 5, 10, 20)
    # clipped to the raster
    assert window_tuple(resolve_roi(info, bbox=(299000, 2799950, 300030, 2801000)).window) == (0, 0, 15, 25)


def test_bbox_in_wgs84_is_reprojected(info):
    lonlat = transform_bounds(CRS_UTM, "EPSG:4326", 300010, 2799950, 300030, 2799990)
    col, row, width, height = window_tuple(resolve_roi(info, bbox=lonlat, bbox_crs="EPSG:4326").window)
    # the lon/lat box encloses the UTM box, slightly rotated: at most one pixel more on each side
    assert 4 <= col <= 5 and 4 <= row <= 5
    assert 15 <= col + width <= 16 and 25 <= row + height <= 26


def test_mask_is_false_outside_the_roi_window(info):
    roi = resolve_roi(info, bbox=(300010, 2799950, 300030, 2799990))
    mask = roi.mask(Window(0, 0, 20, 30))
    expected = np.zeros((30, 20), bool)
    expected[5:25, 5:15] = True
    assert np.array_equal(mask, expected)


def expected_triangle_mask(window):
    return geometry_mask(
        [TRIANGLE], (int(window.height), int(window.width)), window_transform(window, TRANSFORM), invert=True
    )


@pytest.mark.parametrize(
    ("name", "driver", "epsg", "shape"),
    [
        ("roi.gpkg", "GPKG", 4326, to_wgs84(TRIANGLE)),
        ("roi.geojson", "GeoJSON", 4326, to_wgs84(TRIANGLE)),
        ("roi_utm.gpkg", "GPKG", 32640, TRIANGLE),
    ],
)
def test_polygon_roi_masks_pixels_inside_the_polygon(tmp_path, info, name, driver, epsg, shape):
    path = write_vector(tmp_path / name, [wkt(shape)], epsg, driver)
    roi = resolve_roi(info, vector_path=path)
    assert window_tuple(roi.window) == (5, 4, 31, 31)  # x 300010.3..300071.1, y 2799931.9..2799990.7
    whole = Window(0, 0, 48, 40)
    assert np.array_equal(roi.mask(whole), expected_triangle_mask(whole))
    assert roi.mask(whole).sum() > 100


def test_bbox_and_polygon_intersect(tmp_path, info):
    path = write_vector(tmp_path / "roi.gpkg", [wkt(TRIANGLE)], 32640)
    roi = resolve_roi(info, bbox=(300000, 2799960, 300096, 2800000), vector_path=path)
    assert window_tuple(roi.window) == (5, 4, 31, 16)
    whole = Window(0, 0, 48, 40)
    expected = expected_triangle_mask(whole)
    expected[20:] = False
    assert np.array_equal(roi.mask(whole), expected)


def test_parse_bbox():
    assert parse_bbox("1,2, 3,4.5") == (1.0, 2.0, 3.0, 4.5)
    for bad in ("1,2,3", "a,b,c,d"):
        with pytest.raises(BadInput, match="bbox"):
            parse_bbox(bad)


def test_bbox_errors(info):
    with pytest.raises(BadInput, match="outside the raster"):
        resolve_roi(info, bbox=(200000, 2700000, 200100, 2700100))
    with pytest.raises(BadInput, match="empty ROI"):
        resolve_roi(info, bbox=(300030, 2799950, 300010, 2799990))
    with pytest.raises(BadInput, match="not a CRS"):
        resolve_roi(info, bbox=(0, 0, 1, 1), bbox_crs="EPSG:not-a-code")


def test_bbox_crs_on_a_raster_without_crs_is_refused(tmp_path):
    info = inspect_raster(no_crs(tmp_path))
    assert info.crs is None
    with pytest.raises(BadInput, match="has no CRS"):
        resolve_roi(info, bbox=(0, 0, 1, 1), bbox_crs=CRS.from_epsg(4326))


def test_vector_errors(tmp_path, info):
    with pytest.raises(BadInput, match=r"missing\.gpkg: no such file"):
        resolve_roi(info, vector_path=tmp_path / "missing.gpkg")
    with pytest.raises(BadInput, match=r"notes\.tif: not a vector file"):
        resolve_roi(info, vector_path=text_named_tif(tmp_path))
    points = write_vector(tmp_path / "points.gpkg", ["POINT (300020 2799960)"], 32640)
    with pytest.raises(BadInput, match=r"points\.gpkg: has no polygons"):
        resolve_roi(info, vector_path=points)
    far = write_vector(tmp_path / "far.gpkg", ["POLYGON ((0 0, 10 0, 10 10, 0 0))"], 32640)
    with pytest.raises(BadInput, match="outside the raster"):
        resolve_roi(info, vector_path=far)
    sliver = "POLYGON ((300010.2 2799990.2, 300010.8 2799990.2, 300010.8 2799990.8, 300010.2 2799990.2))"
    with pytest.raises(BadInput, match="cover no pixel centre"):
        resolve_roi(info, vector_path=write_vector(tmp_path / "sliver.gpkg", [sliver], 32640))
