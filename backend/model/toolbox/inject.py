"""Put the toolbox into every block of a timm Vision Transformer.

Modules are added as ``blocks.{i}.lora``, ``blocks.{i}.adapter`` and ``blocks.{i}.earth_adapter`` and act
through forward hooks on ``blocks.{i}.attn.qkv``, ``blocks.{i}.mlp`` and ``blocks.{i}``: the frozen
model's own names and code are untouched. The gate and the checkpoints speak in these names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn
from torch.utils.hooks import RemovableHandle

from backend.model.toolbox.adapter import Adapter, AdapterConfig
from backend.model.toolbox.base import ToolboxModule
from backend.model.toolbox.earth_adapter import EarthAdapter, EarthAdapterConfig, TokenGrid
from backend.model.toolbox.lora import LoRA, LoRAConfig

MODULE_KINDS = ("lora", "adapter", "earth_adapter")


@dataclass
class ToolboxConfig:
    kinds: tuple[str, ...] = MODULE_KINDS
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    earth_adapter: EarthAdapterConfig = field(default_factory=EarthAdapterConfig)

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        unknown = set(self.kinds) - set(MODULE_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"toolbox kinds must be a non-empty subset of {MODULE_KINDS}, got {self.kinds}")
        for name, cls in (("lora", LoRAConfig), ("adapter", AdapterConfig), ("earth_adapter", EarthAdapterConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))

    def to_dict(self) -> dict:
        return asdict(self)


class Toolbox:
    """The injected modules by qualified name (``blocks.3.lora``), in block order then kind order."""

    def __init__(
        self,
        vit: nn.Module,
        config: ToolboxConfig,
        modules: dict[str, ToolboxModule],
        handles: list[RemovableHandle],
        grid: TokenGrid,
    ) -> None:
        self.vit = vit
        self.config = config
        self.modules = modules
        self.grid = grid
        self._handles = handles

    def __iter__(self):
        return iter(self.modules.items())

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, name: str) -> ToolboxModule:
        return self.modules[name]

    @property
    def active_names(self) -> list[str]:
        return [name for name, module in self.modules.items() if module.active]

    def set_active(self, names: set[str] | list[str]) -> None:
        """Gate on exactly ``names``; every other module goes off."""
        unknown = set(names) - set(self.modules)
        if unknown:
            raise KeyError(f"no toolbox modules named {sorted(unknown)}")
        for name, module in self.modules.items():
            module.set_active(name in names)

    def merge_lora(self) -> None:
        for module in self.modules.values():
            if isinstance(module, LoRA):
                module.merge()

    def unmerge_lora(self) -> None:
        for module in self.modules.values():
            if isinstance(module, LoRA):
                module.unmerge()

    def remove(self) -> None:
        """Detach every hook and module, restoring the plain frozen model."""
        self.unmerge_lora()
        for handle in self._handles:
            handle.remove()
        for name in self.modules:
            block_path, kind = name.rsplit(".", 1)
            delattr(self.vit.get_submodule(block_path), kind)
        self.modules = {}


def _submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def inject_toolbox(vit: nn.Module, config: ToolboxConfig | None = None) -> Toolbox:
    """Add the configured module kinds to every block of ``vit`` and freeze everything else of it.

    ``vit`` is a timm VisionTransformer (or anything with ``blocks[i].attn.qkv``, ``blocks[i].mlp`` and
    ``patch_embed``). Raises if a target layer is missing, rather than silently skipping a block.
    """
    config = config or ToolboxConfig()
    blocks = getattr(vit, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError(f"{type(vit).__name__} has no transformer blocks to inject into")
    for parameter in vit.parameters():
        parameter.requires_grad_(False)

    grid = TokenGrid(getattr(vit, "num_prefix_tokens", 1))
    handles = [vit.patch_embed.register_forward_hook(grid.record)]
    modules: dict[str, ToolboxModule] = {}
    for index, block in enumerate(blocks):
        dim = block.attn.qkv.in_features
        for kind in config.kinds:
            if kind == "lora":
                module: ToolboxModule = LoRA(block.attn.qkv, config.lora)
            elif kind == "adapter":
                module = Adapter(dim, config.adapter)
            else:
                module = EarthAdapter(dim, grid, config.earth_adapter)
            target = _submodule(block, module.target)
            block.add_module(kind, module)
            handles.append(target.register_forward_hook(module.hook))
            modules[f"blocks.{index}.{kind}"] = module
    return Toolbox(vit, config, modules, handles, grid)
