"""Inference speed, all in one run: every inference path on the default model, whole-raster segmentation
throughput and peak memory, the one-off ONNX export cost, and how close the model runs to the machine's
matmul rate.

    python bench/inference.py --out results/inference.json

The paths are timed round-robin on one batch of real Dubai tiles, each keeping its best round (the
median is kept too): load from other processes on a shared machine then hits every path alike, and
the ratios between paths stay meaningful when the absolute numbers do not. Each raster size is
segmented in its own subprocess so that its peak RSS is its own. Until the default model's weights
exist in resources/models/, its architecture runs with ImageNet stem weights and a random rest.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import describe, peak_rss_mib  # noqa: E402  (bench/, the script's own folder)

from backend.errors import BadInput  # noqa: E402
from backend.model.network import ModelConfig, SegmentationModel, create_model, save_model  # noqa: E402
from backend.model.registry import DEFAULT_MODEL, WEIGHTS_FILE, ModelCard, load_model, resolve_model  # noqa: E402
from backend.segmentation.predictor import (  # noqa: E402
    AUTO_ONNX_MIN_TILES,
    Predict,
    Probabilities,
    export_onnx,
    onnx_session,
    torch_predictor,
)
from training.dubai import CLASSES  # noqa: E402
from training.stem_weights import load_stem_weights  # noqa: E402

TILE, BATCH, THREADS = 512, 4, 2
SAMPLE_SCENE = REPO / "resources" / "samples" / "dubai_tile6.tif"
# (raster side in pixels, engine); the extra onnx run at 1000 px shows what ``auto`` saves on a small scene
# (side px, engine, ONNX cache folder): the second 1000 px onnx run finds its export in the cache the first wrote
SEGMENT_RUNS = (
    (1000, "auto", "cache-a"),
    (1000, "onnx", "cache-shared"),
    (1000, "onnx", "cache-shared"),
    (4000, "auto", "cache-c"),
    (10000, "auto", "cache-d"),
)
# the default model's architecture (scripts/train_default.py), used with random weights until it is trained
DEFAULT_ARCHITECTURE = ModelConfig(
    backbone="vit_tiny_patch16_224",
    num_classes=5,
    img_size=512,
    backbone_args=dict(embed_dim=192, depth=4, num_heads=3),
    stem="tf_efficientnet_lite0",
    stem_stages=5,
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
)
SLOW = 5
TORCH_ENGINE = "torch channels-last: the torch engine"
ONNX_ENGINE = "onnxruntime fp32, export_onnx, no thread spinning: the onnx engine"
SPINNING = {"session.intra_op.allow_spinning": "1"}  # onnxruntime's default
BASELINE = "onnxruntime fp32, Softmax node (export as the issue measured it)"


def default_models_dir(scratch: Path) -> tuple[str | None, str]:
    """(models folder to search, weights) for the default model: the trained one when it exists, otherwise
    its architecture with ImageNet stem weights and a seeded random rest, written to ``scratch``."""
    try:
        if resolve_model(DEFAULT_MODEL).weights.is_file():
            return None, "trained"
    except BadInput:
        pass
    torch.manual_seed(0)
    model = create_model(DEFAULT_ARCHITECTURE)
    load_stem_weights(model.backbone.patch_embed.backbone)
    card = ModelCard(
        name=DEFAULT_MODEL,
        description="default architecture, ImageNet stem, random ViT and head (benchmark stand-in)",
        architecture=DEFAULT_ARCHITECTURE,
        classes=CLASSES,
    )
    folder = scratch / DEFAULT_MODEL
    card.write(folder)
    save_model(model, folder / WEIGHTS_FILE)
    return str(scratch), "random ViT and head, ImageNet stem (default model not trained yet)"


def real_batch() -> np.ndarray:
    """The four 512 px tiles in the top-left corner of the Dubai tile-6 sample scene, model-ready."""
    from rasterio.windows import Window

    from backend.rasters.raster_io import SceneReader

    with SceneReader(SAMPLE_SCENE) as reader:
        tiles = [reader.read(Window(col, row, TILE, TILE))[0] for row in (0, TILE) for col in (0, TILE)]
    return np.stack(tiles).astype(np.float32)


@dataclass
class Candidate:
    """One inference path: its predict callable (None if it cannot be built here) and its one-off cost."""

    name: str
    predict: Predict | None
    setup_seconds: float = 0.0
    note: str = ""
    reference: np.ndarray | None = None  # eager fp32 classes of its network, when not the plain default model
    times: list[float] = field(default_factory=list)
    classes: np.ndarray | None = None  # argmax of its probabilities on the real batch


def timed(build: Callable[[], Predict]) -> tuple[Predict, float]:
    started = time.perf_counter()
    predict = build()
    return predict, time.perf_counter() - started


def eager(model: SegmentationModel) -> Predict:
    """Plain PyTorch, NCHW: the reference every other path is compared with."""
    probabilities = Probabilities(model).eval()

    @torch.inference_mode()
    def predict(batch: np.ndarray) -> np.ndarray:
        return probabilities(torch.from_numpy(batch)).numpy()

    return predict


def torchscript(model: SegmentationModel, example: np.ndarray) -> Predict:
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Probabilities(model).eval(), torch.from_numpy(example))
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        return optimized(torch.from_numpy(batch)).numpy()

    predict(example)  # the profiling executor specialises on the first calls
    return predict


def bf16_autocast(model: SegmentationModel) -> Predict:
    probabilities = Probabilities(model).eval()

    @torch.inference_mode()
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return probabilities(torch.from_numpy(batch)).float().numpy()

    return predict


def compiled(model: SegmentationModel, example: np.ndarray) -> Predict:
    import torch._inductor.config as inductor

    inductor.freezing = True  # folds weights and batch norms into the graph, as the other engines do
    program = torch.compile(Probabilities(copy.deepcopy(model)).eval())

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        return program(torch.from_numpy(batch)).numpy()

    predict(example)  # compiles
    return predict


def export_softmax_node(model: SegmentationModel, path: Path) -> Path:
    """The export before ``class_softmax``: ``torch.softmax(dim=1)`` becomes one ONNX Softmax node."""

    class SoftmaxNode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.model(image), dim=1)

    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            SoftmaxNode().eval(),
            (torch.rand(BATCH, 3, TILE, TILE),),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            verbose=False,
        )
    program.save(str(path))
    return path


def with_toolbox(model: SegmentationModel, kinds: tuple[str, ...]) -> SegmentationModel:
    """A copy carrying an adapted-looking toolbox: every module of ``kinds`` active with random non-zero weights."""
    from backend.model.toolbox import ToolboxConfig

    adapted = copy.deepcopy(model)
    toolbox = adapted.add_toolbox(ToolboxConfig(kinds=kinds))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, module in toolbox:
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return adapted.eval()


def build_candidates(model: SegmentationModel, example: np.ndarray, scratch: Path, skip_compile: bool) -> list:
    candidates = [Candidate("torch eager fp32", eager(model))]

    def add(name: str, build: Callable[[], Predict], note: str = "", reference: np.ndarray | None = None) -> None:
        try:
            predict, seconds = timed(build)
        except Exception as error:  # a path that cannot run here is reported, not fatal
            candidates.append(Candidate(name, None, note=f"{type(error).__name__}: {str(error)[:300]}"))
        else:
            candidates.append(Candidate(name, predict, seconds, note, reference))

    add(TORCH_ENGINE, lambda: torch_predictor(copy.deepcopy(model)), "the model's weights turned channels-last")
    add("TorchScript trace + optimize_for_inference", lambda: torchscript(model, example))
    add("torch bf16 autocast", lambda: bf16_autocast(model))
    if skip_compile:
        candidates.append(Candidate("torch.compile inductor (frozen)", None, note="skipped (--skip-compile)"))
    else:
        add("torch.compile inductor (frozen)", lambda: compiled(model, example), "setup = compile time")
    add(
        BASELINE,
        lambda: onnx_session(export_softmax_node(model, scratch / "softmax_node.onnx"), THREADS, SPINNING),
        "setup = export + session; onnxruntime's default thread spinning",
    )
    ours = scratch / "ours.onnx"
    add(
        ONNX_ENGINE,
        lambda: onnx_session(export_onnx(model, ours, TILE, BATCH), THREADS),
        "setup = export + session",
    )
    add("onnxruntime fp32, thread spinning on", lambda: onnx_session(ours, THREADS, SPINNING), "same graph")
    add("onnxruntime int8 dynamic MatMul", lambda: int8_matmul(ours, scratch), "int8 weights, activations per call")
    add("onnxruntime fp16", lambda: fp16(ours, scratch), "fp16 graph, fp32 inputs and outputs")
    everything = with_toolbox(model, ("lora", "adapter", "earth_adapter"))
    without_earth = with_toolbox(model, ("lora", "adapter"))
    same_model = "agreement against eager fp32 of the same adapted model"
    everything_classes = eager(everything)(example).argmax(axis=1)
    add(
        "onnxruntime fp32, toolbox all active (LoRA merged, Adapter, Earth-Adapter)",
        lambda: onnx_session(export_onnx(everything, scratch / "toolbox_all.onnx", TILE, BATCH), THREADS),
        same_model,
        reference=everything_classes,
    )
    add(
        "onnxruntime fp32, toolbox all active, Earth-Adapter low-pass as FFT (before)",
        lambda: onnx_session(export_with_fft_low_pass(everything, scratch / "toolbox_fft.onnx"), THREADS),
        same_model,
        reference=everything_classes,
    )
    add(
        "onnxruntime fp32, toolbox LoRA merged + Adapter, no Earth-Adapter",
        lambda: onnx_session(export_onnx(without_earth, scratch / "toolbox_no_earth.onnx", TILE, BATCH), THREADS),
        same_model,
        reference=eager(without_earth)(example).argmax(axis=1),
    )
    return candidates


def fft_low_pass(grid: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Earth-Adapter's band split as it was first written: centred rectangular mask on the 2-D FFT."""
    height, width = grid.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(grid.float(), norm="ortho"), dim=(-2, -1))
    fy = torch.abs(torch.arange(height) - height // 2) <= cutoff * height / 2
    fx = torch.abs(torch.arange(width) - width // 2) <= cutoff * width / 2
    spectrum = torch.fft.ifftshift(spectrum * (fy[:, None] & fx[None, :]).to(spectrum.dtype), dim=(-2, -1))
    return torch.fft.ifft2(spectrum, norm="ortho").real.to(grid.dtype)


def export_with_fft_low_pass(model: SegmentationModel, path: Path) -> Path:
    with mock.patch("backend.model.toolbox.earth_adapter.low_pass", fft_low_pass):
        return export_onnx(model, path, TILE, BATCH)


def int8_matmul(path: Path, scratch: Path) -> Predict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = scratch / "int8.onnx"
    quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return onnx_session(target, THREADS)


def fp16(path: Path, scratch: Path) -> Predict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target = scratch / "fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(target))
    return onnx_session(target, THREADS)


def time_round_robin(candidates: list[Candidate], batch: np.ndarray, rounds: int) -> None:
    """Each path once per round; a path over ``SLOW`` times slower than eager in the first round is not
    timed again (bf16 on a CPU without native bf16 falls back to a reference convolution)."""
    runnable = [c for c in candidates if c.predict is not None]
    for candidate in runnable:
        candidate.predict(batch)  # warm-up
    for round_index in range(rounds):
        for candidate in runnable:
            started = time.perf_counter()
            probabilities = candidate.predict(batch)
            candidate.times.append(time.perf_counter() - started)
            if round_index == 0:
                candidate.classes = probabilities.argmax(axis=1)
        if round_index == 0:
            slow = [c for c in runnable if c.times[0] > SLOW * candidates[0].times[0]]
            for candidate in slow:
                candidate.note = "; ".join(filter(None, [candidate.note, f"timed once: {SLOW}x slower than eager"]))
            runnable = [c for c in runnable if c not in slow]


def model_flops(model: SegmentationModel, batch: np.ndarray) -> int:
    """FLOPs of one forward pass; attention through the math kernel, whose matmuls the counter sees."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        Probabilities(model)(torch.from_numpy(batch))
    return counter.get_total_flops()


def matmul_flops_per_second(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_paths(models_dir: str | None, scratch: Path, rounds: int, skip_compile: bool) -> dict:
    torch.manual_seed(0)
    model = load_model(resolve_model(DEFAULT_MODEL, models_dir))
    batch = real_batch()
    megapixels = batch.shape[0] * TILE * TILE / 1e6
    candidates = build_candidates(model, batch, scratch, skip_compile)
    time_round_robin(candidates, batch, rounds)
    flops = model_flops(model, batch)
    matmul = matmul_flops_per_second()
    eager_classes = candidates[0].classes
    baseline = next(c for c in candidates if c.name == BASELINE)
    baseline_rate = megapixels / min(baseline.times) if baseline.times else math.nan
    paths = []
    for candidate in candidates:
        row = {"name": candidate.name, "setup_seconds": round(candidate.setup_seconds, 1), "note": candidate.note}
        if candidate.predict is not None:
            best, median = min(candidate.times), statistics.median(candidate.times)
            reference = eager_classes if candidate.reference is None else candidate.reference
            row.update(
                mpx_per_s=round(megapixels / best, 3),
                mpx_per_s_median=round(megapixels / median, 3),
                ratio_to_baseline=round(megapixels / best / baseline_rate, 2),
                pixel_agreement=round(float((candidate.classes == reference).mean()), 5),
                model_gflop_per_s=round(flops / best / 1e9, 1),
                fraction_of_matmul=round(flops / best / matmul, 3),
            )
        paths.append(row)
    torch_engine = next(c for c in candidates if c.name == TORCH_ENGINE)
    onnx_engine = next(c for c in candidates if c.name == ONNX_ENGINE)
    saved_per_tile = (min(torch_engine.times) - min(onnx_engine.times)) / BATCH
    counts = np.bincount(eager_classes.ravel(), minlength=len(CLASSES))
    return {
        "paths": paths,
        "model_gflop_per_batch": round(flops / 1e9, 2),
        "matmul_gflop_per_s": round(matmul / 1e9, 1),
        "eager_class_fractions": [round(float(c) / counts.sum(), 3) for c in counts],
        "export": {
            "export_and_session_seconds": round(onnx_engine.setup_seconds, 1),
            "torch_engine_seconds_per_tile": round(min(torch_engine.times) / BATCH, 3),
            "onnx_engine_seconds_per_tile": round(min(onnx_engine.times) / BATCH, 3),
            "break_even_tiles": math.ceil(onnx_engine.setup_seconds / saved_per_tile) if saved_per_tile > 0 else None,
            "auto_onnx_min_tiles": AUTO_ONNX_MIN_TILES,
        },
    }


def write_synthetic_raster(path: Path, size: int) -> None:
    """A uint8 RGB GeoTIFF (tiled, deflate) of smooth fields and noise, written in strips."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(size)
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32640",
        transform=from_origin(320000, 2790000, 1.5, 1.5), tiled=True, blockxsize=256, blockysize=256,
        compress="deflate",
    )  # fmt: skip
    x = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(path, "w", **profile) as dataset:
        for top in range(0, size, 512):
            y = np.arange(top, min(top + 512, size), dtype=np.float32)[:, None]
            bands = [
                128 + 90 * np.sin(x / 97.0 + phase) * np.cos(y / 131.0 - phase) + rng.normal(0, 12, (len(y), size))
                for phase in (0.0, 1.3, 2.6)
            ]
            data = np.clip(np.stack(bands), 0, 255).astype(np.uint8)
            dataset.write(data, window=Window(0, top, size, len(y)))


def segment_child(raster: str, engine: str, models_dir: str | None, output: str) -> dict:
    """Runs in the subprocess: one jobs.segment call, timed, with its peak RSS."""
    from backend.jobs import Scene, SegmentOptions, segment

    torch.set_num_threads(THREADS)
    marks: dict[str, object] = {}
    started = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("segmenting with"):
            marks.update(setup=time.perf_counter() - started, engine=message.rsplit(" on ", 1)[1])
        if message.startswith("segmenting ") and "tiles" in message:
            marks["tiles"] = int(message.split()[1])

    segment(
        Scene(raster, model=DEFAULT_MODEL, models_dir=models_dir, threads=THREADS),
        SegmentOptions(output=output, engine=engine, overwrite=True),
        progress,
    )
    total = time.perf_counter() - started
    return {
        "engine": marks["engine"],
        "tiles": marks.get("tiles"),
        "setup_seconds": round(marks["setup"], 1),  # model load, plus the ONNX export on onnx
        "total_seconds": round(total, 1),
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_segmentation(models_dir: str | None, scratch: Path) -> list[dict]:
    results = []
    for size in sorted({size for size, _, _ in SEGMENT_RUNS}):
        raster = scratch / f"synthetic_{size}.tif"
        write_synthetic_raster(raster, size)
        for run_size, engine, cache in SEGMENT_RUNS:
            if run_size != size:
                continue
            command = [sys.executable, __file__, "--segment-child", str(raster), engine, models_dir or "", str(scratch)]
            cached = any((scratch / cache / "onnx").glob("*.onnx"))
            env = {**os.environ, "CROSSEARTH_CACHE": str(scratch / cache)}
            child = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if child.returncode != 0:
                raise RuntimeError(f"segmentation of {size} px failed:\n{child.stderr[-2000:]}")
            row = json.loads(child.stdout.strip().splitlines()[-1])
            megapixels = size * size / 1e6
            row.update(
                size=size,
                requested_engine=engine,
                onnx_export="cached" if cached and row["engine"] == "onnx" else "done in this run",
                mpx_per_s=round(megapixels / row["total_seconds"], 3),
                mpx_per_s_after_setup=round(megapixels / (row["total_seconds"] - row["setup_seconds"]), 3),
            )
            results.append(row)
            print(f"segmented {size} px on {row['engine']}: {row['total_seconds']} s", file=sys.stderr, flush=True)
        raster.unlink()
    return results


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Inference paths ({report['model']['weights']}; batch {BATCH} x {TILE} px, {THREADS} threads)")
    for column in ("path", "Mpx/s best", "median", "x baseline", "agree", "GFLOP/s", "of matmul", "setup s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in report["inference"]["paths"]:
        if "mpx_per_s" not in row:
            table.add_row(row["name"], "-", "-", "-", "-", "-", "-", row["note"][:40])
            continue
        table.add_row(
            row["name"], f"{row['mpx_per_s']:.2f}", f"{row['mpx_per_s_median']:.2f}", f"{row['ratio_to_baseline']:.2f}",
            f"{row['pixel_agreement']:.2%}", f"{row['model_gflop_per_s']:.0f}", f"{row['fraction_of_matmul']:.0%}",
            f"{row['setup_seconds']:.1f}",
        )  # fmt: skip
    console = Console(width=170)
    console.print(table)
    segmentation = Table(title="Segmentation (jobs.segment, synthetic uint8 RGB GeoTIFF)")
    columns = ("side px", "engine", "ONNX export", "tiles", "setup s", "total s", "Mpx/s", "Mpx/s after setup")
    for column in (*columns, "peak RSS MiB"):
        segmentation.add_column(column, justify="right")
    for row in report["segmentation"]:
        export = row.get("onnx_export", "") if row["engine"] == "onnx" else "-"
        segmentation.add_row(
            str(row["size"]), row["engine"], export, str(row["tiles"]), str(row["setup_seconds"]),
            str(row["total_seconds"]),
            f"{row['mpx_per_s']:.2f}", f"{row['mpx_per_s_after_setup']:.2f}", str(row["peak_rss_mib"]),
        )  # fmt: skip
    console.print(segmentation)
    export = report["inference"]["export"]
    inference = report["inference"]
    console.print(
        f"model {inference['model_gflop_per_batch']} GFLOP per batch; "
        f"torch.mm {inference['matmul_gflop_per_s']} GFLOP/s; "
        f"ONNX export + session {export['export_and_session_seconds']} s, break-even {export['break_even_tiles']} "
        f"tiles (auto switches to onnx at {export['auto_onnx_min_tiles']})"
    )


def plot(report: dict, path: Path) -> None:
    """Throughput of every path as a multiple of the baseline, and segmentation speed and peak RSS by raster size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [row for row in report["inference"]["paths"] if "mpx_per_s" in row]
    runs = [row for row in report["segmentation"] if row["requested_engine"] == "auto"]
    figure, (speed, scale) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.6, 1]})
    names = [row["name"] for row in paths]
    colours = ["tab:green" if name in (TORCH_ENGINE, ONNX_ENGINE) else "tab:gray" for name in names]
    speed.barh(names, [row["ratio_to_baseline"] for row in paths], color=colours)
    speed.axvline(1.0, color="black", linewidth=0.8)
    speed.invert_yaxis()
    speed.tick_params(axis="y", labelsize=7)
    speed.set_xlabel("throughput / onnxruntime fp32 as first exported (green: the engines segment() runs)")
    for y, row in enumerate(paths):
        speed.text(row["ratio_to_baseline"], y, f" {row['mpx_per_s']:.2f} Mpx/s", va="center", fontsize=7)
    sizes = [row["size"] for row in runs]
    scale.plot(sizes, [row["mpx_per_s_after_setup"] for row in runs], "o-", label="Mpx/s after setup")
    scale.plot(sizes, [row["mpx_per_s"] for row in runs], "o--", label="Mpx/s with model load and export")
    scale.set_xscale("log")
    scale.set_xlabel("raster side (px), engine auto")
    scale.set_ylabel("segmentation Mpx/s")
    scale.legend(loc="upper left", fontsize=8)
    memory = scale.twinx()
    memory.plot(sizes, [row["peak_rss_mib"] for row in runs], "s:", color="tab:red")
    memory.set_ylabel("peak RSS (MiB)", color="tab:red")
    memory.set_ylim(0, max(row["peak_rss_mib"] for row in runs) * 1.3)
    figure.suptitle(f"{report['model']['name']} ({report['model']['weights']}), {THREADS} threads, shared machine")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "inference.json")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "figures" / "inference_speed.png")
    parser.add_argument("--rounds", type=int, default=6, help="timing rounds per path")
    parser.add_argument("--skip-compile", action="store_true", help="leave out torch.compile (minutes to compile)")
    parser.add_argument("--skip-segmentation", action="store_true")
    parser.add_argument("--segment-child", nargs=4, metavar=("RASTER", "ENGINE", "MODELS_DIR", "SCRATCH"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.segment_child:
        raster, engine, models_dir, scratch = args.segment_child
        output = str(Path(scratch) / f"classes_{Path(raster).stem}_{engine}.tif")
        print(json.dumps(segment_child(raster, engine, models_dir or None, output)))
        return
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="crossearth-bench-") as folder:
        scratch = Path(folder)
        models_dir, weights = default_models_dir(scratch)
        inference = measure_paths(models_dir, scratch, args.rounds, args.skip_compile)
        segmentation = [] if args.skip_segmentation else measure_segmentation(models_dir, scratch)
    import onnxruntime

    report = {
        "machine": describe(load_before, THREADS, torch=torch.__version__, onnxruntime=onnxruntime.__version__),
        "model": {
            "name": DEFAULT_MODEL,
            "weights": weights,
            "tile": TILE,
            "batch": BATCH,
            "batch_from": SAMPLE_SCENE.name,
        },
        "baseline": BASELINE,
        "inference": inference,
        "segmentation": segmentation,
        "seconds": round(time.perf_counter() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if segmentation:
        plot(report, args.figure)
    print_table(report)


if __name__ == "__main__":
    main()
