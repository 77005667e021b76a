"""Shared fixtures: no network, tiny models, and the real Dubai data beside the project."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend.model.network import ModelConfig, SegmentationModel, create_model
from training.dubai import CLASSES as DUBAI_CLASSES

DUBAI_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai-aerial"


@pytest.fixture(autouse=True)
def _no_hub(tmp_path, monkeypatch):
    """Nothing may download weights: torch.hub and Hugging Face point to an empty folder, offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("CROSSEARTH_CACHE", str(tmp_path / "cache"))  # ONNX exports: one test's cache each


def tiny_config(**overrides) -> ModelConfig:
    """A two-block ViT, 32 wide, patch 8: the toy model of the engine's unit tests."""
    values = dict(
        backbone="vit_tiny_patch16_224",
        num_classes=3,
        img_size=32,
        backbone_args=dict(embed_dim=32, depth=2, num_heads=2, patch_size=8),
        head_channels=16,
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def tiny_model() -> SegmentationModel:
    torch.manual_seed(0)
    return create_model(tiny_config()).eval()


def write_tiny_model_folder(folder: Path, name: str = "tiny-test-model") -> Path:
    """A registry folder (card + weights) with a random toy ViT: fast enough for CLI and plugin tests."""
    from backend.model.network import save_model
    from backend.model.registry import ModelCard

    torch.manual_seed(0)
    config = tiny_config(num_classes=len(DUBAI_CLASSES), img_size=64)
    model = create_model(config).eval()
    card = ModelCard(
        name=name,
        description="random toy ViT for tests",
        architecture=config,
        classes=DUBAI_CLASSES,
        tile_size=64,
        stride=48,
    )
    card.write(folder)
    save_model(model, folder / "model.safetensors")
    return folder


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory) -> Path:
    return write_tiny_model_folder(tmp_path_factory.mktemp("models") / "tiny-test-model")
