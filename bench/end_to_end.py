"""End-to-end segmentation speed against the bare onnxruntime forward of the same model, in the same run.

The issue's yardstick: a whole scene through ``jobs.segment`` (model load, ONNX export, reading, tiling,
blending, writing, overviews) in Mpx of scene per second, divided by the Mpx/s of tiles that a plain
onnxruntime session on the same export computes, timed in the same run so that the machine's load hits
both. Each timed lever is one end-to-end run in its own subprocess (its own export cache, so the export
is part of every run; its own peak RSS) between rounds of the bare forward, and every lever's effect on
quality is the mIoU on images the shipped model never saw: the nine parts of Dubai tile 6 (confusion
summed over them, as the model card's metrics), the sample scene (resources/samples) and the nine parts
as the one 3 x 3 scene they come from.

    python bench/end_to_end.py --out results/end_to_end.json          # part of make bench
    python bench/end_to_end.py --size 4096 --lever "centre 448" --skip-quality   # one quick lever
    python bench/end_to_end.py --skip-speed --out /tmp/quality.json              # the mIoU of every lever
    python bench/end_to_end.py --quality-lever card --quality-lever "hann 341"    # the mIoU of a few

The bare forward is timed on the fp32 export (the issue's yardstick) and on its int8 quantisation (what the onnx
engine runs by default), in the same rounds; each run's ratio is given against both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import rasterio
import typer
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe, peak_rss_mib  # noqa: E402  (bench/, the script's own folder)

from backend.analysis.metrics import confusion_matrix, scores  # noqa: E402
from backend.contract import DEFAULT_MODEL  # noqa: E402
from backend.segmentation.sliding_window import STRIPS_AHEAD  # noqa: E402
from backend.segmentation.tiling import Tiling  # noqa: E402

THREADS = 2  # onnxruntime intra-op threads, for the bare forward and the engine alike
BATCH = 4
SAMPLE_SCENE = ROOT / "resources" / "samples" / "dubai_tile6.tif"
SAMPLE_LABELS = ROOT / "resources" / "samples" / "dubai_tile6_labels.tif"
HELD_OUT_TILE = 6
SCENE_CACHE = Path(os.environ.get("CROSSEARTH_CACHE") or Path.home() / ".cache" / "crossearth") / "bench"
FORWARD_ROUNDS = 3  # bare-forward rounds before and after each end-to-end run
FORWARD_BATCHES = 6  # batches per round
# name: (tile, stride, blend, strips each stage of the local executor may run ahead (0: no threads), precision);
# main() adds "card", "card, no threads" (the engine's default precision) and "card, fp32": the shipped model
# card's tiling, whatever it is
LEVERS: dict[str, tuple[int, int, str, int, str]] = {
    "hann 341, no threads": (512, 341, "hann", 0, "fp32"),  # before issue #19: read, forward, write in turn
    "hann 341": (512, 341, "hann", 1, "fp32"),
    "hann 416": (512, 416, "hann", 1, "fp32"),
    "hann 448": (512, 448, "hann", 1, "fp32"),
    "hann 480": (512, 480, "hann", 1, "fp32"),
    "centre 341": (512, 341, "centre", 1, "fp32"),
    "centre 448": (512, 448, "centre", 1, "fp32"),
    "centre 480": (512, 480, "centre", 1, "fp32"),
    "centre 768": (768, 704, "centre", 1, "fp32"),  # a larger tile, the same 32 px margins as centre 448
}
TIMED = ("hann 341, no threads", "card", "card, fp32")  # what make bench times end to end


def real_scene(size: int) -> Path:
    """A ``size`` px square uint8 RGB GeoTIFF (tiled 512, deflate) of real imagery: the sample scene repeated,
    every other copy mirrored so that no seam cuts a building in two. Written once into the cache."""
    path = SCENE_CACHE / f"dubai_mirrored_{size}.tif"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(SAMPLE_SCENE) as source:
        image = source.read()
    _, height, width = image.shape

    def mirrored(n: int, period: int) -> np.ndarray:
        index = np.arange(n) % (2 * period)
        return np.where(index < period, index, 2 * period - 1 - index)

    columns = mirrored(size, width)
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32640",
        transform=from_origin(320000, 2790000, 1.5, 1.5), tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", photometric="RGB",
    )  # fmt: skip
    partial = path.with_suffix(".partial.tif")
    with rasterio.open(partial, "w", **profile) as target:
        for top in range(0, size, 512):
            rows = mirrored(size, height)[top : top + 512]
            target.write(image[:, rows][:, :, columns], window=Window(0, top, size, len(rows)))
    partial.replace(path)
    return path


def segment_child(raster: str, output: str, tile: int, stride: int, blend: str, ahead: int, precision: str) -> dict:
    """Runs in the subprocess: one ``jobs.segment`` of the whole raster on the onnx engine, timed."""
    from backend.jobs import Scene, SegmentOptions, segment
    from backend.segmentation import sliding_window

    sliding_window.STRIPS_AHEAD = ahead

    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("segmenting with"):
            marks["setup"] = time.perf_counter() - started
        if message.startswith("segmenting ") and "tiles" in message:
            marks["tiles"] = int(message.split()[1])

    segment(
        Scene(raster, threads=THREADS),
        SegmentOptions(
            output, tile_size=tile, stride=stride, blend=blend, engine="onnx", precision=precision, overwrite=True
        ),
        progress,
    )
    return {
        "tiles": marks["tiles"],
        "setup_seconds": round(marks["setup"], 1),  # model load, ONNX export (and int8 quantisation)
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": peak_rss_mib(),
    }


def end_to_end(raster: Path, size: int, lever: tuple[int, int, str, int, str], scratch: Path) -> dict:
    name = "_".join(map(str, lever))
    command = [sys.executable, __file__, "--child", json.dumps([str(raster), str(scratch / f"{name}.tif"), *lever])]
    env = {**os.environ, "CROSSEARTH_CACHE": str(scratch / f"cache_{name}")}  # its own export, timed in the run
    child = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if child.returncode != 0:
        raise RuntimeError(f"end-to-end run {lever} failed:\n{child.stderr[-2000:]}")
    row = json.loads(child.stdout.strip().splitlines()[-1])
    megapixels = size * size / 1e6
    row["mpx_per_s"] = round(megapixels / row["total_seconds"], 3)
    row["mpx_per_s_after_setup"] = round(megapixels / (row["total_seconds"] - row["setup_seconds"]), 3)
    row["tile_pixels_per_scene_pixel"] = round(row["tiles"] * lever[0] ** 2 / (size * size), 3)
    return row


def forward_batches(raster: Path, tile: int) -> list[np.ndarray]:
    """Batches of real tiles spread over the scene, as the engine gets them (float32 in [0, 1])."""
    with rasterio.open(raster) as source:
        spots = np.linspace(0, source.width - tile, BATCH * FORWARD_BATCHES).round().astype(int)
        tiles = [source.read(window=Window(x, y, tile, tile)) for x, y in zip(spots, spots[::-1], strict=True)]
    stacked = np.stack(tiles).astype(np.float32) / 255
    return [stacked[i : i + BATCH] for i in range(0, len(stacked), BATCH)]


def bare_forward_rounds(session, batches: list[np.ndarray]) -> list[float]:
    """Mpx/s of tiles of each round: ``session.run`` on every batch, nothing else."""
    name = session.get_inputs()[0].name
    pixels = sum(batch.shape[0] * batch.shape[2] * batch.shape[3] for batch in batches)
    rounds = []
    for _ in range(FORWARD_ROUNDS):
        started = time.perf_counter()
        for batch in batches:
            session.run(None, {name: batch})
        rounds.append(round(pixels / 1e6 / (time.perf_counter() - started), 3))
    return rounds


def pixels_equal(batches: list[np.ndarray], predict, reference) -> float:
    """Share of the tiles' pixels whose class ``predict`` gives as ``reference`` does."""
    equal = [(predict(b).argmax(axis=1) == reference(b).argmax(axis=1)).mean() for b in batches]
    return round(float(np.mean(equal)), 5)


