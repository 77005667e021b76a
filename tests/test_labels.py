"""An analyst's labels as polygons, points or lines in any CRS: burnt into the scene's pixels, or refused."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from backend.adaptation.labels import is_vector, read_label_shapes
from backend.analysis.metrics import IGNORE_INDEX
from backend.errors import BadInput
from tests import conftest_rasters as rasters
from tests.conftest_rasters import write_labelled_vector
from training.dubai import CLASSES

# the 48 x 40 test raster: UTM 40N, upper left (300000, 2800000), 2 m pixels
WHOLE = Window(0, 0, 48, 40)


def utm_square(col0: int, row0: int, col1: int, row1: int) -> list[tuple[float, float]]:
    """The ring of pixel columns col0..col1-1 and rows row0..row1-1, in UTM."""
    x0, x1 = 300000.0 + 2 * col0, 300000.0 + 2 * col1
    y0, y1 = 2800000.0 - 2 * row0, 2800000.0 - 2 * row1
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def wkt_polygon(ring: list[tuple[float, float]]) -> str:
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


@pytest.fixture
def scene(tmp_path):
    return rasters.rgb_uint8(tmp_path)


def test_polygons_in_another_crs_label_exactly_the_pixels_they_cover(tmp_path, scene):
    ring = utm_square(4, 6, 14, 11)
    lons, lats = warp_transform("EPSG:32640", "EPSG:4326", *zip(*ring, strict=True))
    path = write_labelled_vector(
        tmp_path / "labels.gpkg", [(wkt_polygon(list(zip(lons, lats, strict=True))), "road")], epsg=4326
    )
    with rasterio.open(scene) as raster:
        labels = read_label_shapes(path, raster, CLASSES)
    burnt = labels.burn(WHOLE)
    assert set(np.unique(burnt)) == {2, IGNORE_INDEX}  # "road", in any case, is class 2
    rows, cols = np.nonzero(burnt == 2)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 4, 13)


def test_points_and_lines_are_buffered_by_metres_and_values_name_classes(tmp_path, scene):
    point = "POINT (300050.0 2799950.0)"  # pixel (25, 25)'s corner
    line = "LINESTRING (300004.0 2799991.0, 300090.0 2799991.0)"  # through the centres of row 4
    path = write_labelled_vector(tmp_path / "labels.gpkg", [(point, 4), (line, 0)], epsg=32640, kind="integer")
    with rasterio.open(scene) as raster:
        burnt = read_label_shapes(path, raster, CLASSES, buffer_m=5.0).burn(WHOLE)
    assert (burnt == 4).sum() == 16  # the pixel centres within 5 m of a pixel corner: a 4 x 4 disk
    assert (burnt[:, 3:44] == 0).any(axis=1).nonzero()[0].tolist() == [2, 3, 4, 5, 6]  # 5 m: 2.5 px each side


def test_a_tile_is_centred_on_every_labelled_shape(tmp_path, scene):
    path = write_labelled_vector(
        tmp_path / "labels.gpkg", [(wkt_polygon(utm_square(40, 30, 44, 34)), "Water")], epsg=32640
    )
    with rasterio.open(scene) as raster:
        labels = read_label_shapes(path, raster, CLASSES)
    assert labels.pixel_windows(16, 48, 40) == [Window(32, 24, 16, 16)]


def test_vector_files_are_told_from_rasters(tmp_path, scene):
    path = write_labelled_vector(tmp_path / "labels.gpkg", [(wkt_polygon(utm_square(0, 0, 4, 4)), "Land")], 32640)
    assert is_vector(path) and not is_vector(scene) and not is_vector(tmp_path / "missing.gpkg")


@pytest.mark.parametrize(
    ("features", "field", "message"),
    [
        ([("POINT (300050 2799950)", "Land")], "landcover", "no field 'landcover' (fields: class)"),
        (
            [("POINT (300050 2799950)", "Forest")],
            "class",
            "feature 1 has class 'Forest', which the model lacks (its classes: 0 Building, 1 Land, 2 Road, "
            "3 Vegetation, 4 Water)",
        ),
        ([("POINT (500000 2000000)", "Land")], "class", "no labelled shape covers a pixel of the scene"),
    ],
)
def test_bad_label_files_are_refused_naming_the_file_and_the_problem(tmp_path, scene, features, field, message):
    path = write_labelled_vector(tmp_path / "labels.gpkg", features, epsg=32640)
    with rasterio.open(scene) as raster, pytest.raises(BadInput, match=str(path)) as error:
        read_label_shapes(path, raster, CLASSES, field=field)
    assert message in str(error.value)


def test_labels_outside_the_region_of_interest_are_refused(tmp_path, scene):
    path = write_labelled_vector(tmp_path / "labels.gpkg", [(wkt_polygon(utm_square(0, 0, 4, 4)), "Land")], 32640)
    with rasterio.open(scene) as raster, pytest.raises(BadInput, match="region of interest"):
        read_label_shapes(path, raster, CLASSES, within=Window(20, 20, 10, 10))


def test_a_third_of_each_class_s_shapes_is_held_out_by_shape_and_a_lone_shape_trains(tmp_path, scene):
    squares = [(c, 0, c + 2, 2) for c in range(0, 40, 4)]
    classes = ["Land"] * 5 + ["Water"] + ["Road"] * 2 + ["Building"] * 2
    features = [(wkt_polygon(utm_square(*square)), name) for square, name in zip(squares, classes, strict=True)]
    path = write_labelled_vector(tmp_path / "labels.gpkg", features, epsg=32640)
    with rasterio.open(scene) as raster:
        train, held_out = read_label_shapes(path, raster, CLASSES).split()
    held_out_classes = sorted(value for _, value in held_out.shapes)
    assert held_out_classes == [0, 1, 2]  # Building's 2nd, Land's 3rd, Road's 2nd; the lone Water trains
    assert len(train.shapes) == 7 and sorted(v for _, v in train.shapes).count(4) == 1
    burnt_train, burnt_held = train.burn(WHOLE), held_out.burn(WHOLE)
    assert not ((burnt_train != IGNORE_INDEX) & (burnt_held != IGNORE_INDEX)).any()


def test_folds_hold_every_shape_out_once_and_deal_each_class_round_them(tmp_path, scene):
    squares = [(c, 0, c + 2, 2) for c in range(0, 28, 4)]
    classes = ["Land"] * 4 + ["Water"] + ["Road"] * 2
    features = [(wkt_polygon(utm_square(*square)), name) for square, name in zip(squares, classes, strict=True)]
    path = write_labelled_vector(tmp_path / "labels.gpkg", features, epsg=32640)
    with rasterio.open(scene) as raster:
        shapes = read_label_shapes(path, raster, CLASSES)
    folds = shapes.folds(3)
    held_out = [sorted(value for _, value in out.shapes) for _, out in folds]
    assert held_out == [[1, 1, 4], [1, 2], [1, 2]]  # Land 4 shapes, Road 2, Water 1, dealt in class order
    for train, out in folds:
        assert len(train.shapes) + len(out.shapes) == 7
        assert not set(map(id, train.shapes)) & set(map(id, out.shapes))
    assert sorted(v for _, out in folds for _, v in out.shapes) == sorted(v for _, v in shapes.shapes)
