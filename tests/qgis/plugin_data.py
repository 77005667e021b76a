"""Test data of the plugin tests: a tiny real model and tiny GeoTIFFs.

The model is a two-block ViT built and saved by the backend's own helpers (random weights,
never downloaded), so a whole adapt-and-segment run takes a few seconds on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from backend.model.network import ModelConfig, create_model, save_model
from backend.model.registry import WEIGHTS_FILE, ModelCard

TINY_MODEL = "tiny-test"
TINY_CLASSES = [
    {"value": 0, "name": "Building", "color": "#3C1098"},
    {"value": 1, "name": "Road", "color": "#6EC1E4"},
    {"value": 2, "name": "Water", "color": "#E2A929"},
]
SCENE_CRS = CRS.from_epsg(32640)
SCENE_ORIGIN = (500_000.0, 2_800_000.0)
SCENE_SIZE = 64


def write_tiny_model(folder: Path) -> Path:
    """``folder/tiny-test`` with model_card.json and model.safetensors, as the registry expects."""
    import torch

    torch.manual_seed(0)
    config = ModelConfig(
        backbone="vit_tiny_patch16_224",
        num_classes=len(TINY_CLASSES),
        img_size=32,
        backbone_args={"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
        head_channels=16,
    )
    model_dir = folder / TINY_MODEL
    card = ModelCard(
        name=TINY_MODEL,
        description="Two-block ViT with random weights, for the plugin's tests",
        architecture=config,
        classes=TINY_CLASSES,
        tile_size=32,
        stride=24,
    )
    card.write(model_dir)
    save_model(create_model(config).eval(), model_dir / WEIGHTS_FILE)
    return model_dir


def write_scene(path: Path, bands: int = 3, size: int = SCENE_SIZE, seed: int = 0) -> Path:
    """A fixed-seed RGB GeoTIFF in UTM 40N (Dubai), 1 m pixels."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(bands, size, size), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "uint8",
        "crs": SCENE_CRS,
        "transform": from_origin(*SCENE_ORIGIN, 1.0, 1.0),
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
        if bands == 3:
            dataset.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return path


def write_labels(path: Path, size: int = SCENE_SIZE, seed: int = 1) -> Path:
    """Class indices 0..2 in stripes, with an ignored (255) corner."""
    labels = np.repeat((np.arange(size) // (size // 3)).clip(0, 2)[:, None], size, axis=1).astype(np.uint8)
    labels[:8, :8] = 255
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": SCENE_CRS,
        "transform": from_origin(*SCENE_ORIGIN, 1.0, 1.0),
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(labels, 1)
    return path


def backend_children() -> list[int]:
    """Child processes of this test process that run the backend CLI (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"backend.cli" in cmdline:
            children.append(int(entry.name))
    return children


def run_qgis_process(
    plugin_path: Path, profile: Path, settings: dict[str, str], args: list[str], env: dict[str, str] | None = None
):
    """``qgis_process.bin --json ARGS`` with the plugin enabled in a fresh profile holding ``settings``;
    ``env``: the environment to start from (default: this process's)."""
    import subprocess

    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    values = "\n".join(f"{key}={value}" for key, value in settings.items())
    ini.write_text(f"[PythonPlugins]\nqgis_crossearth=true\n\n[crossearth]\n{values}\n", encoding="utf-8")
    env = {
        **(os.environ if env is None else env),
        "QT_QPA_PLATFORM": "offscreen",
        "QGIS_PLUGINPATH": str(plugin_path),
        "QGIS_CUSTOM_CONFIG_PATH": str(profile),
    }
    return subprocess.run(
        ["qgis_process.bin", "--json", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
