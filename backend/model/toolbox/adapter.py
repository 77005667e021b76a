"""Semantic module: a bottleneck MLP in parallel with the block's MLP (AdaptFormer style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend.model.toolbox.base import ToolboxModule


@dataclass
class AdapterConfig:
    hidden: int = 64
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"adapter hidden size must be >= 1, got {self.hidden}")


class Adapter(ToolboxModule):
    """``mlp(h) + scale * up(gelu(down(h)))`` with ``h`` the MLP's (normalised) input; ``up`` starts at zero."""

    kind = "adapter"
    target = "mlp"

    def __init__(self, dim: int, config: AdapterConfig) -> None:
        super().__init__()
        self.scale = config.scale
        self.down = nn.Linear(dim, config.hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(config.hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(inputs))) * self.scale
