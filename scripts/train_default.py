"""Train the default model ``dubai-hybrid-vit`` on Dubai tiles and measure it on tiles it never saw.

``python scripts/train_default.py`` is the shipped run (``make train-default``): tiles 1-5 train, tile 6
is held out and only evaluated, and the weights and model card go to resources/models/dubai-hybrid-vit/.
Other tiles and settings (``--train-tiles 1 2 3 4 6 --eval-tiles 5 --output /tmp/x``) are for
measuring recipes. The network is a hybrid ViT whose stem is ImageNet EfficientNet-Lite0; the stem
trains at a lower learning rate than the ViT blocks and the head, which start from scratch.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.adaptation.augment import Sample, photometric_jitter, sample_batch
from backend.analysis.metrics import IGNORE_INDEX, confusion_matrix, scores
from backend.model.network import ModelConfig, SegmentationModel, create_model, save_model
from backend.model.registry import BUILTIN_MODELS_DIR, CARD_FILE, DEFAULT_MODEL, WEIGHTS_FILE, ModelCard
from backend.rasters.atomic import atomic_output
from training.dubai import CARD_CLASSES, CLASSES, load_tiles
from training.stem_weights import SOURCE, STEM_MEAN, STEM_NAME, STEM_STD, load_stem_weights

TILE_SIZE = 512
STRIDE = 341
# the card's resolution_m stays null (docs/default-model.md, "Ground resolution"): why, in the card itself
GROUND_RESOLUTION = (
    "not known: the Dubai tiles are plain JPEGs without georeferencing, and their publisher states no pixel size; "
    "the source (MBRSC satellites) and the tiles' differing scales put them somewhere near 0.5-2 m, which is too "
    "loose to resample to, so resolution_m is null and --resolution auto reads scenes as they are"
)
NUM_CLASSES = len(CLASSES)


def class_weights(samples: list[Sample], power: float) -> torch.Tensor:
    """(median frequency / class frequency) ** power, over the labelled training pixels; power 0 = uniform."""
    counts = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for sample in samples:
        mask = sample["mask"]
        counts += torch.bincount(mask[mask != IGNORE_INDEX].flatten(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    frequency = counts / counts.sum()
    weights = (frequency.median() / frequency.clamp(min=1e-6)) ** power
    return (weights / weights.mean()).float()


def scaled_batch(
    samples: list[Sample], batch_size: int, crop: int, scale_range: float, generator: torch.Generator
) -> Sample:
    """A batch of crops of a random side crop*s (s log-uniform in [1/range, range]) resized to ``crop``.

    Ground resolution differs from tile to tile; zooming in and out teaches the model several.
    """
    log_scale = math.log(scale_range) * (2.0 * float(torch.rand((), generator=generator)) - 1.0)
    side = max(32, round(crop * math.exp(log_scale)))
    batch = sample_batch(samples, batch_size, side, generator)
    if side != crop:
        batch["image"] = F.interpolate(batch["image"], size=(crop, crop), mode="bilinear", antialias=True)
        batch["mask"] = F.interpolate(batch["mask"][:, None].float(), size=(crop, crop), mode="nearest")[:, 0].long()
    return batch


def param_groups(
    model: SegmentationModel, lr: float, stem_lr_scale: float, stem_frozen_parts: int, weight_decay: float
) -> list[dict]:
    """The stem's first ``stem_frozen_parts`` parts frozen (all of it at ``stem_lr_scale`` 0), the rest of the
    stem at ``lr * stem_lr_scale``, everything else at ``lr``; no decay on norms, biases, embeddings.

    Freezing the high-resolution early stages halves the step time (their backward pass dominates), but
    measured per unit of compute, training the whole stem did better (docs/default-model.md).
    """
    stem = model.backbone.patch_embed.backbone
    frozen_ids = {id(p) for p in (stem if stem_lr_scale == 0 else stem[:stem_frozen_parts]).parameters()}
    stem_ids = {id(p) for p in stem.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        is_stem = id(parameter) in stem_ids
        if id(parameter) in frozen_ids:
            parameter.requires_grad_(False)
            continue
        parameter.requires_grad_(True)
        no_decay = parameter.ndim <= 1 or name.endswith(("pos_embed", "cls_token"))
        groups.setdefault((is_stem, no_decay), []).append(parameter)
    return [
        {
            "params": params,
            "initial_lr": lr * (stem_lr_scale if is_stem else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (is_stem, no_decay), params in groups.items()
    ]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@torch.no_grad()
def predict_image(model: SegmentationModel, image: torch.Tensor) -> torch.Tensor:
    """Class indices ``[H, W]`` from 512 px windows at stride 341, logits averaged where they overlap."""
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, TILE_SIZE - height), max(0, TILE_SIZE - width)
    padded = F.pad(image[None], (0, pad_w, 0, pad_h), mode="reflect")[0] if pad_h or pad_w else image
    full_h, full_w = padded.shape[-2:]

    def starts(length: int) -> list[int]:
        last = length - TILE_SIZE
        return sorted({*range(0, last, STRIDE), last})

    logits = torch.zeros(NUM_CLASSES, full_h, full_w)
    counts = torch.zeros(1, full_h, full_w)
    for top in starts(full_h):
        for left in starts(full_w):
            window = padded[None, :, top : top + TILE_SIZE, left : left + TILE_SIZE]
            logits[:, top : top + TILE_SIZE, left : left + TILE_SIZE] += model(window)[0]
            counts[:, top : top + TILE_SIZE, left : left + TILE_SIZE] += 1
    return (logits / counts).argmax(0)[:height, :width]


def evaluate(model: SegmentationModel, tiles: dict[int, list[Sample]]) -> dict:
    """Per held-out tile: mIoU, pixel accuracy and per-class IoU over the confusion summed on its images."""
    model.eval()
    names = [c["name"] for c in CLASSES]
    results = {}
    for tile, samples in tiles.items():
        matrix = sum(
            confusion_matrix(predict_image(model, s["image"]).numpy(), s["mask"].numpy(), NUM_CLASSES) for s in samples
        )
        tile_scores = scores(matrix, names)
        results[f"tile_{tile}"] = {
            "miou": tile_scores["miou"],
            "pixel_accuracy": tile_scores["overall_accuracy"],
            "per_class_iou": tile_scores["iou"],
            "pixels": tile_scores["pixels"],
        }
    return results


def log_line(log_file, message: str) -> None:
    print(message, flush=True)
    if log_file is not None:
        log_file.write(message + "\n")
        log_file.flush()


def main(
    train_tiles: Annotated[list[int], typer.Option(help="tiles trained on")] = [1, 2, 3, 4, 5],  # noqa: B006
    eval_tiles: Annotated[list[int], typer.Option(help="held-out tiles, only evaluated")] = [6],  # noqa: B006
    output: Annotated[Path, typer.Option(help="folder for model.safetensors and model_card.json")] = (
        BUILTIN_MODELS_DIR / DEFAULT_MODEL
    ),
    steps: int = 1200,
    batch_size: int = 8,
    crop: int = 256,
    lr: float = 6e-4,
    stem_lr_scale: Annotated[float, typer.Option(help="stem lr = lr x this; 0 freezes the stem")] = 0.1,
    stem_frozen_parts: Annotated[
        int, typer.Option(help="stem parts kept frozen: conv_stem, bn1, then stages 0-4 (0 = none)")
    ] = 0,
    weight_decay: float = 0.05,
    warmup: int = 50,
    width: int = 192,
    depth: int = 4,
    heads: int = 3,
    head_channels: int = 128,
    class_weight_power: Annotated[float, typer.Option(help="0: plain cross-entropy; 0.5: sqrt median-freq")] = 0.5,
    scale_range: Annotated[float, typer.Option(help="crop zoom in [1/r, r]; 1 disables")] = 1.5,
    color_jitter: Annotated[float, typer.Option(help="photometric jitter strength; 0 disables")] = 0.2,
    seed: int = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (results are reproducible for a fixed count)")] = 1,
    log: Annotated[Path | None, typer.Option(help="also write progress to this file")] = None,
) -> None:
    """Train the hybrid ViT on ``train_tiles``, evaluate on ``eval_tiles``, write weights and model card."""
    overlap = set(train_tiles) & set(eval_tiles)
    if overlap:
        raise typer.BadParameter(f"tiles {sorted(overlap)} are both trained on and held out")
    command = " ".join(["python", "scripts/train_default.py", *sys.argv[1:]])
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    output.mkdir(parents=True, exist_ok=True)
    log_file = open(log, "w") if log else None  # noqa: SIM115
    started = time.perf_counter()
    log_line(log_file, f"# {command}")

    data = load_tiles([*train_tiles, *eval_tiles])
    train = [s for t in train_tiles for s in data[t]]
    held_out = {t: data[t] for t in eval_tiles}
    weights = class_weights(train, class_weight_power)
    log_line(log_file, f"{len(train)} training images from tiles {train_tiles}; class weights {weights.tolist()}")

    config = ModelConfig(
        backbone="vit_small_patch16_224",
        num_classes=NUM_CLASSES,
        img_size=TILE_SIZE,
        backbone_args={"embed_dim": width, "depth": depth, "num_heads": heads},
        stem=STEM_NAME,
        stem_stages=5,
        head_channels=head_channels,
        mean=STEM_MEAN,
        std=STEM_STD,
    )
    model = create_model(config)
    load_stem_weights(model.backbone.patch_embed.backbone)
    groups = param_groups(model, lr, stem_lr_scale, stem_frozen_parts, weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    model.train()  # the backbone stays in eval mode: the stem's ImageNet BatchNorm statistics are kept
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(step, steps, warmup)
        batch = scaled_batch(train, batch_size, crop, scale_range, generator)
        images = photometric_jitter(batch["image"], generator, color_jitter) if color_jitter else batch["image"]
        loss = F.cross_entropy(model(images), batch["mask"], weight=weights, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            elapsed = time.perf_counter() - started
            log_line(log_file, f"step {step + 1}/{steps} loss {loss.item():.4f} elapsed {elapsed:.0f}s")
    train_seconds = time.perf_counter() - started

    metrics = evaluate(model, held_out)
    for tile, held_out_scores in metrics.items():
        per_class = ", ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in held_out_scores["per_class_iou"].items()
        )
        log_line(log_file, f"held-out {tile}: mIoU {held_out_scores['miou']:.4f} ({per_class})")

    card = ModelCard(
        name=DEFAULT_MODEL,
        description=(
            "Hybrid ViT (ImageNet EfficientNet-Lite0 stem to stride 16, "
            f"{depth} ViT blocks of width {width}) for 5-class land cover in RGB aerial imagery, "
            f"trained on Dubai tiles {', '.join(map(str, train_tiles))}."
        ),
        architecture=config,
        classes=CARD_CLASSES,
        bands=["red", "green", "blue"],
        tile_size=TILE_SIZE,
        stride=STRIDE,
        nodata=IGNORE_INDEX,
        provenance={
            "data": "Dubai aerial imagery (Humans in the Loop, 'Semantic segmentation of aerial imagery'), "
            "../shared/data/dubai-aerial",
            "train_tiles": train_tiles,
            "held_out_tiles": eval_tiles,
            "ground_resolution": GROUND_RESOLUTION,
            "stem_weights": SOURCE,
            "recipe": {
                "steps": steps,
                "batch_size": batch_size,
                "crop": crop,
                "optimizer": "AdamW",
                "lr": lr,
                "stem_lr_scale": stem_lr_scale,
                "stem_frozen_parts": stem_frozen_parts,
                "weight_decay": weight_decay,
                "schedule": f"linear warm-up {warmup} steps, cosine to 0",
                "grad_clip": 1.0,
                "loss": f"cross-entropy, class weights (median freq / freq) ** {class_weight_power}",
                "augmentation": f"crop zoom in [1/{scale_range}, {scale_range}], rot90, flips, "
                f"photometric jitter {color_jitter}",
            },
            "seed": seed,
            "threads": threads,
            "command": command,
            "train_seconds": round(train_seconds),
            "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
        },
        metrics={
            "protocol": "held-out tiles never seen in training; 512 px windows at stride 341, logits averaged; "
            "IoU over classes 0-4 with Unlabeled/black ignored, confusion summed over the tile's 9 images",
            "held_out": metrics,
        },
    )
    with atomic_output(output / WEIGHTS_FILE, overwrite=True) as weights_path:
        save_model(model, weights_path)
    with atomic_output(output / CARD_FILE, overwrite=True) as card_path:
        card_path.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    log_line(
        log_file, f"wrote {output / WEIGHTS_FILE} and {output / CARD_FILE} in {time.perf_counter() - started:.0f}s"
    )
    if log_file is not None:
        log_file.close()


if __name__ == "__main__":
    typer.run(main)
