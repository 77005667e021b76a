"""Which crops of a model's training tiles to ship as its source samples: the ones whose labels mix the
classes most (``scripts/make_source_samples.py``; the benchmark picks its evaluation crops the same way)."""

from __future__ import annotations

import torch


def label_entropy(mask: torch.Tensor, num_classes: int) -> float:
    """Entropy of the class shares of a label crop (ignored pixels left out): high when classes mix."""
    counts = torch.bincount(mask[mask < num_classes].flatten(), minlength=num_classes).float()
    share = counts[counts > 0] / counts.sum().clamp(min=1)
    return float(-(share * share.log()).sum())


def most_mixed_corner(mask: torch.Tensor, size: int, num_classes: int) -> tuple[float, tuple[int, int]]:
    """Of a 3 x 3 grid of ``size`` windows over ``mask``, the one whose labels mix the classes most:
    its label entropy and top-left corner (the first of equals)."""
    height, width = mask.shape
    best = (-1.0, (0, 0))
    for top in torch.linspace(0, max(0, height - size), 3, dtype=torch.float64).round().int().tolist():
        for left in torch.linspace(0, max(0, width - size), 3, dtype=torch.float64).round().int().tolist():
            entropy = label_entropy(mask[top : top + size, left : left + size], num_classes)
            if entropy > best[0]:
                best = (entropy, (top, left))
    return best