def held_out_rasters(scratch: Path) -> dict[str, list[tuple[Path, np.ndarray]]]:
    """The held-out scenes as GeoTIFFs with their labels: tile 6's nine parts, the sample, the parts as one."""
    from training.dubai import load_tile

    parts = load_tile(HELD_OUT_TILE)
    scenes: dict[str, list[tuple[Path, np.ndarray]]] = {"tile 6 parts": []}
    for sample in parts:
        image = (sample["image"].numpy() * 255).round().astype(np.uint8)
        path = write_rgb(scratch / f"part_{sample['name']}.tif", image)
        scenes["tile 6 parts"].append((path, sample["mask"].numpy()))
    grid = [parts[row * 3 : row * 3 + 3] for row in range(3)]
    image = np.concatenate([np.concatenate([p["image"].numpy() for p in row], axis=2) for row in grid], axis=1)
    mask = np.concatenate([np.concatenate([p["mask"].numpy() for p in row], axis=1) for row in grid], axis=0)
    whole = write_rgb(scratch / "tile6_whole.tif", (image * 255).round().astype(np.uint8))
    scenes["tile 6 whole"] = [(whole, mask)]
    with rasterio.open(SAMPLE_LABELS) as labels:
        scenes["sample scene"] = [(SAMPLE_SCENE, labels.read(1).astype(np.int64))]
    return scenes


