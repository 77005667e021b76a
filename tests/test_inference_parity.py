"""onnxruntime segments like PyTorch: the default model with an adapter in it (LoRA merged into qkv,
Adapters, Earth-Adapters with their FFT), on a crop of a real Dubai scene, through ``jobs.segment``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest_rasters import rgb_uint8
from rasterio.transform import from_origin
from rasterio.windows import Window, bounds

import backend.segmentation.predictor as predictor
from backend.errors import BadInput
from backend.jobs import Scene, SegmentOptions, segment
from backend.model.registry import DEFAULT_MODEL, load_model, resolve_model
from backend.model.toolbox import MODULE_KINDS, ToolboxConfig
from backend.model.toolbox.earth_adapter import low_pass
from backend.segmentation.predictor import (
    AUTO_ONNX_MIN_TILES,
    auto_engine,
    make_predictor,
    onnx_cache_dir,
    resolve_device,
)
from tests.conftest import DUBAI_DATA

SAMPLE_SCENE = Path(__file__).resolve().parents[1] / "resources" / "samples" / "dubai_tile6.tif"
CROP = Window(0, 0, 1024, 768)  # 3 x 2 tiles of 512 px at the default stride of 341
MIN_AGREEMENT = 0.999


@pytest.fixture
def scene(tmp_path) -> Path:
    """The sample scene, or a GeoTIFF made from a tile-6 JPEG of the Dubai data set."""
    if SAMPLE_SCENE.is_file():
        return SAMPLE_SCENE
    jpeg = DUBAI_DATA / "tile_6" / "images" / "image_part_001.jpg"
    if not jpeg.is_file():
        pytest.skip(f"neither {SAMPLE_SCENE} nor {jpeg} exists")
    with rasterio.open(jpeg) as source:
        image = source.read()
    path = tmp_path / "dubai_tile6_part1.tif"
    profile = dict(driver="GTiff", width=image.shape[2], height=image.shape[1], count=3, dtype="uint8")
    with rasterio.open(path, "w", crs="EPSG:32640", transform=from_origin(320000, 2790000, 1.5, 1.5), **profile) as ds:
        ds.write(image)
    return path


@pytest.fixture
def adapted_default_model():
    """The default model carrying a toolbox with every other module active, all with random non-zero weights."""
    try:
        card = resolve_model(DEFAULT_MODEL)
    except BadInput:
        pytest.skip(f"default model {DEFAULT_MODEL} is not in the registry (not trained yet)")
    if not card.weights.is_file():
        pytest.skip(f"default model weights {card.weights} missing (not trained yet)")
    model = load_model(card)
    toolbox = model.add_toolbox(ToolboxConfig())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, module in toolbox:
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    active = list(toolbox.modules)[::2]
    toolbox.set_active(active)
    assert {name.rsplit(".", 1)[1] for name in active} == set(MODULE_KINDS)
    return card, model.eval()


def _classes(path: Path) -> tuple[np.ndarray, str]:
    with rasterio.open(path) as dataset:
        return dataset.read(1), dataset.tags()["engine"]


def _precision(path: Path) -> str:
    with rasterio.open(path) as dataset:
        return dataset.tags()["precision"]


def test_onnx_engine_segments_like_torch_with_an_active_adapter(scene, adapted_default_model, tmp_path):
    card, model = adapted_default_model
    with rasterio.open(scene) as dataset:
        bbox = bounds(CROP, dataset.transform)
    with torch.inference_mode():  # the adapter must matter, or the comparison below could not fail
        tile = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        adapted = model(tile).argmax(1)
        active = model.toolbox.active_names
        model.toolbox.set_active([])
        plain = model(tile).argmax(1)
        model.toolbox.set_active(active)
    assert (adapted != plain).float().mean() > 0.01

    classes = {}
    for engine, precision in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")):
        output = tmp_path / f"classes_{engine}_{precision}.tif"
        segment(
            Scene(str(scene), bbox=bbox),
            SegmentOptions(output=str(output), engine=engine, precision=precision),
            model=(card, model),
        )
        classes[engine, precision], written_by = _classes(output)
        assert (written_by, _precision(output)) == (engine, precision)
    reference = classes["torch", "fp32"]
    assert reference.shape == (CROP.height, CROP.width)
    for key in (("onnx", "fp32"), ("onnx", "int8")):  # the int8 graph was quantised with the adapter merged in
        agreement = (classes[key] == reference).mean()
        assert agreement >= MIN_AGREEMENT, f"{' '.join(key)} and torch agree on {agreement:.4%} of pixels"


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 4, 31, 17), (1, 2, 8, 9)])
@pytest.mark.parametrize("cutoff", [0.3, 0.55])
def test_low_pass_as_matrices_equals_the_centred_fft_mask(shape, cutoff):
    """Earth-Adapter's band split runs as two matmuls (fast on onnxruntime); it must be the FFT filter it replaces."""
    grid = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    height, width = shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(grid, norm="ortho"), dim=(-2, -1))
    fy = torch.abs(torch.arange(height) - height // 2) <= cutoff * height / 2
    fx = torch.abs(torch.arange(width) - width // 2) <= cutoff * width / 2
    filtered = torch.fft.ifft2(torch.fft.ifftshift(spectrum * (fy[:, None] & fx[None, :]), dim=(-2, -1)), norm="ortho")
    torch.testing.assert_close(low_pass(grid.float(), cutoff), filtered.real.float(), rtol=1e-5, atol=1e-5)


def test_auto_engine_runs_torch_below_the_export_break_even():
    assert auto_engine(AUTO_ONNX_MIN_TILES - 1) == "torch"
    assert auto_engine(AUTO_ONNX_MIN_TILES) == "onnx"
    assert auto_engine(None) == "onnx"


def test_auto_engine_runs_torch_on_a_gpu_whatever_the_tile_count():
    assert auto_engine(None, "cuda") == auto_engine(10_000, "cuda:1") == "torch"
    assert auto_engine(None, "cpu") == "onnx"
    assert auto_engine(None, "auto") == ("torch" if torch.cuda.is_available() else "onnx")


def test_a_device_the_machine_lacks_is_bad_input_naming_it():
    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    with pytest.raises(BadInput, match=f"device '{missing}'.*usable CUDA devices"):
        resolve_device(missing)
    with pytest.raises(BadInput, match="device 'tpu': not a torch device"):
        resolve_device("tpu")
    with pytest.raises(BadInput, match="only auto, cpu and cuda"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is the GPU here")
def test_explicit_cpu_device_predicts_the_same_probabilities_as_auto_on_a_machine_without_gpu(tiny_model):
    batch = torch.rand(2, 3, 64, 64).numpy()
    default, _ = make_predictor(tiny_model, "torch", tile=64, batch_size=2, device="auto")
    on_cpu, engine = make_predictor(tiny_model, "torch", tile=64, batch_size=2, device="cpu:0")
    assert engine == "torch"
    np.testing.assert_array_equal(default(batch), on_cpu(batch))


def test_segment_on_auto_picks_the_engine_by_the_scene_tile_count(tiny_model_folder, tmp_path):
    """The toy model tiles 64 px at stride 48: a side of 48 * (n - 1) + 64 px needs n tiles along it."""
    per_side = {"torch": 1, "onnx": math.isqrt(AUTO_ONNX_MIN_TILES - 1) + 1}
    for expected, n in per_side.items():
        side = 48 * (n - 1) + 64
        raster = rgb_uint8(tmp_path, side, side, name=f"{expected}.tif")
        output = tmp_path / f"classes_{expected}.tif"
        segment(Scene(str(raster), model=str(tiny_model_folder)), SegmentOptions(output=str(output)))
        assert _classes(output)[1] == expected


def test_onnx_exports_are_cached_per_weights_and_gates_and_pruned(tiny_model, monkeypatch):
    exports = []
    export = predictor.export_onnx
    monkeypatch.setattr(predictor, "export_onnx", lambda *args: exports.append(args[0]) or export(*args))
    monkeypatch.setattr(predictor, "ONNX_CACHE_KEEP", 2)
    batch = torch.rand(2, 3, 32, 32).numpy()
    toolbox = tiny_model.add_toolbox(ToolboxConfig())
    first, _ = make_predictor(tiny_model, "onnx", tile=32, batch_size=2)
    again, _ = make_predictor(tiny_model, "onnx", tile=32, batch_size=2)
    assert len(exports) == 1 and np.array_equal(first(batch), again(batch))
    toolbox.set_active(list(toolbox.modules)[:1])  # another graph: the gated-off modules are left out
    make_predictor(tiny_model, "onnx", tile=32, batch_size=2)
    with torch.no_grad():
        tiny_model.head.classifier.bias.add_(1.0)  # another weight
    make_predictor(tiny_model, "onnx", tile=32, batch_size=2)
    assert len(exports) == 3
    assert len(list(onnx_cache_dir().glob("*.onnx"))) == 2 and not list(onnx_cache_dir().glob(".export-*"))


def test_int8_graphs_are_quantised_from_the_cached_fp32_export_and_cached_beside_it(tiny_model, monkeypatch):
    exports, quantised = [], []
    export, quantize = predictor.export_onnx, predictor.quantize_int8
    monkeypatch.setattr(predictor, "export_onnx", lambda *args: exports.append(args[0]) or export(*args))
    monkeypatch.setattr(predictor, "quantize_int8", lambda *args: quantised.append(args[0]) or quantize(*args))
    batch = torch.rand(2, 3, 32, 32).numpy()
    fp32, _ = make_predictor(tiny_model, "onnx", tile=32, batch_size=2, precision="fp32")
    int8, engine = make_predictor(tiny_model, "onnx", tile=32, batch_size=2)  # auto: int8 on onnx
    again, _ = make_predictor(tiny_model, "onnx", tile=32, batch_size=2, precision="int8")
    assert engine == "onnx" and len(exports) == 1 and len(quantised) == 1
    fp32_file = min(onnx_cache_dir().glob("*.onnx"), key=lambda path: len(path.name))
    assert {path.name for path in onnx_cache_dir().glob("*.onnx")} == {fp32_file.name, f"{fp32_file.stem}.int8.onnx"}
    np.testing.assert_array_equal(int8(batch), again(batch))
    assert not np.array_equal(int8(batch), fp32(batch))  # another graph: int8 MatMuls
    np.testing.assert_allclose(int8(batch).sum(axis=1), 1.0, rtol=1e-5)


def test_int8_is_the_onnx_default_and_bad_input_on_torch(tiny_model):
    assert predictor.resolve_precision("onnx", "auto") == predictor.ONNX_DEFAULT_PRECISION == "int8"
    assert predictor.resolve_precision("torch", "auto") == "fp32"
    assert predictor.pick_engine("auto", "int8", tiles=1, device="cpu") == "onnx"  # asked for int8: onnx at any size
    with pytest.raises(BadInput, match="only the onnx engine runs int8"):
        make_predictor(tiny_model, "torch", tile=32, batch_size=2, precision="int8")
    with pytest.raises(BadInput, match="only the onnx engine runs int8"):
        SegmentOptions(output="x.tif", engine="torch", precision="int8")
    with pytest.raises(BadInput, match="precision 'fp16'"):
        SegmentOptions(output="x.tif", precision="fp16")
