"""The product's promise: ``adapt-segment`` with default settings beats ``segment`` on districts never seen.

One Dubai image of a held-out tile becomes a GeoTIFF scene with an assigned CRS (as the sample scene is
made), optionally seen through the benchmark's sensor shift (``protocol.sensor_shift``); it is segmented
by the unadapted model and by adapt-and-segment (DA on the scene itself, its labels unused), and both class
rasters are scored with ``jobs.evaluate`` against the label raster.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from make_sample_scene import write_labels, write_scene  # noqa: E402
from protocol import sensor_shift  # noqa: E402

from backend.jobs import AdaptOptions, Scene, SegmentOptions, adapt_and_segment, evaluate, segment  # noqa: E402
from training.dubai import read_part  # noqa: E402


def run_promise(spec: dict) -> dict:
    """``spec``: model (folder of the held-out default model), tile, part (image number), options (AdaptOptions
    fields; empty = the product's defaults), and ``domain`` "shift" for the scene through the sensor shift (absent
    for the image as it is, so the specs and cache keys of those runs stay what they were)."""
    image, mask = read_part(spec["tile"], spec["part"])
    if spec.get("domain") == "shift":
        image = sensor_shift(image, seed=100 * spec["tile"] + spec["part"])
    with tempfile.TemporaryDirectory(prefix="crossearth-promise-") as tmp:
        scene_path, labels_path = Path(tmp) / "scene.tif", Path(tmp) / "labels.tif"
        write_scene((image * 255.0).round().byte().numpy(), scene_path)
        write_labels(mask.numpy().astype(np.uint8), labels_path)
        scene = Scene(input=str(scene_path), model=spec["model"], threads=1)
        plain = str(Path(tmp) / "segment.tif")
        segment(scene, SegmentOptions(output=plain))
        started = time.perf_counter()
        adapted = str(Path(tmp) / "adapted.tif")
        adapt_and_segment(scene, AdaptOptions(**spec["options"]), SegmentOptions(output=adapted))
        seconds = time.perf_counter() - started
        before = evaluate(plain, str(labels_path), model=spec["model"])
        after = evaluate(adapted, str(labels_path), model=spec["model"])
    keep = ("miou", "overall_accuracy", "iou")
    return {
        "spec": spec,
        "segment": {k: before[k] for k in keep},
        "adapt_segment": {k: after[k] for k in keep},
        "gain_miou": after["miou"] - before["miou"],
        "adapt_segment_seconds": round(seconds, 1),
    }
