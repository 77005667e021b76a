"""How far do the adapted toolbox modules move the prediction, next to the head they were trained with?

    python bench/quality/module_effect.py --out results/module_effect.json

On the product's path (``adapt_scene`` with the default options, or the faster-module variants of the
held-out set) each promise scene is adapted once; then the adapted model predicts the scene's whole 512 px
tiles with its modules as trained and with every module switched off (the same adapted head), and the plain
model predicts them too. The pixels whose class changes measure each part's effect: the modules' when they
are switched off, the head's between the plain model and the modules-off one. A gate can only matter as much
as the modules it chooses move the prediction.
"""

from __future__ import annotations

import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Annotated

import torch
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from make_sample_scene import write_scene
from run import DEFAULT_CACHE, HELD_OUT_OPTIONS, PROMISE_SCENES, X3, X10

from backend.jobs import AdaptOptions, Scene, adapt_scene, open_model
from training.dubai import read_part

METHODS = ["fisher_gate", "fisher_gate" + X3, "fisher_gate, k=2" + X10]
TILE = 512


def whole_tiles(image: torch.Tensor) -> torch.Tensor:
    """Every whole TILE x TILE tile of a (C, H, W) image, as a batch."""
    rows, cols = image.shape[1] // TILE, image.shape[2] // TILE
    return torch.stack(
        [image[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] for r in range(rows) for c in range(cols)]
    )


def changed(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Share of pixels whose class differs, and the mean absolute logit difference."""
    return {"pixels": float((a.argmax(1) != b.argmax(1)).float().mean()), "logit": float((a - b).abs().mean())}


def measure(method: str, tile: int, part: int, model: str) -> dict:
    image, _ = read_part(tile, part)
    with tempfile.TemporaryDirectory(prefix="crossearth-effect-") as tmp:
        scene = Scene(input=str(Path(tmp) / "scene.tif"), model=model, threads=1)
        write_scene((image * 255.0).round().byte().numpy(), Path(scene.input))
        adapter = str(Path(tmp) / "scene.adapter.safetensors")
        options = AdaptOptions(**{**HELD_OUT_OPTIONS[method], "seed": 0, "adapter_out": adapter})
        adapt_scene(scene, options)
        _, plain = open_model(scene)
        _, adapted = open_model(scene, adapter=adapter)
    batch = whole_tiles(image.float())
    with torch.inference_mode():
        before = plain.eval()(batch)
        with_modules = adapted.eval()(batch)
        active = adapted.toolbox.active_names
        adapted.toolbox.set_active([])
        without_modules = adapted(batch)
    return {
        "method": method,
        "tile": tile,
        "part": part,
        "active": active,
        "modules": changed(with_modules, without_modules),
        "head": changed(without_modules, before),
    }


def main(
    out: Annotated[Path, typer.Option(help="results JSON")] = Path("results/module_effect.json"),
    model: Annotated[Path, typer.Option(help="the held-out default model (bench/quality/run.py makes it)")] = (
        DEFAULT_CACHE / "heldout-default-model"
    ),
    workers: Annotated[int, typer.Option(help="parallel processes, one torch thread each")] = 2,
) -> None:
    jobs = [(method, *scene, str(model)) for method in METHODS for scene in PROMISE_SCENES]
    runs = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for run in pool.map(measure, *zip(*jobs, strict=True)):  # about 2 minutes of one core each
            runs.append(run)
            print(f"[{len(runs)}/{len(jobs)}] {run['method']}, tile {run['tile']} image {run['part']}", flush=True)
    summary = {
        method: {
            part: sum(r[part]["pixels"] for r in runs if r["method"] == method) / len(PROMISE_SCENES)
            for part in ("modules", "head")
        }
        for method in METHODS
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tile_size": TILE, "summary": summary, "runs": runs}, indent=1) + "\n")
    for method, shares in summary.items():
        print(f"{method}: modules change {shares['modules']:.1%} of pixels, the head {shares['head']:.1%}")


if __name__ == "__main__":
    typer.run(main)
