"""The models the plugin offers, read from ``<model folder>/<name>/model_card.json``.

The cards are read by the backend's own torch-free reader (:func:`backend.model.cards.read_card`, with the
card defaults), not by running ``crossearth models --json``: QGIS start-up imports no torch. The backend
is then given the model's folder (``--model DIR``), so both always agree on which model runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import BadInput
from backend.model.cards import CARD_FILE, read_card


@dataclass(frozen=True)
class ModelClass:
    value: int
    name: str
    color: str


@dataclass(frozen=True)
class ModelCard:
    name: str
    folder: Path
    description: str = ""
    classes: tuple[ModelClass, ...] = ()
    ignore_index: int = 255
    tile_size: int | None = None
    stride: int | None = None
    bands: tuple[str, ...] = field(default_factory=tuple)
    resolution_m: float | None = None  # the ground resolution the model was trained at, when known

    @classmethod
    def from_folder(cls, folder: Path) -> ModelCard:
        data = read_card(folder)
        return cls(
            name=str(data.get("name") or folder.name),
            folder=folder,
            description=str(data.get("description", "")),
            classes=tuple(
                ModelClass(int(c["value"]), str(c["name"]), str(c["color"])) for c in data.get("classes", [])
            ),
            ignore_index=int(data.get("ignore_index", data["nodata"])),
            tile_size=int(data["tile_size"]),
            stride=int(data["stride"]),
            bands=tuple(str(b) for b in data["bands"]),
            resolution_m=None if data["resolution_m"] is None else float(data["resolution_m"]),
        )


def list_model_cards(model_folder: Path) -> list[ModelCard]:
    """Every readable card below ``model_folder``, sorted by name; unreadable cards are skipped."""
    if not model_folder.is_dir():
        return []
    cards = []
    for card_file in sorted(model_folder.glob(f"*/{CARD_FILE}")):
        try:
            cards.append(ModelCard.from_folder(card_file.parent))
        except (BadInput, ValueError, KeyError, TypeError):
            continue
    return sorted(cards, key=lambda card: card.name)


def find_model_card(model_folder: Path, name: str) -> ModelCard | None:
    return next((card for card in list_model_cards(model_folder) if card.name == name), None)
