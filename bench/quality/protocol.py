"""The cross-domain benchmark's protocol: splits, the sensor shift, the methods, and one run of one method.

A run adapts a frozen pretrained model (DG: labelled source tiles; DA: the same plus the unlabelled target
images, DACS self-training) and scores it on the target tiles, with and without the sensor shift. Runs
are plain dicts in and out so that they can go to worker processes and be cached as JSON.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from backend.adaptation.adapt import AdaptConfig, adapt  # noqa: E402
from backend.adaptation.augment import Sample  # noqa: E402
from backend.analysis.metrics import confusion_matrix, scores  # noqa: E402
from backend.model.network import SegmentationModel, create_model  # noqa: E402
from backend.model.registry import ModelCard  # noqa: E402
from training.dubai import CLASSES, load_tile  # noqa: E402
from training.source_crops import label_entropy, most_mixed_corner  # noqa: E402

CLASS_NAMES = [c["name"] for c in CLASSES]
NUM_CLASSES = len(CLASSES)
EVAL_CROP = 384  # side of the one window per target image that is scored (see scoring_windows)

# P: tiles the frozen backbone and its head were pretrained on; S: labelled source; T: unseen targets.
ROTATIONS = {
    "r1": {"pretrain": [1, 2], "source": [3, 4], "target": [5, 6]},
    "r2": {"pretrain": [5, 6], "source": [1, 2], "target": [3, 4]},
    "r3": {"pretrain": [3, 4], "source": [5, 6], "target": [1, 2]},
}

# The second domain gap: another sensor over the same ground (all parameters fixed, seeded noise).
SENSOR_SHIFT = {
    "band_gain": (1.12, 1.0, 0.82),  # colour response: warmer red, weaker blue
    "gamma": 1.35,  # darker mid-tones
    "resample": 0.5,  # down to half the ground resolution and back (blur of a coarser sensor)
    "noise_std": 0.02,  # additive Gaussian sensor noise
}

# Every method trains the same head for the same steps; only what trains in the backbone differs. The
# learning rate is the usual one for parameter-efficient tuning; full fine-tuning, which moves every
# pretrained weight, gets the usual tenth of it (at 1e-3 it wrecks the backbone in a few steps).
LR = 1e-3
METHODS = {
    "source_only": None,
    "head_only": {"tuning": "head"},
    "full_finetune": {"tuning": "full", "lr": LR / 10, "head_lr_scale": 10.0},
    "lora_only": {"toolbox": {"kinds": ["lora"]}, "gate": {"selection": "all"}},
    "adapter_only": {"toolbox": {"kinds": ["adapter"]}, "gate": {"selection": "all"}},
    "earth_adapter_only": {"toolbox": {"kinds": ["earth_adapter"]}, "gate": {"selection": "all"}},
    "all_modules": {"gate": {"selection": "all"}},
    "random_gate": {"gate": {"selection": "random"}},
    "fisher_gate": {},
}
BASELINES = [m for m in METHODS if m != "fisher_gate"]

# Standard UDA: DACS from P, the tiles the model was trained on, to the unlabelled targets, with the
# product's self-training settings (AdaptOptions: EMA teacher 0.99, class-wise thresholds) and its steps.
UDA = {
    "da_source": "pretrain",
    "steps": 120,
    "reselect_every": 50,
    "overrides": {"ema_momentum": 0.99, "class_quantile": 0.5},
}


def setting_of(spec: dict) -> str:
    """The table a run belongs to: dg, da (DACS from S), da_self (target alone) or uda (DACS from P)."""
    if spec["setting"] == "dg":
        return "dg"
    return {"none": "da_self", "pretrain": "uda"}.get(spec.get("da_source"), "da")


PEFT_SINGLE = ["lora_only", "adapter_only", "earth_adapter_only"]


def sensor_shift(image: torch.Tensor, seed: int) -> torch.Tensor:
    """``SENSOR_SHIFT`` applied to one ``[3, H, W]`` image in [0, 1]; the labels stay valid (no pixel moves)."""
    gain = torch.tensor(SENSOR_SHIFT["band_gain"]).view(3, 1, 1)
    shifted = (image * gain).clamp(0.0, 1.0) ** SENSOR_SHIFT["gamma"]
    height, width = image.shape[-2:]
    small = F.interpolate(shifted[None], scale_factor=SENSOR_SHIFT["resample"], mode="bilinear", antialias=True)
    shifted = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)[0]
    noise = torch.randn(shifted.shape, generator=torch.Generator().manual_seed(seed)) * SENSOR_SHIFT["noise_std"]
    return (shifted + noise).clamp(0.0, 1.0)


@functools.cache
def tile_samples(tile: int, domain: str) -> tuple[Sample, ...]:
    """The tile's 9 labelled images, as they are (``clean``) or through the sensor shift (``shift``)."""
    samples = load_tile(tile)
    if domain == "shift":
        samples = [{**s, "image": sensor_shift(s["image"], seed=1000 * tile + i)} for i, s in enumerate(samples)]
    return tuple(samples)


def labelled(tiles: list[int]) -> list[Sample]:
    return [s for t in tiles for s in tile_samples(t, "clean")]


@functools.cache
def scoring_windows(tile: int) -> tuple[tuple[int, int], ...]:
    """Per image, the top-left corner of the ``EVAL_CROP`` window that is scored: of a 3 x 3 grid of
    candidates, the one whose labels mix the classes most (label entropy). The labels choose where to
    score, so that rare classes count, and are never seen by any method."""
    return tuple(most_mixed_corner(s["mask"], EVAL_CROP, NUM_CLASSES)[1] for s in tile_samples(tile, "clean"))


