"""Peak memory of the sliding window alone, with panels of columns against one pass over the full width.

A stand-in predictor (probabilities from the pixel values, no model) isolates what the window machinery
holds: strip sums, the running accumulator, output block rows and GDAL's cache. Each run is its own
subprocess, so its peak RSS is its own. ``make bench`` runs it; results/window_memory.json.

    python bench/window_memory.py --out results/window_memory.json
"""

from __future__ import annotations

import json
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.contract import DEFAULT_MODEL  # noqa: E402
from backend.model.cards import read_card  # noqa: E402
from backend.segmentation.sliding_window import PANEL_COLUMNS  # noqa: E402
from backend.segmentation.tiling import Tiling  # noqa: E402

SIZES = (1000, 4000, 10000)
ONE_PASS = 1_000_000  # panel width wider than any raster here: the whole width at once
CARD = read_card(ROOT / "resources" / "models" / DEFAULT_MODEL)  # no torch: this measures the window alone
TILING = Tiling(CARD["tile_size"], CARD["stride"], CARD["blend"])  # the shipped model's tiling
CLASSES = [{"value": i, "name": f"class {i}", "color": "#808080"} for i in range(5)]


def write_noise_raster(path: Path, size: int) -> None:
    """A tiled, compressed uint8 RGB raster of ``size`` x ``size`` random pixels, written a block row at a time."""
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32640")
    profile |= dict(transform=from_origin(300000, 2800000, 1, 1), tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(path, "w", compress="deflate", **profile) as dataset:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            block = np.random.default_rng(row).integers(0, 255, (3, rows, size), dtype=np.uint8)
            dataset.write(block, window=((row, row + rows), (0, size)))


def pixel_probabilities(batch: np.ndarray) -> np.ndarray:
    scores = np.stack([batch[:, 0], batch[:, 1], batch[:, 2], 1 - batch[:, 0], 1 - batch[:, 1]], axis=1) + 1e-3
    return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


def child(raster: str, columns: int, folder: str) -> dict:
    """Runs in the subprocess: one segment_scene call with a confidence output."""
    import backend.segmentation.sliding_window as sliding_window
    from backend.rasters.raster_io import SceneReader

    sliding_window.PANEL_COLUMNS = columns
    start = time.perf_counter()
    with SceneReader(raster) as reader:
        result = sliding_window.segment_scene(
            reader,
            pixel_probabilities,
            Path(folder) / "classes.tif",
            classes=CLASSES,
            tiling=TILING,
            confidence=Path(folder) / "confidence.tif",
        )
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": peak_kib // 1024, "tiles": result.tiles}


def main(
    out: Annotated[Path, typer.Option(help="results JSON")] = ROOT / "results" / "window_memory.json",
    child_args: Annotated[str | None, typer.Option("--child", hidden=True)] = None,
) -> None:
    if child_args:
        raster, columns, folder = json.loads(child_args)
        print(json.dumps(child(raster, columns, folder)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="crossearth-window-memory-") as scratch:
        for size in SIZES:
            raster = Path(scratch) / f"noise_{size}.tif"
            write_noise_raster(raster, size)
            for label, columns in (("panels", PANEL_COLUMNS), ("one pass", ONE_PASS)):
                folder = Path(scratch) / f"{size}_{label.replace(' ', '_')}"
                folder.mkdir()
                argv = [sys.executable, __file__, "--child", json.dumps([str(raster), columns, str(folder)])]
                measured = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
                rows.append({"size": size, "mode": label, "panel_columns": columns, **measured})
                print(f"{size:>6} px  {label:<8}  {measured['peak_rss_mib']:>5} MiB  {measured['seconds']:>6} s")
    out.write_text(json.dumps({"stand_in_predictor": True, "tiling": TILING.to_dict(), "runs": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
