"""Frequency module: Earth-Adapter, a mixture of adapters over the low and high frequencies of the token grid.

Remote-sensing domain gaps (sensor, season, resolution) show up as artefacts in particular frequency
bands; Earth-Adapter splits the patch-token grid with a 2-D FFT and lets a router weigh one adapter per
band and one on the raw tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backend.model.toolbox.base import ToolboxModule


@dataclass
class EarthAdapterConfig:
    hidden: int = 16
    cutoff: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.cutoff < 1.0:
            raise ValueError(f"Earth-Adapter cutoff ratio must be in (0, 1), got {self.cutoff}")


class TokenGrid:
    """The patch-token grid of the current forward pass, recorded from the patch embedding's output.

    Blocks see a flat ``[B, N, C]`` sequence; Earth-Adapter needs the ``H x W`` layout behind it.
    """

    def __init__(self, num_prefix_tokens: int) -> None:
        self.num_prefix_tokens = num_prefix_tokens
        self.size: tuple[int, int] | None = None

    def record(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if output.ndim == 4:  # NHWC, timm's dynamic_img_size layout
            self.size = (output.shape[1], output.shape[2])
        else:
            self.size = tuple(module.grid_size)


@functools.lru_cache(maxsize=32)
def _low_pass_matrix(n: int, cutoff: float) -> np.ndarray:
    """The 1-D filter along one axis as a real ``n x n`` matrix: inverse FFT . centred mask . FFT, applied to I."""
    keep = np.abs(np.arange(n) - n // 2) <= cutoff * n / 2
    spectrum = np.fft.fft(np.eye(n), axis=0, norm="ortho") * np.fft.ifftshift(keep)[:, None]
    return np.fft.ifft(spectrum, axis=0, norm="ortho").real.astype(np.float32)


def low_pass(grid: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Keep the frequencies within ``cutoff`` of the spectrum's centre (per axis) of a ``[B, C, H, W]`` grid.

    The centred mask is separable and symmetric in frequency, so the 2-D FFT filter is exactly
    ``A_H @ grid @ A_W^T`` with real matrices: two small matmuls, which onnxruntime runs far faster
    than its DFT (docs/performance.md).
    """
    height, width = grid.shape[-2:]
    rows = torch.from_numpy(_low_pass_matrix(height, cutoff)).to(grid.device)
    cols = torch.from_numpy(_low_pass_matrix(width, cutoff)).to(grid.device)
    return (rows @ grid.float() @ cols.T).to(grid.dtype)


class Bottleneck(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class EarthAdapter(ToolboxModule):
    """``x + scale * sum_i router_i(x) * adapter_i(band_i(x))`` over the bands (raw, low, high).

    It hooks the whole block and acts on its output; class and register tokens pass through untouched.
    The up-projections start at zero, so the module starts as an exact no-op.
    """

    kind = "earth_adapter"
    target = ""
    bands = ("raw", "low", "high")

    def __init__(self, dim: int, grid: TokenGrid, config: EarthAdapterConfig) -> None:
        super().__init__()
        self.cutoff = config.cutoff
        self.grid = grid
        self.adapters = nn.ModuleDict({band: Bottleneck(dim, config.hidden) for band in self.bands})
        self.router = nn.Linear(dim, len(self.bands))
        self.scale = nn.Parameter(torch.ones(1))

    def delta(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        prefix = self.grid.num_prefix_tokens
        height, width = self.grid.size
        tokens = output[:, prefix:]
        batch, _, dim = tokens.shape
        grid = tokens.transpose(1, 2).reshape(batch, dim, height, width)
        low = low_pass(grid, self.cutoff).flatten(2).transpose(1, 2)
        features = {"raw": tokens, "low": low, "high": tokens - low}
        weights = torch.softmax(self.router(tokens), dim=-1)
        mixed = sum(weights[..., i : i + 1] * self.adapters[band](features[band]) for i, band in enumerate(self.bands))
        mixed = mixed * self.scale
        return torch.cat([torch.zeros_like(output[:, :prefix]), mixed], dim=1)
