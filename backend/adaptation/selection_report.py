"""The gate's selection history as JSON and as a heatmap (blocks x module kinds, score as colour)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backend.model.toolbox import MODULE_KINDS
from backend.rasters.atomic import atomic_output


def score_matrix(event: dict, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and active flags of one selection event as ``[depth, len(MODULE_KINDS)]`` arrays (NaN: absent)."""
    scores = np.full((depth, len(MODULE_KINDS)), np.nan)
    active = np.zeros((depth, len(MODULE_KINDS)), dtype=bool)
    for name, score in event["scores"].items():
        _, block, kind = name.split(".")
        scores[int(block), MODULE_KINDS.index(kind)] = score
    for name in event["active"]:
        _, block, kind = name.split(".")
        active[int(block), MODULE_KINDS.index(kind)] = True
    return scores, active


def write_selection_json(
    history: list[dict], path: str | Path, overwrite: bool = False, self_check: dict | None = None
) -> Path:
    """The gate's selections and, when it ran, the self-check's verdict (with the held-out polygons' estimate)."""
    report = {"selections": history, **({"self_check": self_check} if self_check else {})}
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return Path(path)


# What the colours mean and the title, per GateConfig.selection.
SCORE_LABELS = {
    "fisher": ("normalised Fisher score", "Fisher-gated modules"),
    "lookahead": ("loss removed by a trial step", "Lookahead-gated modules"),
    "random": ("random draw", "Randomly gated modules"),
    "all": ("every module active", "All modules"),
}


def plot_selection(
    history: list[dict], depth: int, path: str | Path, overwrite: bool = False, selection: str = "fisher"
) -> Path:
    """One panel per re-selection; active modules are outlined. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not history:
        raise ValueError("no selection events to plot")
    panels = len(history)
    figure, axes = plt.subplots(1, panels, figsize=(1.2 + 1.6 * panels, 1.2 + 0.32 * depth), squeeze=False, sharey=True)
    for axis, event in zip(axes[0], history, strict=True):
        scores, active = score_matrix(event, depth)
        image = axis.imshow(scores, cmap="viridis", aspect="auto")
        for block, kind in zip(*np.nonzero(active), strict=True):
            axis.add_patch(Rectangle((kind - 0.5, block - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        axis.set_title(f"step {event['step']}", fontsize=9)
        axis.set_xticks(range(len(MODULE_KINDS)), ["LoRA", "Adapter", "Earth"], rotation=45, fontsize=8)
        axis.set_yticks(range(depth), [str(b) for b in range(depth)], fontsize=8)
    axes[0][0].set_ylabel("block")
    score_label, title = SCORE_LABELS[selection]
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=score_label)
    figure.suptitle(f"{title} (red: active)", fontsize=10, y=1.06)  # above the panel titles
    with atomic_output(path, overwrite) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return Path(path)
