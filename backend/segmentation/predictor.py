"""Inference engines for sliding-window segmentation: PyTorch (CPU or CUDA), or the same model on onnxruntime.

Adaptation needs PyTorch; segmentation only needs the forward pass, which onnxruntime runs faster on
CPU (it is what the Deepness plugin runs). The adapted model is exported once per run, LoRA merged
and gated-off modules absent from the graph, with the softmax inside. On a GPU, PyTorch runs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.contract import ENGINES
from backend.errors import BadInput
from backend.model.network import SegmentationModel

Predict = Callable[[np.ndarray], np.ndarray]
# Exported models are kept here, named by what they were exported from, so a model (with the same adapter)
# is exported once and later runs start at once; ``CROSSEARTH_CACHE`` moves it.
CACHE_ENV = "CROSSEARTH_CACHE"
ONNX_CACHE_KEEP = 8  # most recently used exports kept
# ``auto`` runs PyTorch below this many tiles, where the one-off ONNX export costs more than onnxruntime
# saves; bench/inference.py measured the break-even at 188 tiles under light and 35 under heavy load.
AUTO_ONNX_MIN_TILES = 64


def class_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis (1), written out: onnxruntime's Softmax node on a non-last axis
    transposes the whole [B, K, H, W] tensor and took 10x longer than these elementwise passes."""
    exp = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    return exp / exp.sum(dim=1, keepdim=True)


class Probabilities(nn.Module):
    """The model followed by its class softmax: what every engine computes."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return class_softmax(self.model(image))


def resolve_device(device: str) -> torch.device:
    """``auto`` (a GPU when this machine has one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device
    this machine lacks is bad input, said before any work."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise BadInput(f"device {device!r}: not a torch device ({error})") from error
    if resolved.type not in ("cpu", "cuda"):
        raise BadInput(f"device {device!r}: only auto, cpu and cuda are supported")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= count:
            raise BadInput(f"device {device!r}: this machine ({platform.node()}) has {count} usable CUDA devices")
    return resolved


def _is_gpu(device: str) -> bool:
    """Whether ``device`` means a GPU here, without requiring that this machine has it (a cluster's workers may)."""
    return torch.cuda.is_available() if device == "auto" else torch.device(device).type == "cuda"


def torch_predictor(model: SegmentationModel, threads: int | None = None, device: str = "auto") -> Predict:
    """PyTorch in channels-last layout (1.2-1.5x eager NCHW here, same pixels; docs/performance.md).

    The model is moved to ``device`` and its convolution weights converted to channels-last in place:
    a change of place and memory layout only. Batches go to the device and probabilities come back.
    """
    if threads:
        torch.set_num_threads(threads)
    target = resolve_device(device)
    probabilities = Probabilities(model).eval().to(target, memory_format=torch.channels_last)

    @torch.inference_mode()
    def predict(batch: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(batch).to(target, non_blocking=True)
        return probabilities(images.contiguous(memory_format=torch.channels_last)).cpu().numpy()

    return predict


def export_onnx(model: SegmentationModel, path: str | Path, tile: int, batch_size: int) -> Path:
    """Export with the dynamo exporter, the batch size dynamic.

    LoRA is merged for the export and unmerged afterwards, so the PyTorch model is left as it was.
    """
    toolbox = model.toolbox
    if toolbox is not None:
        toolbox.merge_lora()
    example = torch.rand(batch_size, model.config.in_chans, tile, tile)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                Probabilities(model).eval(),
                (example,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
                verbose=False,
            )
        program.save(str(path))
    finally:
        if toolbox is not None:
            toolbox.unmerge_lora()
    return Path(path)


# Idle worker threads sleep rather than spin: on a CPU shared with QGIS and other jobs, spinning takes
# time from them and from our own threads (bench/inference.py measures both settings).
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


def onnx_session(path: str | Path, threads: int | None = None, config: dict[str, str] | None = None) -> Predict:
    """An onnxruntime CPU session on an exported model; ``config`` overrides entries of ``SESSION_CONFIG``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in {**SESSION_CONFIG, **(config or {})}.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return predict


def onnx_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "crossearth") / "onnx"


def export_fingerprint(model: SegmentationModel, tile: int, batch_size: int) -> str:
    """What an export depends on: every weight (backbone, head, adapter), which toolbox modules are on,
    the tile, the example batch and the torch version that traces it."""
    digest = hashlib.sha256(f"{torch.__version__}|{tile}|{batch_size}".encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    if model.toolbox is not None:
        digest.update(",".join(model.toolbox.active_names).encode())
    return digest.hexdigest()[:24]


def cached_export(model: SegmentationModel, tile: int, batch_size: int) -> Path:
    """The model's ONNX file from the cache, exported (atomically) on a miss; older exports are pruned."""
    folder = onnx_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{export_fingerprint(model, tile, batch_size)}.onnx"
    if path.exists():
        path.touch()  # recently used: pruned last
        return path
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as scratch:
        os.replace(export_onnx(model, Path(scratch) / "model.onnx", tile, batch_size), path)
    for stale in sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)[ONNX_CACHE_KEEP:]:
        stale.unlink(missing_ok=True)
    return path


def onnx_predictor(model: SegmentationModel, tile: int, batch_size: int, threads: int | None = None) -> Predict:
    try:
        return onnx_session(cached_export(model, tile, batch_size), threads)
    except OSError:  # no writable cache: export for this run only
        with tempfile.TemporaryDirectory(prefix="crossearth-onnx-") as folder:
            return onnx_session(export_onnx(model, Path(folder) / "model.onnx", tile, batch_size), threads)


def auto_engine(tiles: int | None, device: str = "auto") -> str:
    """On CPU, onnx when onnxruntime is installed and the scene has enough tiles (or an unknown count) to repay
    the export; on a GPU, torch."""
    if _is_gpu(device) or (tiles is not None and tiles < AUTO_ONNX_MIN_TILES):
        return "torch"
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def make_predictor(
    model: SegmentationModel,
    engine: str = "auto",
    tile: int = 512,
    batch_size: int = 4,
    threads: int | None = None,
    tiles: int | None = None,
    device: str = "auto",
) -> tuple[Predict, str]:
    """The predict callable for ``engine`` on ``device`` and the engine actually used; ``auto`` picks by
    :func:`auto_engine` from ``tiles``, the number of tiles the scene will need. onnx always runs on the CPU."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    target = resolve_device(device)
    model.eval()
    if engine == "auto":
        engine = auto_engine(tiles, device)
    if engine == "onnx":
        if device != "auto" and target.type == "cuda":  # auto means the CPU for onnx
            raise BadInput(f"device {device!r}: the onnx engine runs on the CPU; use --engine torch or auto on a GPU")
        return onnx_predictor(model, tile, batch_size, threads), "onnx"
    return torch_predictor(model, threads, device), "torch"
