"""Where to label next: three rounds of a simulated analyst labelling the places ``suggest-labels`` proposes,
against as many random places.

    python bench/quality/rounds.py --out results/label_rounds.json    (docs/label-rounds.md)

A scene is an image of tile 6, which the shipped model never saw. In each round the analyst gets ``--per-round``
boxes (suggested: ``crossearth suggest-labels`` with the model as the last round left it; random: boxes drawn
uniformly over the image) and draws in each a disk inside one ground-truth class, centred where the box
has most room for it (the analyst's polygon of bench/quality/analyst.py, at most its radius for 20 polygons).
Then ``adapt`` runs with every polygon drawn so far (the product's path and defaults, self-check included),
the scene is segmented with its adapter, and the map is scored on the pixels no polygon covers. Each
sequence of rounds is cached as JSON by a hash of its settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "bench" / "quality")]

from analyst import COVER, MIN_RADIUS  # noqa: E402

SHIPPED_MODEL = str(REPO / "resources" / "models" / "dubai-hybrid-vit")
TILE = 6
STRATEGIES = ("suggested", "random")
BOX = 32  # suggest-labels' default box, in pixels
DEFAULT_CACHE = Path.home() / ".cache" / "crossearth" / "rounds"


def room_per_pixel(truth: np.ndarray) -> np.ndarray:
    """Each labelled pixel's distance to the nearest pixel of another class (or unlabelled): the largest disk
    centred there that stays inside its class."""
    from scipy.ndimage import distance_transform_edt

    from backend.analysis.metrics import IGNORE_INDEX

    room = np.zeros(truth.shape, np.float32)
    for label in np.unique(truth):
        if label != IGNORE_INDEX:
            inside = truth == label
            room[inside] = distance_transform_edt(inside)[inside]
    return room


def disk_in_box(
    truth: np.ndarray, room: np.ndarray, row: int, col: int, radius: float
) -> tuple[int, int, float, int] | None:
    """The analyst's disk for the box at (row, col): centred on the box's pixel with most room, at most
    ``radius``; None when the box has no room for a disk of MIN_RADIUS (it straddles thin structures)."""
    box = room[row : row + BOX, col : col + BOX]
    index = int(np.argmax(box))
    r, c = divmod(index, box.shape[1])
    if box[r, c] <= MIN_RADIUS + 1:
        return None
    size = min(radius, float(box[r, c]) - 1)
    return row + r, col + c, size, int(truth[row + r, col + c])


def random_boxes(shape: tuple[int, int], count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    return [(int(rng.integers(shape[0] - BOX)), int(rng.integers(shape[1] - BOX))) for _ in range(count)]


def run_sequence(spec: dict) -> dict:
    """Round 0 (segment) and ``spec['rounds']`` rounds of labelling, adapting and scoring on one scene."""
    import rasterio
    import torch
    from analyst import write_disks
    from make_sample_scene import write_labels, write_scene

    from backend import jobs
    from backend.suggest import suggest_labels
    from training.dubai import read_part

    torch.set_num_threads(1)
    image, mask = read_part(TILE, spec["part"])
    truth = mask.numpy().astype(np.uint8)
    room = room_per_pixel(truth)
    radius = max(MIN_RADIUS, math.sqrt(COVER * truth.size / (20 * math.pi)))
    rng = np.random.default_rng(spec["seed"])
    with tempfile.TemporaryDirectory(prefix="crossearth-rounds-") as tmp:
        folder = Path(tmp)
        scene_path, labels_path = folder / "scene.tif", folder / "labels.tif"
        write_scene((image * 255.0).round().byte().numpy(), scene_path)
        write_labels(truth, labels_path)
        scene = jobs.Scene(input=str(scene_path), model=SHIPPED_MODEL, threads=1)
        card = jobs.resolve_model(SHIPPED_MODEL)
        with rasterio.open(scene_path) as raster:
            transform, crs_wkt = raster.transform, raster.crs.to_wkt()
        plain = str(folder / "segment.tif")
        jobs.segment(scene, jobs.SegmentOptions(output=plain, engine="torch"))
        rounds = [{"round": 0, "polygons": 0, "miou": jobs.evaluate(plain, str(labels_path))["miou"]}]
        disks: list[tuple[int, int, float, int]] = []
        adapter: str | None = None
        for number in range(1, spec["rounds"] + 1):
            if spec["strategy"] == "suggested":
                spots = suggest_labels(scene, str(folder / f"spots{number}.gpkg"), spec["per_round"], BOX, adapter)
                boxes = [(spot.row, spot.col) for spot in spots]
            else:
                boxes = random_boxes(truth.shape, spec["per_round"], rng)
            drawn = [disk_in_box(truth, room, row, col, radius) for row, col in boxes]
            disks += [disk for disk in drawn if disk is not None]
            polygons = write_disks(disks, card.classes, transform, crs_wkt, folder / f"polygons{number}.gpkg")
            adapter = str(folder / f"round{number}.adapter.safetensors")
            options = jobs.AdaptOptions(labels=str(polygons), adapter_out=adapter, overwrite=True)
            _, _, result = jobs.adapt_scene(scene, options)
            adapted = str(folder / f"round{number}.tif")
            jobs.segment(scene, jobs.SegmentOptions(output=adapted, engine="torch", adapter=adapter, overwrite=True))
            score = jobs.evaluate(adapted, str(labels_path), skip=str(polygons))
            unadapted = jobs.evaluate(plain, str(labels_path), skip=str(polygons))
            rounds.append(
                {
                    "round": number,
                    "polygons": len(disks),
                    "boxes_without_room": sum(disk is None for disk in drawn),
                    "classes": sorted({card.classes[d[3]]["name"] for d in disks}),
                    "miou": score["miou"],
                    "segment_miou": unadapted["miou"],
                    "kept": (result.self_check or {}).get("kept", "adapted"),
                }
            )
            print(f"part {spec['part']} {spec['strategy']} round {number}: {100 * score['miou']:.1f}", flush=True)
    return {"spec": spec, "rounds": rounds}


def run_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def execute(specs: list[dict], cache: Path, workers: int) -> list[dict]:
    cache.mkdir(parents=True, exist_ok=True)
    paths = [cache / f"{run_key(spec)}.json" for spec in specs]
    todo = [(spec, path) for spec, path in zip(specs, paths, strict=True) if not path.is_file()]
    print(f"{len(specs)} sequences, {len(specs) - len(todo)} cached, {len(todo)} to do", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(run_sequence, spec): path for spec, path in todo}
        for future in as_completed(futures):
            futures[future].write_text(json.dumps(future.result()))
    return [json.loads(path.read_text()) for path in paths]


def gain(row: dict) -> float:
    """A round's mIoU over segment's on the same pixels (round 0 is segment itself)."""
    return row["miou"] - row.get("segment_miou", row["miou"])


def summarize(runs: list[dict]) -> dict:
    """Per strategy and round: mean mIoU over the scenes, and its gain over segment on the same pixels."""
    summary: dict = {}
    for strategy in STRATEGIES:
        group = [r for r in runs if r["spec"]["strategy"] == strategy]
        rounds = len(group[0]["rounds"]) if group else 0
        summary[strategy] = [
            {
                "round": number,
                "polygons": float(np.mean([r["rounds"][number]["polygons"] for r in group])),
                "miou": round(100 * float(np.mean([r["rounds"][number]["miou"] for r in group])), 2),
                "gain": round(100 * float(np.mean([gain(r["rounds"][number]) for r in group])), 2),
            }
            for number in range(rounds)
        ]
    return summary


def write_markdown(summary: dict, runs: list[dict], path: Path) -> None:
    spec = runs[0]["spec"]
    parts = ", ".join(str(p) for p in sorted({r["spec"]["part"] for r in runs}))
    lines = [
        f"# Where to label next: suggested places against random ones, {spec['rounds']} round(s) of "
        f"{spec['per_round']}",
        "",
        f"Images {parts} of tile 6.",
        "",
        "Generated by `bench/quality/rounds.py` from `results/label_rounds.json`. The shipped model on images of",
        "tile 6 (never trained on). Each round the simulated analyst labels the boxes it is given with a disk inside",
        "one class (module docstring); `adapt` runs on all polygons so far, with its defaults and self-check; the map",
        "is scored (mIoU, %) on the pixels no polygon covers; *gain* is over `segment`'s map on the same pixels.",
        "",
        "| strategy | round | polygons (mean) | mIoU | gain over segment |",
        "|---|---|---|---|---|",
    ]
    for strategy, rows in summary.items():
        for row in rows:
            lines.append(
                f"| {strategy} | {row['round']} | {row['polygons']:.1f} | {row['miou']:.1f} | {row['gain']:+.1f} |"
            )
    lines += ["", "## Every scene", "", "| image | strategy | round | polygons | classes labelled | mIoU | kept |"]
    lines.append("|---|---|---|---|---|---|---|")
    for run in runs:
        for row in run["rounds"]:
            lines.append(
                f"| {run['spec']['part']} | {run['spec']['strategy']} | {row['round']} | {row['polygons']} | "
                f"{', '.join(row.get('classes', []))} | {100 * row['miou']:.1f} | {row.get('kept', '')} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main(
    out: Annotated[Path, typer.Option(help="results JSON")] = REPO / "results" / "label_rounds.json",
    docs: Annotated[Path, typer.Option(help="the report")] = REPO / "docs" / "label-rounds.md",
    parts: Annotated[list[int] | None, typer.Option("--part", help="images of tile 6 (default 1 and 4)")] = None,
    per_round: Annotated[int, typer.Option(help="places labelled per round")] = 10,
    rounds: Annotated[int, typer.Option(help="rounds of labelling")] = 3,
    seed: int = 0,
    cache: Annotated[Path, typer.Option(help="cached sequences (not committed)")] = DEFAULT_CACHE,
    workers: Annotated[int, typer.Option(help="worker processes, one torch thread each")] = 1,
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    specs = [
        {"part": part, "strategy": strategy, "per_round": per_round, "rounds": rounds, "seed": seed}
        for part in parts or [1, 4]
        for strategy in STRATEGIES
    ]
    runs = execute(specs, cache, workers)
    summary = summarize(runs)
    print(json.dumps(summary, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    write_markdown(summary, runs, docs)


if __name__ == "__main__":
    typer.run(main)
