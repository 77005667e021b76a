"""Adapter checkpoints: only the trained weights, as safetensors, with the run's metadata inside.

The frozen backbone is not stored: it comes from the model the adapter was trained on, identified by
its name and a hash of its weights, and loading refuses a different backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from backend.errors import BadInput
from backend.model.network import SegmentationModel, backbone_hash
from backend.model.toolbox import ToolboxConfig
from backend.rasters.atomic import atomic_output

METADATA_KEY = "crossearth"
FORMAT_VERSION = 1


def trained_state(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """Every parameter that trains (active toolbox modules, head, the backbone for full fine-tuning)."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: SegmentationModel, path: str | Path, metadata: dict, overwrite: bool = False) -> Path:
    """Write the trained weights and ``metadata`` (plus the backbone fingerprint and active modules)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "backbone": model.config.backbone,
        "backbone_hash": backbone_hash(model),
        "model_config": model.config.to_dict(),
        "toolbox_config": model.toolbox.config.to_dict() if model.toolbox else None,
        "active_modules": model.toolbox.active_names if model.toolbox else [],
        **metadata,
    }
    state = trained_state(model)
    with atomic_output(path, overwrite) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return Path(path)


def read_adapter_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: adapter checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BadInput(f"{path}: not a safetensors adapter checkpoint ({error})") from error
    if raw is None:
        raise BadInput(f"{path}: safetensors file without CrossEarth adapter metadata")
    return json.loads(raw)


def load_adapter(model: SegmentationModel, path: str | Path) -> dict:
    """Apply a saved adapter to ``model`` (same backbone): toolbox, gates and trained weights.

    Returns the checkpoint's metadata.
    """
    meta = read_adapter_metadata(path)
    if meta["backbone_hash"] != backbone_hash(model):
        raise BadInput(f"{path}: adapter was trained on another backbone ({meta['backbone']}, {meta['backbone_hash']})")
    if meta["toolbox_config"] is not None:
        if model.toolbox is None:
            model.add_toolbox(ToolboxConfig(**meta["toolbox_config"]))
        model.toolbox.set_active(meta["active_modules"])
    with safe_open(str(path), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    missing = set(state) - set(dict(model.named_parameters()))
    if missing:
        raise BadInput(f"{path}: weights do not fit this model ({sorted(missing)[:3]} ...)")
    model.load_state_dict(state, strict=False)
    model.eval()
    return meta
