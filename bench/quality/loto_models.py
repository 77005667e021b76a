"""The leave-one-tile-out models of the safe-adaptation protocol: the shipped recipe on five Dubai tiles.

    python bench/quality/loto_models.py        (make bench-loto-models; about 45 minutes a model on one core)

``held-out-N`` is ``make train-default``'s recipe (scripts/train_default.py, seed 0) trained on every tile but
N; the shipped model is the one for tile 6. Each is cached under ``--cache`` and skipped when present, so a
run that was stopped goes on where it was; bench/quality/safe.py reads them with ``--loto-models``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from training.dubai import TILES  # noqa: E402

DEFAULT_CACHE = Path.home() / ".cache" / "crossearth" / "loto"
SHIPPED_HELD_OUT = 6


def main(
    cache: Annotated[Path, typer.Option(help="where the held-out-N model folders go (not committed)")] = DEFAULT_CACHE,
    tiles: Annotated[list[int] | None, typer.Option("--tile", help="held-out tiles to train (default: 1-5)")] = None,
) -> None:
    import train_default

    for held_out in tiles or [t for t in TILES if t != SHIPPED_HELD_OUT]:
        folder = cache / f"held-out-{held_out}"
        if (folder / "model.safetensors").is_file():
            print(f"{folder}: cached", flush=True)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        train = [t for t in TILES if t != held_out]
        print(f"training on tiles {train}, holding out {held_out} -> {folder}", flush=True)
        train_default.main(train_tiles=train, eval_tiles=[held_out], output=folder, log=folder / "train.log")


if __name__ == "__main__":
    typer.run(main)
