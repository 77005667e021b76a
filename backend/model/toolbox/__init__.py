"""The CrossEarth-Gate toolbox: spatial (LoRA), semantic (Adapter) and frequency (Earth-Adapter) modules."""

from backend.model.toolbox.adapter import Adapter, AdapterConfig
from backend.model.toolbox.base import ToolboxModule
from backend.model.toolbox.earth_adapter import EarthAdapter, EarthAdapterConfig
from backend.model.toolbox.inject import MODULE_KINDS, Toolbox, ToolboxConfig, inject_toolbox
from backend.model.toolbox.lora import LoRA, LoRAConfig

__all__ = [
    "MODULE_KINDS",
    "Adapter",
    "AdapterConfig",
    "EarthAdapter",
    "EarthAdapterConfig",
    "LoRA",
    "LoRAConfig",
    "Toolbox",
    "ToolboxConfig",
    "ToolboxModule",
    "inject_toolbox",
]
