"""Spatial module: LoRA on the query and value parts of a block's fused ``attn.qkv`` projection."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from backend.model.toolbox.base import ToolboxModule


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")


class LoRA(ToolboxModule):
    """``qkv(x) + [B_q A_q x, 0, B_v A_v x] * alpha / rank``; the keys stay frozen, as in the paper.

    B starts at zero, so the module starts as an exact no-op. :meth:`merge` folds the update into the
    frozen weight for inference and :meth:`unmerge` restores the original weight bit for bit.
    """

    kind = "lora"
    target = "attn.qkv"

    def __init__(self, qkv: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        if qkv.out_features != 3 * qkv.in_features:
            raise ValueError(f"expected a fused qkv Linear(d, 3d), got {qkv}")
        dim, rank = qkv.in_features, config.rank
        self.scaling = config.alpha / rank
        self.lora_A = nn.Parameter(torch.empty(2, rank, dim))  # [q, v]
        self.lora_B = nn.Parameter(torch.zeros(2, dim, rank))
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's initialisation of A
        self._qkv = [qkv]  # a plain list: the frozen layer must not become a submodule of ours
        self._saved_weight: torch.Tensor | None = None

    @property
    def merged(self) -> bool:
        return self._saved_weight is not None

    def delta(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        q = inputs @ self.lora_A[0].T @ self.lora_B[0].T
        v = inputs @ self.lora_A[1].T @ self.lora_B[1].T
        return torch.cat([q, torch.zeros_like(q), v], dim=-1) * self.scaling

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self.merged:
            return None
        return super().hook(module, args, output)

    def get_delta_weight(self) -> torch.Tensor:
        """The update as a ``[3d, d]`` matrix, laid out like ``qkv.weight``."""
        dq = self.lora_B[0] @ self.lora_A[0]
        dv = self.lora_B[1] @ self.lora_A[1]
        return torch.cat([dq, torch.zeros_like(dq), dv], dim=0) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged or not self.active:
            return
        weight = self._qkv[0].weight
        delta = self.get_delta_weight()
        if not torch.isfinite(delta).all():
            raise ValueError("LoRA update has NaN or inf values; refusing to merge")
        self._saved_weight = weight.detach().clone()
        weight += delta.to(weight.dtype)

    @torch.no_grad()
    def unmerge(self) -> None:
        if self._saved_weight is None:
            return
        self._qkv[0].weight.copy_(self._saved_weight)
        self._saved_weight = None
