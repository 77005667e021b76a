import json

import numpy as np
import pytest
import rasterio
from conftest_rasters import (
    bgrn_uint16,
    float_with_nan,
    masked_uint8,
    no_crs,
    rgb_uint8,
    rgba_uint8,
    text_named_tif,
    truncated,
    write_raster,
)
from rasterio.windows import Window

from backend.contract import parse_ints as parse_band_mapping
from backend.errors import BadInput
from backend.rasters.raster_io import (
    NoCrsWarning,
    SceneReader,
    Stretch,
    check_band_mapping,
    default_band_mapping,
    inspect_raster,
)


def test_inspect_describes_the_raster(tmp_path):
    info = inspect_raster(bgrn_uint16(tmp_path))
    assert (info.width, info.height, info.count) == (40, 32, 4)
    assert info.dtypes == ("uint16",) * 4
    assert info.crs == rasterio.crs.CRS.from_epsg(32640)
    assert info.transform.c == 300000.0 and info.transform.a == 2.0
    assert info.nodata == 0
    assert info.colorinterp == ("blue", "green", "red", "undefined")
    assert info.alpha_band is None and not info.has_dataset_mask
    assert info.overview_count == 0


def test_inspect_finds_alpha_mask_and_overviews(tmp_path):
    assert inspect_raster(rgba_uint8(tmp_path)).alpha_band == 4
    assert inspect_raster(masked_uint8(tmp_path)).has_dataset_mask
    data = np.ones((1, 64, 64), np.uint16)
    assert inspect_raster(write_raster(tmp_path / "ovr.tif", data, overviews=[2, 4])).overview_count == 2


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p / "missing.tif", "no such file"),
        (lambda p: p, "is a folder"),
        (text_named_tif, "not a raster GDAL can read"),
        (truncated, "corrupt or truncated"),
    ],
)
def test_unreadable_rasters_raise_bad_input_naming_the_file(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(BadInput, match=problem) as caught:
        inspect_raster(path)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_truncated_raster_fails_in_the_scene_reader_too(tmp_path):
    with pytest.raises(BadInput, match="truncated"):
        SceneReader(truncated(tmp_path))


def test_default_band_mapping_follows_colour_interpretation(tmp_path):
    info = inspect_raster(bgrn_uint16(tmp_path))
    assert default_band_mapping(info) == [3, 2, 1]
    assert default_band_mapping(info, n_inputs=4) == [3, 2, 1, 4]


def test_default_band_mapping_without_colour_takes_the_first_bands_and_skips_alpha(tmp_path):
    assert default_band_mapping(inspect_raster(float_with_nan(tmp_path))) == [1, 2, 3]
    info = inspect_raster(rgba_uint8(tmp_path))
    assert default_band_mapping(info) == [1, 2, 3]
    with pytest.raises(BadInput, match=r"rgba\.tif: has 3 data band"):
        default_band_mapping(info, n_inputs=4)


def test_band_mapping_parse_and_check(tmp_path):
    info = inspect_raster(bgrn_uint16(tmp_path))
    assert parse_band_mapping("3, 2,1") == [3, 2, 1]
    assert check_band_mapping(info, [4, 3, 2], 3) == [4, 3, 2]
    for bad in ("3,x,1", "", "0,1,2"):
        with pytest.raises(BadInput, match="band mapping"):
            parse_band_mapping(bad)
    with pytest.raises(BadInput, match=r"bgrn\.tif: has 4 band.*band 5"):
        check_band_mapping(info, [5, 2, 1])
    with pytest.raises(BadInput, match=r"bgrn\.tif: .*the model needs 3"):
        check_band_mapping(info, [1, 2], 3)


def test_uint8_is_divided_by_255(tmp_path):
    with SceneReader(rgb_uint8(tmp_path)) as reader:
        image, valid = reader.read(Window(0, 0, 48, 40))
        raw = reader.dataset.read()
    assert reader.stretch.method == "uint8"
    assert image.dtype == np.float32 and valid.all()
    np.testing.assert_allclose(image, raw / 255.0, atol=1e-6)


def test_uint16_percentile_stretch_ignores_nodata_and_is_recorded(tmp_path):
    path = bgrn_uint16(tmp_path)
    with rasterio.open(path) as ds:
        raw = ds.read([3, 2, 1]).astype(float)
    valid = raw[0] != 0
    with SceneReader(path) as reader:
        image, mask = reader.read(Window(0, 0, 40, 32))
    stretch = reader.stretch
    assert stretch.method == "percentile" and stretch.percentiles == (2.0, 98.0)
    np.testing.assert_allclose(stretch.low, np.percentile(raw[:, valid], 2, axis=1))
    np.testing.assert_allclose(stretch.high, np.percentile(raw[:, valid], 98, axis=1))
    assert image.min() == 0.0 and image.max() == 1.0
    assert np.array_equal(mask, valid)
    assert not image[:, ~mask].any()
    assert Stretch.from_dict(json.loads(json.dumps(stretch.to_dict()))) == stretch


def test_stretch_is_estimated_from_overviews_when_present(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 10000, (3, 256, 256)).astype(np.uint16)
    with SceneReader(write_raster(tmp_path / "ovr.tif", data, overviews=[2, 4])) as reader:
        stretch = reader.stretch
    assert stretch.source == "overview"
    np.testing.assert_allclose(stretch.low, 200, rtol=0.25)
    np.testing.assert_allclose(stretch.high, 9800, rtol=0.02)


def test_stretch_of_a_large_raster_without_overviews_samples_windows(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 10000, (3, 1500, 1500)).astype(np.uint16)
    path = write_raster(tmp_path / "big.tif", data, tiled=True, blockxsize=256, blockysize=256)
    read_pixels = []
    original = rasterio.io.DatasetReader.read

    def counting_read(self, indexes=None, *args, window=None, **kwargs):
        out = original(self, indexes, *args, window=window, **kwargs)
        read_pixels.append(out.shape[-1] * out.shape[-2])
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", counting_read)
    with SceneReader(path) as reader:
        stretch = reader.stretch
    monkeypatch.undo()
    assert stretch.source == "windows"
    assert sum(read_pixels) < 1500 * 1500 * 0.6  # a sample, not the whole raster
    np.testing.assert_allclose(stretch.high, 9800, rtol=0.02)


@pytest.mark.parametrize(
    ("make", "invalid"),
    [
        (bgrn_uint16, (slice(0, 5), slice(0, 7))),  # nodata value
        (float_with_nan, (slice(10, 14), slice(3, 9))),  # NaN without a nodata value
        (rgba_uint8, (slice(None), slice(0, 6))),  # alpha band
        (masked_uint8, (slice(-4, None), slice(None))),  # dataset mask
    ],
)
def test_nodata_from_every_source(tmp_path, make, invalid):
    with SceneReader(make(tmp_path)) as reader:
        image, valid = reader.read(Window(0, 0, reader.width, reader.height))
    expected = np.ones((reader.height, reader.width), bool)
    expected[invalid] = False
    assert np.array_equal(valid, expected)
    assert np.isfinite(image).all() and not image[:, ~valid].any()


def test_boundless_window_marks_the_outside_invalid(tmp_path):
    with SceneReader(rgb_uint8(tmp_path)) as reader:
        inner, _ = reader.read(Window(40, 30, 8, 10))
        image, valid = reader.read(Window(40, 30, 16, 16))
    assert image.shape == (3, 16, 16)
    assert valid[:10, :8].all() and not valid[10:].any() and not valid[:, 8:].any()
    assert np.array_equal(image[:, :10, :8], inner)
    assert not image[:, 10:].any()


def test_raster_without_crs_warns_and_works_in_pixel_space(tmp_path):
    with pytest.warns(NoCrsWarning, match="nocrs.tif: no CRS"), SceneReader(no_crs(tmp_path)) as reader:
        image, valid = reader.read(Window(0, 0, 24, 20))
    assert reader.crs is None and valid.all() and image.shape == (3, 20, 24)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_entirely_nodata_raster_is_bad_input(tmp_path, dtype):
    data = np.zeros((3, 16, 16), dtype)
    path = write_raster(tmp_path / "empty.tif", data, nodata=0)
    with pytest.raises(BadInput, match=r"empty\.tif: every pixel is nodata"):
        SceneReader(path)
