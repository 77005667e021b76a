"""Cluster throughput, all in one run: one synthetic raster segmented in a single process and on 1 and 2
local Dask workers.

    python bench/cluster.py --out results/cluster.json

Each worker gets one inference thread, so going from 1 to 2 workers shows how throughput follows the
number of workers; the single-process run uses every core, as ``crossearth segment`` does. Every run
includes loading the model (and exporting it to ONNX, on onnx: once per worker); starting the workers
and importing torch in them is timed apart. Several machines or GPU workers: docs/cluster.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import rasterio
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.errors import BadInput  # noqa: E402
from backend.jobs import Scene, SegmentOptions, segment  # noqa: E402
from backend.model.network import ModelConfig, create_model, save_model  # noqa: E402
from backend.model.registry import DEFAULT_MODEL, WEIGHTS_FILE, ModelCard, resolve_model  # noqa: E402
from backend.segmentation.cluster import connect  # noqa: E402
from training.dubai import CLASSES  # noqa: E402

SIZE = 3000
# (name, --cluster, inference threads per process; None: every core)
RUNS = (("single process", None, None), ("1 local worker", "local:1", 1), ("2 local workers", "local:2", 1))
# the default model's architecture (scripts/train_default.py), with random weights until it is trained
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


def models_dir(scratch: Path) -> tuple[str | None, str]:
    """(folder to search, what the weights are): the trained default model, or its architecture at random."""
    try:
        if resolve_model(DEFAULT_MODEL).weights.is_file():
            return None, "trained"
    except BadInput:
        pass
    torch.manual_seed(0)
    card = ModelCard(
        name=DEFAULT_MODEL,
        description="default architecture with random weights (benchmark stand-in)",
        architecture=DEFAULT_ARCHITECTURE,
        classes=CLASSES,
    )
    card.write(scratch / DEFAULT_MODEL)
    save_model(create_model(DEFAULT_ARCHITECTURE), scratch / DEFAULT_MODEL / WEIGHTS_FILE)
    return str(scratch), "random (default model not trained yet)"


def write_raster(path: Path, size: int) -> None:
    """uint8 RGB GeoTIFF of smooth fields and noise."""
    from rasterio.transform import from_origin

    x = np.arange(size, dtype=np.float32)[None, :]
    y = np.arange(size, dtype=np.float32)[:, None]
    noise = np.random.default_rng(0).normal(0, 12, (3, size, size))
    bands = [128 + 90 * np.sin(x / 97 + phase) * np.cos(y / 131 - phase) for phase in (0.0, 1.3, 2.6)]
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32640",
        transform=from_origin(320000, 2790000, 1.5, 1.5), tiled=True, compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.clip(np.stack(bands) + noise, 0, 255).astype(np.uint8))


def import_backend() -> None:
    """Runs on each worker before the timing: the imports every later run finds done."""


def timed_run(raster: Path, output: Path, folder: str | None, engine: str, cluster: str | None, threads) -> dict:
    """One segmentation of ``raster``, model loading (and ONNX export) included; on ``local:N`` the workers
    are started and have imported the backend first, as the single process has, and that is timed apart."""
    scene = Scene(str(raster), model=DEFAULT_MODEL, models_dir=folder, threads=threads)
    options = SegmentOptions(output=str(output), engine=engine, overwrite=True)
    with rasterio.open(raster) as dataset:
        megapixels = dataset.width * dataset.height / 1e6
    with ExitStack() as stack:
        started = time.perf_counter()
        address = None
        if cluster:
            client = stack.enter_context(connect(cluster))
            client.run(import_backend)
            address = client.scheduler.address
        ready = time.perf_counter()
        segment(scene, options, cluster=address)
        seconds = time.perf_counter() - ready
    return {
        "cluster": cluster,
        "threads_per_process": threads or os.cpu_count(),
        "cluster_start_seconds": round(ready - started, 1),
        "seconds": round(seconds, 1),
        "mpx_per_s": round(megapixels / seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "cluster.json")
    parser.add_argument("--engine", default="torch", help="one engine for every run (auto may pick per run)")
    parser.add_argument("--size", type=int, default=SIZE, help="raster side in pixels")
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="crossearth-bench-cluster-") as scratch:
        folder, weights = models_dir(Path(scratch))
        raster = Path(scratch) / f"synthetic_{args.size}.tif"
        write_raster(raster, args.size)
        classes = {}
        for name, cluster, threads in RUNS:
            output = Path(scratch) / f"classes_{cluster or 'single'}.tif"
            runs[name] = timed_run(raster, output, folder, args.engine, cluster, threads)
            with rasterio.open(output) as dataset:
                classes[name] = dataset.read(1)
            print(f"{name}: {runs[name]}", file=sys.stderr, flush=True)
    one, two = runs["1 local worker"], runs["2 local workers"]
    report = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__,
        },
        "model": {"name": DEFAULT_MODEL, "weights": weights, "engine": args.engine},
        "raster": {"side_px": args.size, "megapixels": args.size**2 / 1e6},
        "runs": runs,
        "speedup_2_over_1_workers": round(two["mpx_per_s"] / one["mpx_per_s"], 2),
        "classes_2_workers_equal_1_worker": bool(np.array_equal(classes["2 local workers"], classes["1 local worker"])),
        "class_agreement_with_single_process": round(
            float(np.mean(classes["2 local workers"] == classes["single process"])), 6
        ),
        "seconds": round(time.perf_counter() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
