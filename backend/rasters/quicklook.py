"""A PNG quicklook: the scene beside its land-cover map, with a legend, read at reduced resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from backend.rasters.atomic import atomic_output

MAX_SIDE = 1200  # pixels of the longer side in the quicklook


def _read_reduced(path: str, bands: list[int], resampling: Resampling) -> np.ndarray:
    with rasterio.open(path) as dataset:
        scale = max(1.0, max(dataset.width, dataset.height) / MAX_SIDE)
        shape = (len(bands), max(1, round(dataset.height / scale)), max(1, round(dataset.width / scale)))
        return dataset.read(bands, out_shape=shape, resampling=resampling)


def write_quicklook(
    scene: str,
    classes_raster: str,
    classes: list[dict],
    path: str | Path,
    bands: list[int] | None = None,
    overwrite: bool = False,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    image = _read_reduced(scene, bands or [1, 2, 3], Resampling.average).astype(np.float32)
    low, high = np.percentile(image, [2, 98], axis=(1, 2), keepdims=True)
    image = np.clip((image - low) / np.maximum(high - low, 1e-6), 0, 1).transpose(1, 2, 0)
    labels = _read_reduced(classes_raster, [1], Resampling.mode)[0]
    colours = np.zeros((256, 4))
    for entry in classes:
        colours[entry["value"]] = matplotlib.colors.to_rgba(entry["color"])
    height, width = labels.shape
    figure, axes = plt.subplots(1, 2, figsize=(12, 6 * height / width + 0.8))
    axes[0].imshow(image)
    axes[0].set_title(Path(scene).name)
    axes[1].imshow(labels, cmap=ListedColormap(colours), vmin=0, vmax=255, interpolation="nearest")
    axes[1].set_title(Path(classes_raster).name)
    for axis in axes:
        axis.set_axis_off()
    handles = [Patch(color=entry["color"], label=entry["name"]) for entry in classes]
    figure.legend(handles=handles, loc="lower center", ncol=len(classes), frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_output(path, overwrite) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return Path(path)
