import json
import threading

import numpy as np
import pytest
import rasterio
from conftest_rasters import TRIANGLE_WKT, position_rgb, rgb_uint8, write_raster, write_vector
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from backend.errors import BadInput
from backend.progress import Cancelled
from backend.rasters.class_raster import CLASS_NODATA, overview_factors
from backend.rasters.raster_io import SceneReader
from backend.rasters.roi import resolve_roi, whole_raster
from backend.segmentation.sliding_window import (
    LocalStrips,
    RasterJob,
    TileGrid,
    blend_weights,
    class_argmax,
    kept_spans,
    segment_jobs,
    segment_scene,
    tile_starts,
)
from backend.segmentation.tiling import Tiling

CLASSES = [
    {"value": 1, "name": "water", "color": "#0000ff"},
    {"value": 4, "name": "building", "color": "#ff0000"},
    {"value": 7, "name": "tree", "color": "#00aa00"},
]
VALUES = np.array([c["value"] for c in CLASSES], np.uint8)
TILING = Tiling(16, 8, "hann")


def column_predict(batch):
    """One-hot of class (x // 5) % 3, with x read back from the red band: a function of absolute position."""
    x = np.rint(batch[:, 0] * 255).astype(int)
    k = (x // 5) % 3
    return np.stack([k == i for i in range(3)], axis=1).astype(np.float32)


def pixel_softmax(batch):
    """Class probabilities that depend on each pixel's own values only."""
    logits = np.stack([batch[:, 0] * 3, batch[:, 1] * 2, batch[:, 2] * 4 - 1], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def outputs_in(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("window", "tile", "stride"),
    [((0, 0, 48, 40), 16, 16), ((0, 0, 48, 40), 16, 7), ((3, 5, 37, 29), 10, 4), ((2, 2, 9, 5), 16, 8)],
)
def test_tile_windows_cover_the_roi_exactly(window, tile, stride):
    roi = Window(*window)
    cover = np.zeros((60, 60), int)
    grid = TileGrid.over(roi, Tiling(tile, stride, "hann"))
    windows = [w for index in range(grid.strips) for w in grid.strip(index)]
    for w in windows:
        assert w.width == min(tile, roi.width) and w.height == min(tile, roi.height)
        cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    col, row, width, height = window
    inside = np.zeros_like(cover, bool)
    inside[row : row + height, col : col + width] = True
    assert (cover[inside] >= 1).all() and not cover[~inside].any()
    assert max(w.col_off + w.width for w in windows) == col + width  # last tile flush with the edge


@pytest.mark.parametrize(
    ("window", "tile", "stride"),
    [((0, 0, 48, 40), 16, 12), ((0, 0, 48, 40), 16, 7), ((3, 5, 37, 29), 10, 4), ((2, 2, 9, 5), 16, 8)],
)
def test_centre_kept_spans_partition_the_roi_nearest_centre_first(window, tile, stride):
    grid = TileGrid.over(Window(*window), Tiling(tile, stride, "centre"))
    col, row, width, height = window
    cover = np.zeros((60, 60), int)
    for (top, bottom), in_tile_row in zip(grid.rows, grid.tops, strict=True):
        for (left, right), in_tile_col in zip(grid.cols, grid.lefts, strict=True):
            assert in_tile_row <= top < bottom <= in_tile_row + grid.tile_h  # kept inside the tile
            assert in_tile_col <= left < right <= in_tile_col + grid.tile_w
            cover[top:bottom, left:right] += 1
    assert (cover[row : row + height, col : col + width] == 1).all() and cover.sum() == width * height
    centres = np.array(grid.lefts) + grid.tile_w / 2
    for index, (left, right) in enumerate(grid.cols):  # each kept column is nearest its own tile's centre
        distances = np.abs(np.arange(left, right)[:, None] + 0.5 - centres[None, :])
        assert (distances[:, index] <= distances.min(axis=1) + 0.5).all()


def test_kept_spans_are_whole_tiles_under_hann_and_midpoints_under_centre():
    assert kept_spans([0, 10, 20, 24], 0, 40, 16, "hann") == ((0, 16), (10, 26), (20, 36), (24, 40))
    assert kept_spans([0, 10, 20, 24], 0, 40, 16, "centre") == ((0, 13), (13, 23), (23, 30), (30, 40))


def tile_origin_predict(batch):
    """One-hot of class (x0 // 3) % 3 over the whole tile, x0 the column of the tile's first pixel."""
    x0 = np.rint(batch[:, 0, 0, 0] * 255).astype(int)
    k = ((x0 // 3) % 3)[:, None, None]
    shape = (batch.shape[0], batch.shape[2], batch.shape[3])
    return np.stack([np.broadcast_to(k == i, shape) for i in range(3)], axis=1).astype(np.float32)


def test_centre_blend_takes_each_pixel_from_the_tile_whose_centre_is_nearest(tmp_path):
    with SceneReader(rgb_uint8(tmp_path)) as reader:
        segment_scene(
            reader, tile_origin_predict, tmp_path / "out.tif", classes=CLASSES, tiling=Tiling(16, 10, "centre")
        )
    lefts = np.array(tile_starts(0, 48, 16, 10))  # 0, 10, 20, 30, 32: centres 8, 18, 28, 38, 40
    nearest = lefts[np.abs(np.arange(48)[:, None] + 0.5 - (lefts[None, :] + 8)).argmin(axis=1)]
    assert list(nearest[[12, 13, 22, 23, 32, 33, 38, 39]]) == [0, 10, 10, 20, 20, 30, 30, 32]
    expected = VALUES[(nearest // 3) % 3]
    assert np.array_equal(read(tmp_path / "out.tif"), np.broadcast_to(expected, (40, 48)))


def test_tile_starts_step_by_stride_and_end_at_the_edge():
    assert tile_starts(0, 40, 16, 10) == [0, 10, 20, 24]
    assert tile_starts(5, 10, 16, 8) == [5]


def test_blend_weights_peak_in_the_middle_and_keep_a_floor():
    w = blend_weights(16, 12)
    assert w.shape == (16, 12) and w.min() > 0
    assert w[7:9, 5:7].min() > 0.9 and w[0, 0] < 0.01


@pytest.mark.parametrize("blend", ["hann", "centre"])
@pytest.mark.parametrize(("tile", "stride"), [(16, 16), (16, 7), (32, 21), (64, 64), (9, 1)])
def test_blending_reproduces_a_position_function_exactly(tmp_path, tile, stride, blend):
    with SceneReader(rgb_uint8(tmp_path)) as reader:
        result = segment_scene(
            reader, column_predict, tmp_path / "out.tif", classes=CLASSES, tiling=Tiling(tile, stride, blend)
        )
    cols = np.arange(48)[None, :].repeat(40, axis=0)
    assert np.array_equal(read(result.class_path), VALUES[(cols // 5) % 3])
    assert result.nodata_pixels == 0
    assert sum(result.class_pixels.values()) == 48 * 40


def test_strips_give_the_same_result_as_one_tile(tmp_path):
    data = np.random.default_rng(7).integers(0, 256, (3, 45, 38)).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", data)
    outs = {}
    for name, tile, stride in [("strips", 12, 5), ("one", 64, 64)]:
        with SceneReader(path) as reader:
            segment_scene(
                reader,
                pixel_softmax,
                tmp_path / f"{name}.tif",
                classes=CLASSES,
                tiling=Tiling(tile, stride, "hann"),
                batch_size=3,
                confidence=tmp_path / f"{name}_conf.tif",
                entropy=tmp_path / f"{name}_ent.tif",
            )
        outs[name] = [read(tmp_path / f"{name}{suffix}.tif") for suffix in ("", "_conf", "_ent")]
    assert np.array_equal(outs["strips"][0], outs["one"][0])
    np.testing.assert_allclose(outs["strips"][1], outs["one"][1], rtol=1e-5)
    np.testing.assert_allclose(outs["strips"][2], outs["one"][2], rtol=1e-4, atol=1e-6)
    probs = pixel_softmax(data[None].astype(np.float32) / 255)[0]
    assert np.array_equal(outs["one"][0], VALUES[probs.argmax(axis=0)])
    np.testing.assert_allclose(outs["one"][1], probs.max(axis=0), rtol=1e-5)
    entropy = -(probs * np.log(probs)).sum(axis=0) / np.log(3)
    np.testing.assert_allclose(outs["one"][2], entropy, rtol=1e-4)


def tile_context_softmax(batch):
    """Probabilities from each pixel and its tile's mean, so overlapping tiles disagree and blending matters."""
    context = batch.mean(axis=(2, 3), keepdims=True)
    return pixel_softmax(np.clip(batch + 0.8 * (context - 0.5), 0, 1))


@pytest.mark.parametrize(("width", "tile", "stride", "columns"), [(1300, 96, 64, 512), (1100, 600, 400, 512)])
def test_panels_cover_each_column_once_with_every_tile_that_touches_it(width, tile, stride, columns):
    grid = TileGrid.over(Window(7, 3, width, 200), Tiling(tile, stride, "hann"))
    panels = grid.panels(columns)
    assert [(p.start, p.stop) for p in panels] == [(s, min(width, s + columns)) for s in range(0, width, columns)]
    for panel in panels:
        own = range(7 + panel.start, 7 + panel.stop)
        touching = [left for left in grid.lefts if left < own.stop and left + grid.tile_w > own.start]
        assert panel.grid.lefts == tuple(touching) and panel.grid.tops == grid.tops
        assert int(panel.grid.window.col_off) + panel.offset == own.start


@pytest.mark.parametrize("blend", ["hann", "centre"])
def test_carried_panels_leave_out_the_tiles_across_their_left_edge_and_predict_each_tile_once(blend):
    grid = TileGrid.over(Window(7, 3, 1300, 200), Tiling(96, 64, blend))
    panels, carried = grid.panels(512), grid.panels(512, carry=True)
    assert [p.grid.window for p in carried] == [p.grid.window for p in panels]
    assert sum(len(p.grid.lefts) for p in carried) == len(grid.lefts) < sum(len(p.grid.lefts) for p in panels)
    for before, panel, after in zip([None, *carried], carried, [*carried[1:], None], strict=False):
        assert panel.grid.carry_in == (panel.offset if before else None)
        assert all(lo - 7 >= panel.start for lo, _ in panel.grid.cols[: 1 if before else 0])
        assert (panel.grid.carry_out is None) == (after is None)
        if after is not None:  # what goes right of the edge fits in the next panel's window
            carried_width = int(panel.grid.window.col_off + panel.grid.window.width) - (7 + panel.stop)
            assert after.offset + carried_width <= int(after.grid.window.width)


@pytest.mark.parametrize("blend", ["hann", "centre"])
def test_panels_write_the_same_bits_as_one_pass_over_the_full_width(tmp_path, monkeypatch, blend):
    data = np.random.default_rng(3).integers(0, 256, (3, 150, 1400)).astype(np.uint8)
    path = write_raster(tmp_path / "wide.tif", data)
    outs = {}
    for name, columns in [("panels", 512), ("one pass", 100_000)]:
        monkeypatch.setattr("backend.segmentation.sliding_window.PANEL_COLUMNS", columns)
        folder = tmp_path / name
        folder.mkdir()
        with SceneReader(path) as reader:
            roi = resolve_roi(reader, bbox=(300022, 2799700, 302800, 2800000))  # columns 11-1399: panels are offset
            result = segment_scene(
                reader,
                tile_context_softmax,
                folder / "c.tif",
                classes=CLASSES,
                tiling=Tiling(96, 64, blend),
                roi=roi,
                confidence=folder / "p.tif",
                entropy=folder / "e.tif",
            )
        outs[name] = [read(folder / f) for f in ("c.tif", "p.tif", "e.tif")], result.tiles
    (panelled, tiles), (whole, whole_tiles) = outs["panels"], outs["one pass"]
    assert panelled[0].shape == (150, 1389)
    for ours, theirs in zip(panelled, whole, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(panelled[0])) == 3
    assert whole_tiles == tiles == 44  # 22 x 2 tiles: those across the panel edges carried, not predicted twice


def test_roi_output_carries_crs_and_window_transform(tmp_path):
    path = rgb_uint8(tmp_path)
    with SceneReader(path) as reader:
        roi = resolve_roi(reader, bbox=(300010, 2799950, 300030, 2799990))
        result = segment_scene(
            reader,
            column_predict,
            tmp_path / "out.tif",
            classes=CLASSES,
            tiling=Tiling(8, 5, "hann"),
            roi=roi,
            confidence=tmp_path / "conf.tif",
        )
    for out in (result.class_path, result.confidence_path):
        with rasterio.open(out) as ds:
            assert ds.crs == reader.crs
            assert ds.transform == window_transform(Window(5, 5, 10, 20), reader.transform)
            assert (ds.width, ds.height) == (10, 20)
    cols = np.arange(5, 15)[None, :].repeat(20, axis=0)
    assert np.array_equal(read(result.class_path), VALUES[(cols // 5) % 3])


def test_polygon_roi_and_nodata_are_written_255(tmp_path):
    data = position_rgb(40, 48)
    valid = np.ones((40, 48), bool)
    valid[:, 30:] = False  # nodata on the right
    path = write_raster(tmp_path / "masked.tif", data, photometric="RGB", mask=valid)
    vector = write_vector(tmp_path / "roi.gpkg", [TRIANGLE_WKT], 32640)
    with SceneReader(path) as reader:
        roi = resolve_roi(reader, vector_path=vector)
        expected_valid = roi.mask(roi.window) & valid[4:35, 5:36]
        result = segment_scene(
            reader,
            column_predict,
            tmp_path / "out.tif",
            classes=CLASSES,
            tiling=Tiling(16, 9, "hann"),
            roi=roi,
            confidence=tmp_path / "conf.tif",
            entropy=tmp_path / "ent.tif",
        )
    classes, conf, ent = (read(p) for p in (result.class_path, result.confidence_path, result.entropy_path))
    cols = np.arange(5, 36)[None, :].repeat(31, axis=0)
    assert np.array_equal(classes == CLASS_NODATA, ~expected_valid)
    assert np.array_equal(classes[expected_valid], VALUES[(cols // 5) % 3][expected_valid])
    assert np.isnan(conf[~expected_valid]).all() and np.allclose(conf[expected_valid], 1.0)
    assert np.isnan(ent[~expected_valid]).all() and np.allclose(ent[expected_valid], 0.0, atol=1e-6)
    assert result.nodata_pixels == (~expected_valid).sum()


def test_tiles_without_valid_pixels_are_not_predicted(tmp_path):
    data = position_rgb(40, 48)
    valid = np.zeros((40, 48), bool)
    valid[:8, :8] = True
    path = write_raster(tmp_path / "sparse.tif", data, photometric="RGB", mask=valid)
    seen = []

    def predict(batch):
        seen.append(len(batch))
        return column_predict(batch)

    with SceneReader(path) as reader:
        result = segment_scene(reader, predict, tmp_path / "out.tif", classes=CLASSES, tiling=Tiling(16, 16, "hann"))
    assert result.tiles == sum(seen) == 1


def test_class_raster_has_colours_names_metadata_and_overviews(tmp_path):
    from osgeo import gdal

    path = rgb_uint8(tmp_path, height=40, width=600)
    with SceneReader(path) as reader:
        segment_scene(
            reader,
            column_predict,
            tmp_path / "out.tif",
            classes=CLASSES,
            tiling=Tiling(64, 48, "hann"),
            metadata={"MODEL": "tiny-vit", "ADAPTER": {"kind": "lora", "rank": 4}},
        )
        stretch = reader.stretch.to_dict()
    with rasterio.open(tmp_path / "out.tif") as ds:
        colormap = ds.colormap(1)
        tags = ds.tags()
        assert ds.nodata == CLASS_NODATA and ds.dtypes[0] == "uint8"
        assert ds.profile["tiled"] and ds.profile["blockxsize"] == 512
        assert ds.profile["compress"] == "deflate"
        assert ds.overviews(1) == overview_factors(600, 40) == [2, 4]
    assert colormap[1][:3] == (0, 0, 255) and colormap[4][:3] == (255, 0, 0) and colormap[7][:3] == (0, 170, 0)
    assert tags["MODEL"] == "tiny-vit" and json.loads(tags["ADAPTER"]) == {"kind": "lora", "rank": 4}
    assert json.loads(tags["STRETCH"]) == stretch
    assert tags["BAND_MAPPING"] == "1,2,3"
    assert json.loads(tags["CLASSES"])[1] == {"value": 4, "name": "building", "color": "#FF0000"}
    dataset = gdal.Open(str(tmp_path / "out.tif"))  # must outlive the band with GDAL < 3.8
    band = dataset.GetRasterBand(1)
    assert band.GetDescription() == "class"  # GDAL 3.6 GTiff loads the .aux.xml only on such a first call
    names = band.GetCategoryNames()
    assert (names[1], names[4], names[7]) == ("water", "building", "tree")
    rat = band.GetDefaultRAT()
    columns = [rat.GetNameOfCol(i) for i in range(rat.GetColumnCount())]
    assert columns == ["Value", "Class", "Red", "Green", "Blue"]
    assert [(rat.GetValueAsInt(r, 0), rat.GetValueAsString(r, 1)) for r in range(3)] == [
        (1, "water"),
        (4, "building"),
        (7, "tree"),
    ]
    info = gdal.Info(str(tmp_path / "out.tif"))
    assert "Categories:" in info and "building" in info and "Overviews: 300x20, 150x10" in info
    assert outputs_in(tmp_path) == ["out.tif", "out.tif.aux.xml", "rgb.tif"]


def test_cancel_mid_run_leaves_no_file(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def cancel_on_third_batch():
        calls.append(1)
        return len(calls) >= 3

    with SceneReader(rgb_uint8(source)) as reader, pytest.raises(Cancelled):
        segment_scene(
            reader,
            column_predict,
            out / "classes.tif",
            classes=CLASSES,
            tiling=Tiling(16, 8, "hann"),
            batch_size=2,
            confidence=out / "conf.tif",
            entropy=out / "ent.tif",
            is_cancelled=cancel_on_third_batch,
        )
    assert outputs_in(out) == [] and not strip_threads()


def strip_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "crossearth-strips"]


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_the_local_executor_writes_the_same_bits_with_its_stages_in_threads_or_in_a_row(tmp_path, ahead):
    data = np.random.default_rng(5).integers(0, 256, (3, 70, 90)).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", data)
    with SceneReader(path) as reader:
        roi = whole_raster(reader)
        job = RasterJob.plan(
            reader,
            roi,
            Tiling(24, 16, "hann"),
            n_classes=3,
            batch_size=2,
            output=tmp_path / f"{ahead}.tif",
            confidence=tmp_path / f"{ahead}_p.tif",
        )
        expected = tmp_path / "one_tile.tif"
        segment_scene(reader, tile_context_softmax, expected, classes=CLASSES, tiling=Tiling(24, 16, "hann"))
    reports = []
    (result,) = segment_jobs(
        [job], LocalStrips(tile_context_softmax, ahead), CLASSES, lambda fraction, message: reports.append(message)
    )
    assert result.tiles == 4 * 6 and reports[0] == "segmenting 24 tiles of 1 raster(s) in this process"
    assert np.array_equal(read(result.class_path), read(expected))
    assert not strip_threads()


def test_a_reader_that_fails_in_its_thread_fails_the_run_and_stops_every_stage(tmp_path, monkeypatch):
    def broken_read(self, window):
        raise OSError("disk gone")

    monkeypatch.setattr(SceneReader, "read", broken_read)
    with SceneReader(rgb_uint8(tmp_path)) as reader, pytest.raises(OSError, match="disk gone"):
        segment_scene(reader, column_predict, tmp_path / "out.tif", classes=CLASSES, tiling=TILING)
    assert outputs_in(tmp_path) == ["rgb.tif"] and not strip_threads()


def test_failing_predict_leaves_no_file_and_keeps_an_existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "classes.tif").write_bytes(b"previous")

    def broken(batch):
        return np.zeros((len(batch), 2, 16, 16), np.float32)  # two channels for three classes

    with SceneReader(rgb_uint8(tmp_path)) as reader, pytest.raises(ValueError, match="expected"):
        segment_scene(
            reader, broken, out / "classes.tif", classes=CLASSES, tiling=Tiling(16, 16, "hann"), overwrite=True
        )
    assert outputs_in(out) == ["classes.tif"] and (out / "classes.tif").read_bytes() == b"previous"


def test_existing_output_needs_overwrite_and_is_checked_before_any_prediction(tmp_path):
    (tmp_path / "out.tif").write_bytes(b"previous")

    def never(batch):
        raise AssertionError("predict must not run")

    with SceneReader(rgb_uint8(tmp_path)) as reader:
        with pytest.raises(BadInput, match="output exists"):
            segment_scene(reader, never, tmp_path / "out.tif", classes=CLASSES, tiling=Tiling(16, 16, "hann"))
        segment_scene(
            reader, column_predict, tmp_path / "out.tif", classes=CLASSES, tiling=Tiling(16, 16, "hann"), overwrite=True
        )
    assert read(tmp_path / "out.tif").shape == (40, 48)


def test_progress_is_monotone_and_ends_at_one(tmp_path):
    reports = []
    with SceneReader(rgb_uint8(tmp_path)) as reader:
        segment_scene(
            reader,
            column_predict,
            tmp_path / "out.tif",
            classes=CLASSES,
            tiling=Tiling(16, 8, "hann"),
            progress=lambda f, m: reports.append(f),
        )
    assert reports == sorted(reports) and reports[0] == 0.0 and reports[-1] == 1.0
    assert len(reports) > 5


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"batch_size": 0}, "batch size"),
        ({"classes": [{"value": 255, "name": "x", "color": "#000000"}]}, "0..254"),
        ({"classes": [{"value": 1, "name": "x", "color": "red"}]}, "#RRGGBB"),
        ({"classes": [{"value": 1, "name": "x", "color": "#000000"}] * 2}, "repeat"),
    ],
)
def test_bad_parameters_are_bad_input(tmp_path, kwargs, problem):
    with SceneReader(rgb_uint8(tmp_path)) as reader, pytest.raises(BadInput, match=problem):
        segment_scene(reader, column_predict, tmp_path / "out.tif", **{"classes": CLASSES, "tiling": TILING, **kwargs})
    assert outputs_in(tmp_path) == ["rgb.tif"]


def test_output_may_not_replace_the_input(tmp_path):
    path = rgb_uint8(tmp_path)
    with SceneReader(path) as reader, pytest.raises(BadInput, match="replace the input"):
        segment_scene(reader, column_predict, path, classes=CLASSES, tiling=TILING, overwrite=True)


@pytest.mark.parametrize(
    ("tile", "stride", "blend", "problem"),
    [
        (16, 20, "hann", "stride 20: must lie in 1..16"),
        (0, 1, "hann", "tile size 0"),
        (16, 0, "centre", "stride 0"),
        (16, 8, "middle", "blend 'middle': expected one of hann, centre"),
        (16.5, 8, "hann", "tile size 16.5"),
    ],
)
def test_a_bad_tiling_is_one_line_of_bad_input(tile, stride, blend, problem):
    with pytest.raises(BadInput, match=problem) as error:
        Tiling(tile, stride, blend)
    assert "\n" not in str(error.value)


def test_a_tiling_adjusted_by_the_user_keeps_the_cards_stride_to_tile_ratio():
    card = Tiling(512, 448, "centre")
    assert card.adjusted() == card
    assert card.adjusted(stride=256) == Tiling(512, 256, "centre")
    assert card.adjusted(tile=256) == Tiling(256, 224, "centre")
    assert card.adjusted(tile=256, stride=100, blend="hann") == Tiling(256, 100, "hann")
    with pytest.raises(BadInput, match="stride 600"):
        card.adjusted(stride=600)


def test_class_argmax_equals_numpys_argmax_over_the_class_axis_ties_to_the_lower_class():
    rng = np.random.default_rng(3)
    scores = rng.random((5, 37, 53), dtype=np.float32)
    scores[:, :4] = np.round(scores[:, :4])  # many ties: 0s and 1s
    labels = class_argmax(scores)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, scores.argmax(axis=0))
    assert (labels[:4] < 4).any() and (labels[4:] == 4).any()
