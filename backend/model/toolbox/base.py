"""What every toolbox module shares: a gate, and the forward hook through which it acts.

A module never replaces a frozen layer; it hooks onto one (its ``target`` inside the block) and adds a
delta to that layer's output. The frozen model keeps its timm parameter names, so pretrained weights
load unchanged, and a gated-off module is simply skipped: no compute, no gradient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class ToolboxModule(nn.Module, ABC):
    """A small trainable module with an on/off gate.

    Subclasses set ``kind`` (the name under the block, e.g. ``"lora"``), ``target`` (the path of the
    block submodule it hooks, ``""`` for the block itself) and implement :meth:`delta`.
    """

    kind: str = ""
    target: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def set_active(self, active: bool) -> None:
        """Gate the module: an inactive module is not computed and its parameters get no gradient."""
        self.active = active
        for parameter in self.parameters():
            parameter.requires_grad_(active)
            if not active:
                parameter.grad = None

    @abstractmethod
    def delta(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """What to add to the target's ``output``, given the target's first input."""

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not self.active:
            return None
        return output + self.delta(args[0], output)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())
