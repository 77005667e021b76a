"""The CrossEarth-Gate toolbox: spatial (LoRA), semantic (Adapter) and frequency (Earth-Adapter) modules."""

from backend.toolbox.adapter import Adapter, AdapterConfig
from backend.toolbox.base import ToolboxModule
from backend.toolbox.earth_adapter import EarthAdapter, EarthAdapterConfig
from backend.toolbox.inject import MODULE_KINDS, Toolbox, ToolboxConfig, inject_toolbox
from backend.toolbox.lora import LoRA, LoRAConfig

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
