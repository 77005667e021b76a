"""Make the sample scene: a mosaic of Dubai tile-6 images and its labels as GeoTIFFs with an assigned CRS.

Tile 6 is never used to train the default model, so ``make demo`` adapts to a district the model never
saw. The nine tile-6 images are the 3 x 3 parts of one larger image (part 1 top left, row by row;
their seams match), so the top-left 2 x 2 parts make one ~1718 x 1676 scene with all five classes.
The data set has no georeferencing: the CRS (UTM 40N) and the 1.5 m pixel size are assigned so that
GIS tools can place it, near Dubai; they are not the true location.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
import typer
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.analysis.metrics import IGNORE_INDEX
from backend.rasters.atomic import atomic_output
from training.dubai import CLASSES, data_dir, read_part

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "resources" / "samples"
TILE = 6
PARTS = ((1, 2), (4, 5))  # image_part_XXX numbers, as rows of the mosaic
ASSIGNED_CRS = CRS.from_epsg(32640)  # WGS 84 / UTM zone 40N
ASSIGNED_ORIGIN = (320000.0, 2790000.0)  # upper-left corner (easting, northing), near Dubai
ASSIGNED_PIXEL_SIZE = 1.5  # metres
ANALYST_POLYGONS = 20
PROFILE = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "deflate",
    "crs": ASSIGNED_CRS,
    "transform": Affine(ASSIGNED_PIXEL_SIZE, 0.0, ASSIGNED_ORIGIN[0], 0.0, -ASSIGNED_PIXEL_SIZE, ASSIGNED_ORIGIN[1]),
}


def mosaic(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 ``[3, H, W]`` and class labels uint8 ``[H, W]`` of the parts in ``PARTS``."""
    image_rows, label_rows = [], []
    for row in PARTS:
        images, labels = [], []
        for part in row:
            image, mask = read_part(TILE, part, root)
            images.append((image * 255.0).round().byte().numpy())
            labels.append(mask.numpy().astype(np.uint8))
        if len({a.shape[-2] for a in images}) != 1:
            raise ValueError(f"parts {row} of tile {TILE} differ in height")
        image_rows.append(np.concatenate(images, axis=-1))
        label_rows.append(np.concatenate(labels, axis=-1))
    if len({a.shape[-1] for a in image_rows}) != 1:
        raise ValueError(f"rows {PARTS} of tile {TILE} differ in width")
    return np.concatenate(image_rows, axis=-2), np.concatenate(label_rows, axis=-2)


def write_scene(image: np.ndarray, path: Path) -> None:
    with (
        atomic_output(path, overwrite=True) as tmp,
        rasterio.open(
            tmp, "w", **PROFILE, width=image.shape[2], height=image.shape[1], count=3, dtype="uint8", predictor=2
        ) as dst,
    ):
        dst.write(image)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(source=f"Dubai aerial imagery tile {TILE}, parts {PARTS}", georeferencing="assigned, not real")


def write_labels(labels: np.ndarray, path: Path) -> None:
    with (
        atomic_output(path, overwrite=True) as tmp,
        rasterio.open(
            tmp,
            "w",
            **PROFILE,
            width=labels.shape[1],
            height=labels.shape[0],
            count=1,
            dtype="uint8",
            nodata=IGNORE_INDEX,
        ) as dst,
    ):
        dst.write(labels, 1)
        dst.write_colormap(1, {c["value"]: _rgb(c["color"]) for c in CLASSES})
        dst.set_band_description(1, "class: " + ", ".join(f"{c['value']} {c['name']}" for c in CLASSES))
        dst.update_tags(georeferencing="assigned, not real", nodata_meaning="Unlabeled or unknown mask colour")


def write_analyst_polygons(labels: np.ndarray, labels_path: Path, path: Path) -> None:
    """20 polygons inside the reference's regions, going round the classes (bench/quality/analyst.py, seed 0): what
    an analyst would draw in a few minutes, for ``make demo``'s run with labels."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "quality"))
    from analyst import draw_disks, write_disks

    disks = draw_disks(labels.astype(np.int64), ANALYST_POLYGONS, "classes", seed=0)
    with rasterio.open(labels_path) as raster, atomic_output(path, overwrite=True) as tmp:
        write_disks(disks, CLASSES, raster.transform, raster.crs.to_wkt(), tmp)


def _rgb(color: str) -> tuple[int, int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16), 255


def main(output: Path = SAMPLES_DIR) -> None:
    """Write dubai_tile6.tif (RGB) and dubai_tile6_labels.tif (classes 0-4, 255 ignore) into ``output``."""
    image, labels = mosaic(data_dir())
    output.mkdir(parents=True, exist_ok=True)
    write_scene(image, output / "dubai_tile6.tif")
    write_labels(labels, output / "dubai_tile6_labels.tif")
    write_analyst_polygons(labels, output / "dubai_tile6_labels.tif", output / "dubai_tile6_polygons.gpkg")
    counts = np.bincount(labels.ravel(), minlength=256)
    summary = ", ".join(f"{c['name']} {counts[c['value']] / labels.size:.1%}" for c in CLASSES)
    print(
        f"wrote {output}/dubai_tile6.tif and dubai_tile6_labels.tif: {image.shape[2]} x {image.shape[1]} px; {summary}"
    )


if __name__ == "__main__":
    typer.run(main)