def write_rgb(path: Path, image: np.ndarray) -> Path:
    _, height, width = image.shape
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", photometric="RGB",
                   crs="EPSG:32640", transform=from_origin(320000, 2790000, 1.5, 1.5))  # fmt: skip
    with rasterio.open(path, "w", **profile) as target:
        target.write(image)
    return path


def quality(predict, tiling: Tiling, scenes: dict, classes: list[dict], scratch: Path) -> dict:
    """mIoU of each held-out scene (confusion summed over its rasters) with ``predict`` at ``tiling``."""
    from backend.rasters.raster_io import SceneReader
    from backend.segmentation.sliding_window import segment_scene

    names = [c["name"] for c in classes]
    result = {}
    for scene, rasters in scenes.items():
        confusion = np.zeros((len(classes), len(classes) + 1), np.int64)
        for path, labels in rasters:
            output = scratch / "quality.tif"
            with SceneReader(path) as reader:
                segment_scene(reader, predict, output, classes=classes, tiling=tiling, overwrite=True)
            with rasterio.open(output) as predicted:
                confusion += confusion_matrix(predicted.read(1), labels, len(classes))
        result[scene] = round(scores(confusion, names)["miou"] * 100, 3)
    return result


def main(
    out: Annotated[Path, typer.Option(help="results JSON")] = ROOT / "results" / "end_to_end.json",
    size: Annotated[int, typer.Option(help="side of the real-imagery scene, px")] = 10240,
    lever: Annotated[list[str] | None, typer.Option(help=f"levers to time (default: {', '.join(TIMED)})")] = None,
    skip_quality: Annotated[bool, typer.Option(help="leave out the held-out mIoU")] = False,
    skip_speed: Annotated[bool, typer.Option(help="leave out the end-to-end runs (mIoU only)")] = False,
    quality_lever: Annotated[list[str] | None, typer.Option(help="levers to score (default: all)")] = None,
    child: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    if child:
        print(json.dumps(segment_child(*json.loads(child))))
        return
    import onnxruntime as ort
    import torch

    from backend.model.registry import load_model, resolve_model
    from backend.segmentation.predictor import ONNX_DEFAULT_PRECISION, export_onnx, onnx_session, quantize_int8

    torch.set_num_threads(THREADS)
    started, load_before = time.perf_counter(), os.getloadavg()
    card = resolve_model(DEFAULT_MODEL)
    shipped = (card.tile_size, card.stride, card.blend)
    levers = {
        **LEVERS,
        "card": (*shipped, STRIPS_AHEAD, ONNX_DEFAULT_PRECISION),
        "card, no threads": (*shipped, 0, ONNX_DEFAULT_PRECISION),
        "card, fp32": (*shipped, STRIPS_AHEAD, "fp32"),
    }
    timed = {} if skip_speed else {name: levers[name] for name in (lever or TIMED)}
    raster = real_scene(size)
    runs, forward, forward_int8, quality_rows, int8 = {}, [], [], {}, None
    with tempfile.TemporaryDirectory(prefix="crossearth-e2e-") as folder:
        scratch = Path(folder)
        model = load_model(card)
        export = export_onnx(model, scratch / "model.onnx", card.tile_size, BATCH)
        options = ort.SessionOptions()  # bare: onnxruntime's defaults, only the thread count set
        options.intra_op_num_threads = THREADS
        bare = ort.InferenceSession(str(export), options, providers=["CPUExecutionProvider"])
        export_int8 = quantize_int8(export, scratch / "model.int8.onnx")  # as the engine quantises
        bare_int8 = ort.InferenceSession(str(export_int8), options, providers=["CPUExecutionProvider"])
        batches = forward_batches(raster, card.tile_size)
        forward, forward_int8 = bare_forward_rounds(bare, batches), bare_forward_rounds(bare_int8, batches)
        for name, setting in timed.items():  # each run between bare-forward rounds: the load that hits it hits them
            row = runs[name] = dict(zip(("tile", "stride", "blend", "strips_ahead", "precision"), setting, strict=True))
            row.update(end_to_end(raster, size, setting, scratch))
            after, after_int8 = bare_forward_rounds(bare, batches), bare_forward_rounds(bare_int8, batches)
            row["bare_forward_mpx_per_s"] = round(float(np.median(forward[-FORWARD_ROUNDS:] + after)), 3)
            row["ratio_to_bare_forward"] = round(row["mpx_per_s"] / row["bare_forward_mpx_per_s"], 3)
            row["bare_int8_forward_mpx_per_s"] = round(float(np.median(forward_int8[-FORWARD_ROUNDS:] + after_int8)), 3)
            row["ratio_to_bare_int8_forward"] = round(row["mpx_per_s"] / row["bare_int8_forward_mpx_per_s"], 3)
            forward, forward_int8 = forward + after, forward_int8 + after_int8
            print(f"{name}: {row}", file=sys.stderr, flush=True)
        if not skip_quality:
            scenes = held_out_rasters(scratch)
            sessions = {
                (card.tile_size, "fp32"): onnx_session(export, THREADS),
                (card.tile_size, "int8"): onnx_session(export_int8, THREADS),
            }
            scored: dict[tuple[Tiling, str], dict] = {}  # levers that differ only in the threads score alike
            for name in quality_lever or levers:
                tile, stride, blend, _, precision = levers[name]
                if (tile, precision) not in sessions:
                    path = export_onnx(model, scratch / f"model_{tile}.onnx", tile, BATCH)
                    if precision == "int8":
                        path = quantize_int8(path, scratch / f"model_{tile}.int8.onnx")
                    sessions[tile, precision] = onnx_session(path, THREADS)
                tiling = Tiling(tile, stride, blend)
                if (tiling, precision) not in scored:
                    predict = sessions[tile, precision]
                    scored[tiling, precision] = quality(predict, tiling, scenes, card.classes, scratch)
                quality_rows[name] = {**tiling.to_dict(), "precision": precision, "miou": scored[tiling, precision]}
                print(f"{name}: mIoU {scored[tiling, precision]}", file=sys.stderr, flush=True)
            fp32, quantised = sessions[card.tile_size, "fp32"], sessions[card.tile_size, "int8"]
            int8 = {"pixels_equal_to_fp32": pixels_equal(batches, quantised, fp32)}
        speedup = round(float(np.median(forward_int8) / np.median(forward)), 3)
        int8 = {**(int8 or {}), "bare_forward_speedup": speedup}
    report = {
        "machine": describe(load_before, THREADS, onnxruntime=ort.__version__),
        "model": DEFAULT_MODEL,
        "card_tiling": card.tiling.to_dict(),
        "scene": {"size": size, "megapixels": round(size * size / 1e6, 1), "imagery": "sample scene, mirrored"},
        "bare_forward": {"rounds_mpx_per_s": forward, "median_mpx_per_s": round(float(np.median(forward)), 3)},
        "bare_int8_forward": {
            "rounds_mpx_per_s": forward_int8,
            "median_mpx_per_s": round(float(np.median(forward_int8)), 3),
        },
        "runs": runs,
        "quality": quality_rows,
        "int8_matmul": int8,
        "seconds": round(time.perf_counter() - started),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(out)
    for name, row in runs.items():
        print(
            f"{name:22s} {row['mpx_per_s']:6.3f} Mpx/s end to end, {row['ratio_to_bare_forward']:.2f}x the bare "
            f"forward ({row['bare_forward_mpx_per_s']:.3f}), {row['ratio_to_bare_int8_forward']:.2f}x its int8 "
            f"({row['bare_int8_forward_mpx_per_s']:.3f}), peak RSS {row['peak_rss_mib']} MiB"
        )
    for name, row in quality_rows.items():
        print(f"{name:22s} mIoU {row['miou']}")


if __name__ == "__main__":
    typer.run(main)
