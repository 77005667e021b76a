"""The same image at two declared pixel sizes, segmented at the same ``--resolution``: same map, similar time.

    python bench/resolution.py --out results/resolution.json

A crop of ``resources/samples/dubai_tile6.tif`` (1.5 m pixels) is written as it is and upsampled three times
(bilinear) with 0.5 m pixels, both tiled GeoTIFFs without overviews. The default model segments both at
``--resolution 1.5`` and, for the contrast, the upsampled one at ``--resolution native`` (what happened before
there was a choice: nine times the tiles, and objects three times the size the model learnt). Each map is
scored against the sample's labels (upsampled by nearest for the 0.5 m image) and against the 1.5 m map, on
the 0.5 m pixel at the centre of each 1.5 m one. The runs are timed round-robin with the model loaded once
and one torch thread, so that other work on the machine hits them alike; the table keeps each run's best
round and its median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.analysis.metrics import confusion_matrix, scores  # noqa: E402
from backend.contract import Scene, SegmentOptions  # noqa: E402
from backend.jobs import open_model, segment  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "dubai_tile6.tif"
LABELS = REPO / "resources" / "samples" / "dubai_tile6_labels.tif"
CROP = Window(0, 0, 1024, 1024)
UPSAMPLE = 3
RESOLUTION = "1.5"  # the sample's (assigned) pixel size
RUNS = (("1.5 m image", "as_is", RESOLUTION), ("0.5 m image", "x3", RESOLUTION))
CONTRAST = ("0.5 m image read as it is", "x3", "native")


def write(path: Path, data: np.ndarray, profile: dict, transform: Affine) -> Path:
    _, height, width = data.shape
    profile = {**profile, "width": width, "height": height, "transform": transform}
    profile.update(tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
    return path


def scenes(folder: Path) -> tuple[dict[str, Path], np.ndarray]:
    """The crop as it is and upsampled, and its labels."""
    with rasterio.open(SAMPLE) as sample, rasterio.open(LABELS) as labels:
        profile = {k: sample.profile[k] for k in ("driver", "count", "dtype", "crs")}
        transform = sample.window_transform(CROP)
        size = (sample.count, CROP.height * UPSAMPLE, CROP.width * UPSAMPLE)
        paths = {
            "as_is": write(folder / "as_is.tif", sample.read(window=CROP), profile, transform),
            "x3": write(
                folder / "x3.tif",
                sample.read(window=CROP, out_shape=size, resampling=Resampling.bilinear),
                profile,
                transform * Affine.scale(1 / UPSAMPLE),
            ),
        }
        return paths, labels.read(1, window=CROP)


def run_once(model, scene: Path, resolution: str, out: Path) -> tuple[float, np.ndarray]:
    options = SegmentOptions(output=str(out), engine="torch", overwrite=True)
    started = time.perf_counter()
    segment(Scene(str(scene), resolution=resolution), options, model=model)
    seconds = time.perf_counter() - started
    with rasterio.open(out) as made:
        return seconds, made.read(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "resolution.json")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    model = open_model(Scene(str(SAMPLE)))
    names = [c["name"] for c in model[0].classes]
    with tempfile.TemporaryDirectory(prefix="bench-resolution-") as tmp:
        paths, truth = scenes(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name, _, _ in RUNS}
        maps: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for name, key, resolution in RUNS:
                seconds, maps[name] = run_once(model, paths[key], resolution, Path(tmp) / f"{key}_{resolution}.tif")
                times[name].append(seconds)
        name, key, resolution = CONTRAST
        seconds, maps[name] = run_once(model, paths[key], resolution, Path(tmp) / "contrast.tif")
        times[name] = [seconds]
    fine_truth = np.kron(truth, np.ones((UPSAMPLE, UPSAMPLE), truth.dtype))
    reference = maps[RUNS[0][0]]
    rows = {}
    for name, found in maps.items():
        fine = found.shape != reference.shape
        labels = fine_truth if fine else truth
        centres = found[UPSAMPLE // 2 :: UPSAMPLE, UPSAMPLE // 2 :: UPSAMPLE] if fine else found
        rows[name] = {
            "seconds_best": round(min(times[name]), 2),
            "seconds_median": round(statistics.median(times[name]), 2),
            "rounds": len(times[name]),
            "miou_vs_labels": round(scores(confusion_matrix(found, labels, 5), names)["miou"], 4),
            "agreement_with_1.5m_map": round(float((centres == reference).mean()), 4),
            "miou_against_1.5m_map": round(scores(confusion_matrix(centres, reference, 5), names)["miou"], 4),
        }
    as_is, upsampled = (rows[name] for name, _, _ in RUNS)
    result = {
        "what": "one image at two declared pixel sizes segmented by the default model at --resolution 1.5",
        "image": f"{SAMPLE.relative_to(REPO)} window {CROP.width} x {CROP.height} at (0, 0); x3: bilinear, 0.5 m",
        "runs": rows,
        "time_ratio_0.5m_over_1.5m": round(upsampled["seconds_best"] / as_is["seconds_best"], 2),
        "miou_difference_points": round(100 * abs(upsampled["miou_vs_labels"] - as_is["miou_vs_labels"]), 2),
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": 1,
            "load_average_before": [round(v, 1) for v in load_before],
            "load_average_after": [round(v, 1) for v in os.getloadavg()],
        },
        "command": "python bench/resolution.py --out results/resolution.json",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
