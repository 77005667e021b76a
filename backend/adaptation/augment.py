"""Training batches from adaptation samples: label-aligned crops and flips, photometric jitter, ClassMix.

A sample is a dict (as in torchgeo): ``image`` float32 ``[C, H, W]`` in [0, 1], optional ``mask`` int64
``[H, W]`` (``IGNORE_INDEX`` where unknown) and optional ``valid`` bool ``[H, W]`` (False at nodata).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.analysis.metrics import IGNORE_INDEX

Sample = dict[str, torch.Tensor]


def sample_batch(samples: list[Sample], batch_size: int, crop: int, generator: torch.Generator) -> Sample:
    """Random crops (padded by reflection when the sample is smaller), random flips and 90-degree turns.

    Geometry is applied identically to image, mask and valid, so labels stay aligned.
    """
    images, masks, valids = [], [], []
    for _ in range(batch_size):
        sample = samples[int(torch.randint(len(samples), (1,), generator=generator))]
        image = sample["image"]
        height, width = image.shape[-2:]
        mask = sample.get("mask")
        if mask is None:
            mask = torch.full((height, width), IGNORE_INDEX, dtype=torch.long)
        valid = sample.get("valid")
        if valid is None:
            valid = torch.ones(height, width, dtype=torch.bool)
        image, mask, valid = _pad_to(image, mask, valid, crop)
        top = int(torch.randint(image.shape[-2] - crop + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[-1] - crop + 1, (1,), generator=generator))
        window = (slice(top, top + crop), slice(left, left + crop))
        image, mask, valid = image[(slice(None), *window)], mask[window], valid[window]
        turns = int(torch.randint(4, (1,), generator=generator))
        flip = bool(torch.randint(2, (1,), generator=generator))
        image, mask, valid = (orient(t, turns, flip) for t in (image, mask, valid))
        images.append(image)
        masks.append(torch.where(valid, mask, IGNORE_INDEX))
        valids.append(valid)
    return {"image": torch.stack(images), "mask": torch.stack(masks), "valid": torch.stack(valids)}


def _pad_to(image: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, size: int):
    pad_h, pad_w = max(0, size - image.shape[-2]), max(0, size - image.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return image, mask, valid
    padding = (0, pad_w, 0, pad_h)
    mode = "reflect" if pad_h < image.shape[-2] and pad_w < image.shape[-1] else "replicate"
    image = F.pad(image[None], padding, mode=mode)[0]
    mask = F.pad(mask, padding, value=IGNORE_INDEX)
    valid = F.pad(valid, padding, value=False)
    return image, mask, valid


def orient(tensor: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """``turns`` quarter turns, then a left-right flip if ``flip``, of the last two dimensions."""
    tensor = torch.rot90(tensor, turns, dims=(-2, -1))
    return torch.flip(tensor, dims=(-1,)) if flip else tensor


def photometric_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and per-band gain jitter plus a mild blur: a strong view that moves no pixel."""
    batch, channels = images.shape[:2]

    def uniform(*shape: int) -> torch.Tensor:
        return 1.0 + strength * (2.0 * torch.rand(*shape, generator=generator) - 1.0)

    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * uniform(batch, 1, 1, 1) + mean * uniform(batch, 1, 1, 1)
    images = images * uniform(batch, channels, 1, 1)
    blur = torch.tensor([0.25, 0.5, 0.25]).view(1, 1, 1, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 0, 0), mode="replicate"), blur.expand(channels, 1, 1, 3), groups=channels)
    blurred = F.conv2d(
        F.pad(blurred, (0, 0, 1, 1), mode="replicate"),
        blur.transpose(-1, -2).expand(channels, 1, 3, 1),
        groups=channels,
    )
    use_blur = (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5).float()
    return (use_blur * blurred + (1 - use_blur) * images).clamp(0.0, 1.0)


def class_mix_masks(source_masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ClassMix (DACS): for each source image, half of its classes (at random) form the paste mask."""
    masks = []
    for labels in source_masks:
        classes = labels.unique()
        classes = classes[classes != IGNORE_INDEX]
        if len(classes) == 0:
            masks.append(torch.zeros_like(labels, dtype=torch.bool))
            continue
        chosen = classes[torch.randperm(len(classes), generator=generator)[: (len(classes) + 1) // 2]]
        masks.append(torch.isin(labels, chosen))
    return torch.stack(masks)
