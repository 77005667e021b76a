"""Read a scene at the model's ground resolution, and put the outputs back on the scene's grid.

The model sees pixels, not metres: a 2 cm drone image or a 10 m satellite scene read as they are show it
things at a scale it never learnt. So the scene is read resampled to the pixel size the model was trained
at (``--resolution``): a GDAL VRT of the same extent on a coarser or finer grid, read lazily (through the
scene's overviews when coarser), and the class, confidence and entropy rasters made on that grid are
written back on the input's own grid, so that they overlay it exactly. This is a step around the
segmentation, not inside it: at the native pixel size nothing is resampled and no copy is made.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from backend.contract import AUTO, NATIVE, Scene
from backend.errors import BadInput
from backend.progress import CancelFn, check_cancelled, never_cancelled
from backend.rasters.class_raster import BLOCK, CLASS_NODATA, SegClass, SegmentationWriter
from backend.rasters.raster_io import RasterInfo, inspect_raster
from backend.rasters.roi import Roi

# a pixel size within 5 % of the scene's is read as it is: the model does not tell the difference
TOLERANCE = 0.05
# output columns written back at once (a multiple of the class rasters' blocks), so memory stays flat
WRITE_COLUMNS = 8 * BLOCK


def pixel_size_m(info: RasterInfo) -> tuple[float, float] | None:
    """The scene's pixel size (x, y) in metres; in a geographic CRS, at the latitude of its centre; None
    without a CRS (then nobody knows it)."""
    if info.crs is None:
        return None
    t = info.transform
    size_x, size_y = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if info.crs.is_geographic:
        _, lat = t * (info.width / 2, info.height / 2)
        phi = math.radians(lat)
        # metres per degree on the WGS 84 ellipsoid, along a parallel and along a meridian
        per_lon = 111412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi)
        per_lat = 111132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
        return size_x * per_lon, size_y * per_lat
    _, metres = info.crs.linear_units_factor
    return size_x * metres, size_y * metres


def resolution_factor(info: RasterInfo, model_m: float | None) -> float | None:
    """The model's pixel size over the scene's (2: ``auto`` reads the scene with half its pixels each way);
    None when either is not known."""
    scene_m = pixel_size_m(info)
    if scene_m is None or model_m is None:
        return None
    return _factor(model_m, scene_m)


def _factor(target_m: float, scene_m: tuple[float, float]) -> float:
    return target_m / math.sqrt(scene_m[0] * scene_m[1])


@dataclass(frozen=True)
class ScaleChoice:
    """The pixel size a scene is read at: the scene's own (``target_m`` None) or ``target_m`` metres."""

    scene_m: tuple[float, float] | None  # the scene's pixel size in metres (None: no CRS)
    model_m: float | None  # the model card's ground resolution (None: not known)
    target_m: float | None  # what the scene is read at; None: as it is
    width: int  # the scene's size on that grid
    height: int

    @property
    def factor(self) -> float:
        """Target over scene pixel size (geometric mean of x and y): 2 reads half as many pixels each way."""
        if self.target_m is None or self.scene_m is None:
            return 1.0
        return _factor(self.target_m, self.scene_m)

    @property
    def resamples(self) -> bool:
        return self.target_m is not None

    def describe(self) -> str:
        """One line for the log: what the scene is read at, and why."""
        if self.scene_m is None:
            return "the scene has no CRS: read at its own pixel size"
        scene = f"{_metres(self.scene_m[0])}" + ("" if _close(*self.scene_m) else f" x {_metres(self.scene_m[1])}")
        if not self.resamples:
            return f"reading the scene at its own pixel size, {scene}"
        return f"reading the scene at {_metres(self.target_m)} (its pixels: {scene}; factor {self.factor:.3g})"


def _metres(value: float) -> str:
    return f"{value * 100:.3g} cm" if value < 1 else f"{value:.3g} m"


def _close(a: float, b: float) -> bool:
    return abs(a / b - 1) <= TOLERANCE


def choose_scale(info: RasterInfo, resolution: str, model_m: float | None, tile: int) -> ScaleChoice:
    """The grid to read the scene on for ``--resolution`` (auto, native or metres) and the card's value.

    ``auto`` is the model's resolution when the card states one, else native; asking for metres of a scene
    without a CRS, or for a pixel size coarser than the scene's and so coarse that the whole scene then fits
    inside one tile, is bad input.
    """
    scene_m = pixel_size_m(info)
    native = ScaleChoice(scene_m, model_m, None, info.width, info.height)
    asked = model_m if resolution == AUTO else (None if resolution == NATIVE else float(resolution))
    if asked is None:
        return native
    if scene_m is None:
        if resolution == AUTO:
            return native  # nothing to resample from; the scene is read as it is
        raise BadInput(f"{info.path}: has no CRS, so its pixel size is unknown; use --resolution native")
    if _close(asked, scene_m[0]) and _close(asked, scene_m[1]):
        return native
    width = max(1, round(info.width * scene_m[0] / asked))
    height = max(1, round(info.height * scene_m[1] / asked))
    if asked > max(scene_m) and width < tile and height < tile:
        raise BadInput(
            f"resolution {asked:g} m: the scene would be {width} x {height} pixels, under one {tile}-pixel tile "
            f"(its pixels are {scene_m[0]:.3g} m)"
        )
    return ScaleChoice(scene_m, model_m, asked, width, height)


