"""The model registry: ``resources/models/<name>/`` holds ``model_card.json`` and ``model.safetensors``.

A model card is data, like timm's pretrained configs: architecture, classes with names and colours,
input bands and scaling, tile size, provenance and measured metrics. ``CROSSEARTH_MODELS`` (a folder)
adds or overrides models without touching the install.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.contract import DEFAULT_MODEL
from backend.errors import BadInput
from backend.model.cards import CARD_DEFAULTS, CARD_FILE, read_card
from backend.model.network import ModelConfig, SegmentationModel, create_model
from backend.segmentation.tiling import Tiling

BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[2] / "resources" / "models"
WEIGHTS_FILE = "model.safetensors"
SOURCE_SAMPLES_FILE = "source_samples.safetensors"  # see backend.adaptation.source_samples


@dataclass
class ModelCard:
    name: str
    description: str
    architecture: ModelConfig
    classes: list[dict]
    bands: list[str] = field(default_factory=lambda: list(CARD_DEFAULTS["bands"]))
    tile_size: int = CARD_DEFAULTS["tile_size"]
    stride: int = CARD_DEFAULTS["stride"]
    blend: str = CARD_DEFAULTS["blend"]
    nodata: int = CARD_DEFAULTS["nodata"]
    resolution_m: float | None = CARD_DEFAULTS["resolution_m"]  # what --resolution auto reads scenes at
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    folder: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.architecture, dict):
            self.architecture = ModelConfig(**self.architecture)
        if len(self.classes) != self.architecture.num_classes:
            raise ValueError(
                f"model card {self.name}: {len(self.classes)} classes but the network has "
                f"{self.architecture.num_classes} outputs"
            )
        if self.resolution_m is not None and not float(self.resolution_m) > 0:
            raise ValueError(f"model card {self.name}: resolution_m {self.resolution_m} is not a pixel size in metres")
        if len(self.bands) != self.architecture.in_chans:
            raise ValueError(f"model card {self.name}: {len(self.bands)} bands for {self.architecture.in_chans} inputs")
        Tiling(self.tile_size, self.stride, self.blend)  # checks them: a bad card says so when it is read

    @property
    def tiling(self) -> Tiling:
        """The card's own tiling; :meth:`Tiling.adjusted` puts a user's choices over it."""
        return Tiling(self.tile_size, self.stride, self.blend)

    @property
    def weights(self) -> Path:
        return Path(self.folder) / WEIGHTS_FILE

    @property
    def source_samples(self) -> Path | None:
        """Labelled crops of the training tiles, when the model ships them (backend.adaptation.source_samples)."""
        path = Path(self.folder) / SOURCE_SAMPLES_FILE
        return path if path.is_file() else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["architecture"] = self.architecture.to_dict()
        data.pop("folder")
        return data

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        data = read_card(folder)
        try:
            return cls(**data, folder=folder)
        except (ValueError, TypeError) as error:
            raise BadInput(f"{folder / CARD_FILE}: not a valid model card ({error})") from error

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CARD_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def model_dirs(extra: str | Path | None = None) -> list[Path]:
    """Folders searched for models, later ones overriding earlier ones."""
    dirs = [BUILTIN_MODELS_DIR]
    if os.environ.get("CROSSEARTH_MODELS"):
        dirs.append(Path(os.environ["CROSSEARTH_MODELS"]))
    if extra:
        dirs.append(Path(extra))
    return dirs


def list_models(extra_dir: str | Path | None = None) -> list[ModelCard]:
    cards: dict[str, ModelCard] = {}
    for directory in model_dirs(extra_dir):
        for card_path in sorted(directory.glob(f"*/{CARD_FILE}")) if directory.is_dir() else []:
            card = ModelCard.read(card_path.parent)
            cards[card.name] = card
    return list(cards.values())


def resolve_model(name_or_folder: str | Path = DEFAULT_MODEL, extra_dir: str | Path | None = None) -> ModelCard:
    """A registry name, or a folder holding a model card."""
    folder = Path(name_or_folder)
    if (folder / CARD_FILE).is_file():
        return ModelCard.read(folder)
    for card in list_models(extra_dir):
        if card.name == str(name_or_folder):
            return card
    known = ", ".join(card.name for card in list_models(extra_dir)) or "none"
    raise BadInput(f"{name_or_folder}: no such model (known models: {known})")


def load_model(card: ModelCard) -> SegmentationModel:
    if not card.weights.is_file():
        raise BadInput(f"{card.weights}: model weights missing for model {card.name}")
    return create_model(card.architecture, card.weights).eval()
