"""Ship labelled crops of a model's training tiles beside its weights (``source_samples.safetensors``).

``adapt-segment --source-samples`` mixes them into the scene's crops (DACS) so that self-training stays
anchored to what the model was trained on. Per training tile (from the model card's provenance), the
images whose best crop mixes the classes most are kept, so that the rare classes (Road, Water) are in.

    python scripts/make_source_samples.py                  # the embedded default model
    python scripts/make_source_samples.py --model-dir DIR  # another model folder trained on Dubai tiles
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.adaptation.source_samples import save_source_samples
from backend.contract import DEFAULT_MODEL
from backend.model.registry import BUILTIN_MODELS_DIR, SOURCE_SAMPLES_FILE, ModelCard
from training.dubai import CLASSES, load_tile
from training.source_crops import most_mixed_corner


def best_crop(sample: dict, size: int) -> tuple[float, dict]:
    """The image's most class-mixed ``size`` crop (``most_mixed_corner``) and its label entropy."""
    entropy, (top, left) = most_mixed_corner(sample["mask"], size, len(CLASSES))
    window = (slice(top, top + size), slice(left, left + size))
    return entropy, {"image": sample["image"][(slice(None), *window)], "mask": sample["mask"][window]}


def main(
    model_dir: Annotated[Path, typer.Option(help="model folder; its card names the training tiles")] = (
        BUILTIN_MODELS_DIR / DEFAULT_MODEL
    ),
    crops: Annotated[int, typer.Option(help="crops in all, shared evenly between the training tiles")] = 24,
    size: Annotated[int, typer.Option(help="crop side in pixels (the adaptation crop size)")] = 256,
) -> None:
    card = ModelCard.read(model_dir)
    tiles = card.provenance.get("train_tiles")
    if not tiles:
        raise typer.BadParameter(f"{model_dir}: the model card names no train_tiles")
    per_tile = math.ceil(crops / len(tiles))
    samples = []
    for tile in tiles:
        ranked = sorted((best_crop(s, size) for s in load_tile(tile)), key=lambda pair: -pair[0])
        samples += [crop for _, crop in ranked[:per_tile]]
    path = model_dir / SOURCE_SAMPLES_FILE
    save_source_samples(samples, path, {"model": card.name, "tiles": tiles, "crops_per_tile": per_tile, "size": size})
    print(f"wrote {len(samples)} crops of {size} px from tiles {tiles} to {path}")


if __name__ == "__main__":
    typer.run(main)