def scene_scale(scene: Scene, model_m: float | None, tile: int) -> ScaleChoice:
    """:func:`choose_scale` for a job's scene."""
    return choose_scale(inspect_raster(scene.input), scene.resolution, model_m, tile)


def resampled_vrt(source: str, width: int, height: int, resampling: str, path: Path) -> str:
    """A VRT of ``source`` on a ``width`` x ``height`` grid of the same extent: bands, nodata, masks and CRS
    kept, pixels resampled when read (GDAL picks the overview nearest below the asked size)."""
    from osgeo import gdal

    options = gdal.TranslateOptions(format="VRT", width=width, height=height, resampleAlg=resampling)
    dataset = gdal.Translate(str(path), os.path.abspath(source), options=options)
    if dataset is None:
        raise BadInput(f"{source}: GDAL could not resample it ({gdal.GetLastErrorMsg()})")
    dataset = None  # closing writes the VRT
    return str(path)


@contextmanager
def scene_at(scene: Scene, choice: ScaleChoice, folder: str | os.PathLike | None = None) -> Iterator[Scene]:
    """The scene to read: itself at its own pixel size, else a VRT of it at ``choice`` (in a temporary
    folder inside ``folder``, removed afterwards), with ``--resolution native`` since it is on its grid."""
    if not choice.resamples:
        yield scene
        return
    with tempfile.TemporaryDirectory(prefix=".crossearth-resolution-", dir=folder) as tmp:
        resampling = "average" if choice.factor > 1 else "bilinear"
        path = resampled_vrt(scene.input, choice.width, choice.height, resampling, Path(tmp) / "scene.vrt")
        yield replace(scene, input=path, resolution=NATIVE)


def label_raster_at(labels: str, choice: ScaleChoice, folder: str | os.PathLike) -> str:
    """A class raster aligned with the scene, on the grid ``choice`` reads the scene on: by mode when that
    grid is coarser (the most common class of the pixels it gathers), else by nearest."""
    resampling = "mode" if choice.factor > 1 else "nearest"
    return resampled_vrt(labels, choice.width, choice.height, resampling, Path(folder) / "labels.vrt")


def write_back(
    made: dict[str, str],
    outputs: dict[str, str],
    *,
    source: RasterInfo,
    bands: Sequence[int],
    roi: Roi,
    classes: Sequence[SegClass],
    choice: ScaleChoice,
    overwrite: bool,
    is_cancelled: CancelFn = never_cancelled,
) -> None:
    """Write the rasters ``made`` on the resampled grid (keys class, confidence, entropy) to ``outputs`` on
    the input's grid over ``roi``: classes by nearest (or mode, when the model's grid was finer), the maps
    bilinear; pixels that are nodata in the input or outside the ROI are nodata. All appear, or none."""
    window = roi.window
    width, height = int(window.width), int(window.height)
    class_resampling = Resampling.nearest if choice.factor > 1 else Resampling.mode
    with rasterio.open(made["class"]) as tagged:
        tags = tagged.tags()
    tags.update(
        SOURCE=source.path,
        ROI_WINDOW=[int(window.col_off), int(window.row_off), width, height],
        RESOLUTION={"scene_m": list(choice.scene_m or ()), "model_m": choice.target_m, "factor": choice.factor},
    )
    tags.pop("CLASSES", None)  # the writer sets it
    grid = {"crs": source.crs, "transform": window_transform(window, source.transform)}
    with (
        rasterio.open(source.path) as input_ds,
        _on_grid(made, grid, width, height, class_resampling) as readers,
        SegmentationWriter(
            outputs["class"],
            width=width,
            height=height,
            classes=classes,
            confidence=outputs.get("confidence"),
            entropy=outputs.get("entropy"),
            overwrite=overwrite,
            metadata=tags,
            **grid,
        ) as writer,
    ):
        for col in range(0, width, WRITE_COLUMNS):
            columns = min(WRITE_COLUMNS, width - col)
            writer.begin_columns(col, columns)
            for row in range(0, height, BLOCK):
                check_cancelled(is_cancelled)
                part = Window(col, row, columns, min(BLOCK, height - row))
                inside = Window(window.col_off + col, window.row_off + row, part.width, part.height)
                valid = np.all(input_ds.read_masks(list(bands), window=inside) > 0, axis=0) & roi.mask(inside)
                rows = {key: reader.read(1, window=part) for key, reader in readers.items()}
                labels = np.where(valid, rows["class"], CLASS_NODATA).astype(np.uint8)
                maps = {key: np.where(valid, rows[key], np.nan).astype(np.float32) for key in rows if key != "class"}
                writer.write_rows(labels, maps.get("confidence"), maps.get("entropy"))


@contextmanager
def _on_grid(made: dict[str, str], grid: dict, width: int, height: int, class_resampling: Resampling) -> Iterator[dict]:
    """The rasters ``made``, each seen on the target grid through a warped VRT."""
    with ExitStack() as stack:
        views = {}
        for key, path in made.items():
            dataset = stack.enter_context(rasterio.open(path))
            resampling = class_resampling if key == "class" else Resampling.bilinear
            views[key] = stack.enter_context(
                WarpedVRT(dataset, width=width, height=height, resampling=resampling, **grid)
            )
        yield views
