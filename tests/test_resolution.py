"""--resolution: scenes are read at the model's ground resolution and the outputs land on the input's grid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from backend.analysis.metrics import confusion_matrix, scores
from backend.cli import run_in_process
from backend.contract import AdaptOptions, Scene
from backend.errors import BadInput
from backend.jobs import scene_samples
from backend.model.registry import BUILTIN_MODELS_DIR, ModelCard
from backend.rasters.raster_io import inspect_raster
from backend.rasters.resample import choose_scale, pixel_size_m
from tests import conftest_rasters as rasters
from tests.conftest import write_tiny_model_folder

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "dubai_tile6.tif"  # 1.5 m pixels (assigned), labels beside it
SAMPLE_LABELS = REPO / "resources" / "samples" / "dubai_tile6_labels.tif"


def run(argv: list) -> tuple[int, list[dict]]:
    events: list[dict] = []
    return run_in_process([str(a) for a in argv], events.append, lambda: False), events


@pytest.fixture(scope="module")
def metre_model(tmp_path_factory) -> Path:
    """The tiny test model with a card that says it was trained on 1 m pixels."""
    folder = write_tiny_model_folder(tmp_path_factory.mktemp("models") / "metre-model", "metre-model")
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps({**card, "resolution_m": 1.0}))
    return folder


def half_metre_scene(folder: Path, nodata_corner: bool = False) -> Path:
    """200 x 240 px of 0.5 m (red = column, green = row), optionally a 30 px nodata corner."""
    data = rasters.position_rgb(200, 240)
    mask = None
    if nodata_corner:
        mask = np.ones((200, 240), bool)
        mask[:30, :30] = False
    transform = from_origin(300000.0, 2800000.0, 0.5, 0.5)
    return rasters.write_raster(folder / "half.tif", data, transform=transform, mask=mask, photometric="RGB")


def test_the_card_states_the_resolution_and_the_default_models_is_not_known(metre_model):
    assert ModelCard.read(metre_model).resolution_m == 1.0
    assert ModelCard.read(BUILTIN_MODELS_DIR / "dubai-hybrid-vit").resolution_m is None


def test_pixel_size_in_metres_in_projected_feet_and_geographic_crss(tmp_path):
    data = rasters.position_rgb(10, 10)
    utm = inspect_raster(half_metre_scene(tmp_path))
    feet = inspect_raster(
        rasters.write_raster(tmp_path / "ft.tif", data, crs="EPSG:2249", transform=from_origin(7e5, 3e6, 1, 1))
    )
    degrees = from_origin(55.0, 25.005, 1e-5, 1e-5)  # centred on 25 degrees north, near Dubai
    geographic = inspect_raster(rasters.write_raster(tmp_path / "wgs.tif", data, crs="EPSG:4326", transform=degrees))
    assert pixel_size_m(utm) == (0.5, 0.5)
    assert pixel_size_m(feet) == pytest.approx((0.3048006, 0.3048006))
    # a degree at 25 N: 100 950 m along the parallel, 110 771 m along the meridian (WGS 84)
    assert pixel_size_m(geographic) == pytest.approx((1.0095, 1.1077), rel=1e-3)
    assert pixel_size_m(inspect_raster(rasters.no_crs(tmp_path))) is None


def test_auto_native_and_metres_choose_the_grid_the_scene_is_read_on(tmp_path):
    info = inspect_raster(half_metre_scene(tmp_path))
    assert not choose_scale(info, "auto", None, 64).resamples  # a card without a resolution: as it is
    assert not choose_scale(info, "native", 1.0, 64).resamples
    auto = choose_scale(info, "auto", 1.0, 64)
    assert (auto.target_m, auto.factor, auto.width, auto.height) == (1.0, 2.0, 120, 100)
    finer = choose_scale(info, "0.25", 1.0, 64)
    assert (finer.factor, finer.width, finer.height) == (0.5, 480, 400)
    assert not choose_scale(info, "0.51", None, 64).resamples  # within 5 %: read as it is
    with pytest.raises(BadInput, match="under one 64-pixel tile"):
        choose_scale(info, "5", None, 64)  # 24 x 20 px
    small = inspect_raster(rasters.rgb_uint8(tmp_path))  # 48 x 40 px of 2 m
    assert choose_scale(small, "1.8", None, 64).width == 53  # finer is never refused, even if still under a tile
    no_crs = inspect_raster(rasters.no_crs(tmp_path))
    assert not choose_scale(no_crs, "auto", 1.0, 64).resamples
    with pytest.raises(BadInput, match="no CRS"):
        choose_scale(no_crs, "1", None, 64)


def test_outputs_overlay_the_input_grid_exactly_with_its_nodata_and_roi(tmp_path, metre_model):
    scene = half_metre_scene(tmp_path, nodata_corner=True)
    bbox = ["--bbox", "300007.3,2799921.1,300101.9,2799987.6"]  # not on the 1 m grid
    outputs = {}
    for resolution in ("native", "auto", "0.25"):
        out, confidence = tmp_path / f"{resolution}.tif", tmp_path / f"{resolution}_confidence.tif"
        argv = ["segment", scene, "-o", out, "--confidence", confidence, "--resolution", resolution, *bbox]
        code, events = run([*argv, "--model", metre_model, "--engine", "torch"])
        assert code == 0, events
        outputs[resolution] = (out, confidence)
    with rasterio.open(outputs["native"][0]) as native:
        grid = (native.crs, native.transform, native.shape)
    assert native.shape == (134, 190) and native.transform.c == 300007.0  # the bbox's whole pixels, from (14, 24)
    for resolution in ("auto", "0.25"):
        for path in outputs[resolution]:
            with rasterio.open(path) as made:
                assert (made.crs, made.transform, made.shape) == grid, (resolution, path)
                data, tags = made.read(1), made.tags()
            valid = np.isfinite(data) & (data != 255)
            assert not valid[:6, :16].any()  # the scene's nodata corner (rows, columns < 30) within the bbox
            assert valid[6:].all() and valid[:, 16:].all()
            assert json.loads(tags["RESOLUTION"])["factor"] == (2.0 if resolution == "auto" else 0.5)
            assert tags["SOURCE"] == str(scene)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the resampled scene and the outputs on its grid went with the run


def test_a_geographic_scene_is_read_in_metres_at_its_latitude_and_mapped_on_its_degrees(tmp_path, metre_model):
    """1e-5 degree pixels at 25 N are 1.01 x 1.11 m: at 0.5 m the model sees 2.02 x 2.22 times the pixels."""
    degrees = from_origin(55.0, 25.0005, 1e-5, 1e-5)
    scene = rasters.write_raster(
        tmp_path / "wgs.tif", rasters.position_rgb(100, 90), crs="EPSG:4326", transform=degrees, photometric="RGB"
    )
    choice = choose_scale(inspect_raster(scene), "0.5", None, 64)
    assert (choice.width, choice.height) == (182, 222)
    code, events = run(["segment", scene, "-o", tmp_path / "o.tif", "--resolution", "0.5", "--model", metre_model])
    assert code == 0, events
    with rasterio.open(tmp_path / "o.tif") as made:
        assert (made.crs.to_epsg(), made.transform, made.shape) == (4326, degrees, (100, 90))
        assert (made.read(1) != 255).all()


def test_the_same_image_at_two_declared_pixel_sizes_gives_nearly_the_same_map(tmp_path):
    """256 px of the sample scene (1.5 m), and the same upsampled three times with 0.5 m pixels, segmented by the
    default model at --resolution 1.5: the maps agree and score alike against the labels."""
    window = Window(128, 1408, 256, 256)  # five classes
    with rasterio.open(SAMPLE) as sample, rasterio.open(SAMPLE_LABELS) as labels:
        transform = sample.window_transform(window)
        image = sample.read(window=window)
        upsampled = sample.read(window=window, out_shape=(3, 768, 768), resampling=Resampling.bilinear)
        truth = labels.read(1, window=window)
    scenes = [
        rasters.write_raster(tmp_path / "as_is.tif", image, transform=transform, photometric="RGB"),
        rasters.write_raster(
            tmp_path / "x3.tif", upsampled, transform=transform * Affine.scale(1 / 3), photometric="RGB"
        ),
    ]
    maps = []
    for scene in scenes:
        out = scene.with_suffix(".classes.tif")
        code, events = run(["segment", scene, "-o", out, "--resolution", "1.5", "--tile-size", "128"])
        assert code == 0, events
        with rasterio.open(out) as made:
            maps.append(made.read(1))
    as_is, fine = maps
    assert fine.shape == (768, 768)
    centres = fine[1::3, 1::3]  # the 0.5 m pixel at the centre of each 1.5 m one
    names = ["Building", "Land", "Road", "Vegetation", "Water"]
    agreement = scores(confusion_matrix(centres, as_is, 5), names)
    assert agreement["overall_accuracy"] > 0.97
    miou = [scores(confusion_matrix(m, truth, 5), names)["miou"] for m in (as_is, centres)]
    assert abs(miou[0] - miou[1]) < 0.02, miou


def test_adaptation_tiles_are_read_at_the_models_pixel_size_with_their_labels(tmp_path, metre_model):
    scene = half_metre_scene(tmp_path)
    labels = np.zeros((1, 200, 240), np.uint8)
    labels[0, :, 120:] = 3  # the right half is class 3
    label_path = rasters.write_raster(tmp_path / "labels.tif", labels, transform=from_origin(3e5, 28e5, 0.5, 0.5))
    card = ModelCard.read(metre_model)
    options = AdaptOptions(mode="dg", labels=str(label_path), samples=2, sample_size=40)
    tiles = scene_samples(Scene(str(scene), model=str(metre_model)), card, options).train
    first = tiles[0]
    assert first["image"].shape == (3, 40, 40)  # 40 model pixels: 80 of the scene's
    red = first["image"][0].numpy() * 255  # the scene's red is its column: 2 columns a model pixel
    assert np.diff(red, axis=1) == pytest.approx(np.full((40, 39), 2.0), abs=1e-3)
    assert red[0, 0] == pytest.approx(1.0, abs=1e-3)  # columns 0 and 1 averaged, rounded in the scene's uint8
    right = tiles[-1]  # the grid's last tile sits at the right edge: model columns 80-119
    assert (right["mask"][:, :] == 3).all() and (tiles[0]["mask"] == 0).all()


def test_inspect_says_the_scenes_pixel_size_the_models_and_the_factor(tmp_path, metre_model):
    command = [sys.executable, "-m", "backend.cli", "inspect", str(half_metre_scene(tmp_path)), "--json"]
    shown = subprocess.run(
        [*command, "--model", str(metre_model)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    report = json.loads(shown.stdout)
    assert (report["pixel_size_m"], report["model_resolution_m"], report["resolution_factor"]) == ([0.5, 0.5], 1.0, 2.0)


@pytest.mark.parametrize(
    ("resolution", "message"),
    [("0", "greater than 0"), ("-2", "greater than 0"), ("fine", "expected auto, native"), ("20", "under one")],
)
def test_a_bad_resolution_is_one_line_exit_2_and_nothing_written(tmp_path, metre_model, resolution, message):
    scene = half_metre_scene(tmp_path)
    before = sorted(tmp_path.iterdir())
    for argv in (
        ["segment", scene, "-o", tmp_path / "o.tif"],
        ["adapt", scene, "--adapter-out", tmp_path / "a.safetensors"],
        ["adapt-segment", scene, "-o", tmp_path / "o.tif"],
    ):
        code, events = run([*argv, "--resolution", resolution, "--model", metre_model])
        errors = [e["message"] for e in events if e["type"] == "error"]
        assert code == 2 and len(errors) == 1 and message in errors[0] and "\n" not in errors[0], events
    assert sorted(tmp_path.iterdir()) == before


def test_a_resampled_run_does_not_write_over_its_input(tmp_path, metre_model):
    scene = half_metre_scene(tmp_path)
    before = scene.read_bytes()
    code, events = run(["segment", scene, "-o", scene, "--overwrite", "--model", metre_model])
    assert code == 2 and "replace the input" in events[-1]["message"]
    assert scene.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["half.tif"]