def panel_index(tile: int) -> int:
    """The image shown in the qualitative panels: the one whose scored window mixes the classes most."""
    samples = tile_samples(tile, "clean")
    windows = scoring_windows(tile)
    return max(range(len(samples)), key=lambda i: label_entropy(crop(samples[i]["mask"], windows[i]), NUM_CLASSES))


def crop(tensor: torch.Tensor, corner: tuple[int, int]) -> torch.Tensor:
    top, left = corner
    return tensor[..., top : top + EVAL_CROP, left : left + EVAL_CROP]


@torch.no_grad()
def score_tiles(model: SegmentationModel, tiles: list[int], domain: str) -> tuple[dict[str, list], np.ndarray]:
    """Confusion matrix per tile over the scored windows of its images, and the panel image's prediction."""
    model.eval()
    matrices, panel = {}, None
    for tile in tiles:
        matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
        shown = panel_index(tile) if panel is None else -1
        for index, (sample, corner) in enumerate(zip(tile_samples(tile, domain), scoring_windows(tile), strict=True)):
            prediction = model(crop(sample["image"], corner)[None])[0].argmax(0).numpy()
            matrix += confusion_matrix(prediction, crop(sample["mask"], corner).numpy(), NUM_CLASSES)
            if index == shown:
                panel = prediction.astype(np.uint8)
        matrices[str(tile)] = matrix.tolist()
    return matrices, panel


def run_key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def deep_update(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        merged[key] = deep_update(merged[key], value) if isinstance(value, dict) and key in merged else value
    return merged


def load_pretrained(folder: str) -> SegmentationModel:
    card = ModelCard.read(Path(folder))
    return create_model(card.architecture, card.weights)


def adapt_config(spec: dict) -> AdaptConfig:
    """The run's AdaptConfig: the benchmark budget, the method, then any variant's overrides."""
    fields = {
        "mode": spec["setting"],
        "steps": spec["steps"],
        "batch_size": spec["batch_size"],
        "crop_size": spec["crop_size"],
        "seed": spec["seed"],
        "lr": LR,
        "gate": {"reselect_every": spec["reselect_every"]},
        # the research defaults every cached run was made with, before AdaptConfig took the product's
        "ema_momentum": 0.999,
        "class_quantile": None,
    }
    fields = deep_update(deep_update(fields, METHODS[spec["method"]]), spec.get("overrides", {}))
    return AdaptConfig(**fields)


def run(spec: dict) -> dict:
    """One benchmark run: adapt (unless source-only), then score clean and shifted targets.

    ``spec``: rotation, setting (dg/da), method, seed, steps, batch_size, crop_size, reselect_every,
    target_domain (the unlabelled images DA adapts on), da_source ("none": DA without source crops; default
    the labelled source tiles), overrides (AdaptConfig fields), pretrained folder.
    """
    split = ROTATIONS[spec["rotation"]]
    model = load_pretrained(spec["pretrained"])
    started = time.perf_counter()
    result = None
    if METHODS[spec["method"]] is not None:
        config = adapt_config(spec)
        if spec["setting"] == "dg":
            # DG tunes on the labelled S; "pretrain+source": on P and S together (multi-source DG)
            tiles = split["source"] + (split["pretrain"] if spec.get("dg_source") == "pretrain+source" else [])
            result = adapt(model, labelled(tiles), config)
        else:
            target = [{"image": s["image"]} for t in split["target"] for s in tile_samples(t, spec["target_domain"])]
            # DACS mixes in labelled crops: of S (default), or of P, the tiles the model was trained on
            # (standard UDA); "none" self-trains on the target alone, as the product does
            tiles = {"none": [], "pretrain": split["pretrain"]}.get(spec.get("da_source"), split["source"])
            result = adapt(model, target, config, source=labelled(tiles) or None)
    seconds = time.perf_counter() - started
    domains = ["clean", "shift"] if spec["setting"] == "dg" else [spec["target_domain"]]
    evaluation, panels = {}, {}
    for domain in domains:
        evaluation[domain], panels[domain] = score_tiles(model, split["target"], domain)
    return {
        "spec": spec,
        "confusion": evaluation,
        "trainable_parameters": result.trainable_parameters if result else 0,
        "adapt_seconds": round(seconds, 1),
        "selection": result.selection if result and result.config.gate.selection != "all" else [],
        "pseudo_label_fraction": float(np.mean(result.pseudo_label_fraction))
        if result and spec["setting"] == "da" and result.pseudo_label_fraction
        else None,
        "panels": {domain: panel.tolist() for domain, panel in panels.items()},
    }


def summarize(confusions: dict[str, list]) -> dict:
    """Scores per target tile and their mean (the mean over targets is the headline number)."""
    per_tile = {tile: scores(np.array(matrix), CLASS_NAMES) for tile, matrix in confusions.items()}
    mean_iou = {
        name: float(np.mean([s["iou"][name] for s in per_tile.values() if s["iou"][name] is not None]))
        for name in CLASS_NAMES
    }
    return {
        "miou": float(np.mean([s["miou"] for s in per_tile.values()])),
        "iou": mean_iou,
        "per_tile": {tile: {"miou": s["miou"], "iou": s["iou"]} for tile, s in per_tile.items()},
    }
