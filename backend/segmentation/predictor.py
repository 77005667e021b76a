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

from backend.contract import ENGINES, PRECISIONS
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
# What ``precision="auto"`` runs on the onnx engine: int8 MatMuls (onnxruntime's dynamic quantisation, weights
# QInt8, activations quantised per batch) ran the bare forward 1.19x fp32 for at most 0.01 mIoU on held-out
# images (docs/performance.md). The torch engine always runs fp32.
ONNX_DEFAULT_PRECISION = "int8"


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


def quantize_int8(fp32: str | Path, path: str | Path) -> Path:
    """The exported graph with its MatMuls in int8 (weights QInt8, activations quantised at run time): the
    adapter is already in ``fp32`` (LoRA merged, Adapters and Earth-Adapters as graph nodes), so it is
    quantised with the rest. Convolutions, norms and the softmax stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return Path(path)


def resolve_precision(engine: str, precision: str) -> str:
    """``fp32`` or ``int8`` for a resolved engine; int8 only exists on the onnx engine."""
    if precision not in PRECISIONS:
        raise BadInput(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if engine == "torch":
        if precision == "int8":
            raise BadInput("precision 'int8': only the onnx engine runs int8; use --engine onnx or --precision fp32")
        return "fp32"
    return ONNX_DEFAULT_PRECISION if precision == "auto" else precision


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


def cached_export(model: SegmentationModel, tile: int, batch_size: int, precision: str = "fp32") -> Path:
    """The model's ONNX file from the cache, exported (atomically) on a miss; older exports are pruned.

    An int8 graph is kept beside the fp32 one it is quantised from (``<fingerprint>.int8.onnx``), and made
    from the cached fp32 export when there is one."""
    folder = onnx_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = export_fingerprint(model, tile, batch_size)
    fp32 = folder / f"{fingerprint}.onnx"
    path = fp32 if precision == "fp32" else folder / f"{fingerprint}.{precision}.onnx"
    if path.exists():
        path.touch()  # recently used: pruned last
        return path
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as scratch:
        if not fp32.exists():
            os.replace(export_onnx(model, Path(scratch) / "model.onnx", tile, batch_size), fp32)
        if path != fp32:
            os.replace(quantize_int8(fp32, Path(scratch) / "model.int8.onnx"), path)
    for stale in sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)[ONNX_CACHE_KEEP:]:
        stale.unlink(missing_ok=True)
    return path


def onnx_predictor(
    model: SegmentationModel, tile: int, batch_size: int, threads: int | None = None, precision: str = "fp32"
) -> Predict:
    try:
        return onnx_session(cached_export(model, tile, batch_size, precision), threads)
    except OSError:  # no writable cache: export for this run only
        with tempfile.TemporaryDirectory(prefix="crossearth-onnx-") as folder:
            path = export_onnx(model, Path(folder) / "model.onnx", tile, batch_size)
            if precision == "int8":
                path = quantize_int8(path, Path(folder) / "model.int8.onnx")
            return onnx_session(path, threads)


def auto_engine(tiles: int | None, device: str = "auto") -> str:
    """On CPU, onnx when onnxruntime is installed and the scene has enough tiles (or an unknown count) to repay
    the export; on a GPU, torch."""
    if _is_gpu(device) or (tiles is not None and tiles < AUTO_ONNX_MIN_TILES):
        return "torch"
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def pick_engine(engine: str, precision: str, tiles: int | None, device: str = "auto") -> str:
    """``engine`` resolved: ``auto`` is onnx for an explicit int8 on the CPU, else :func:`auto_engine`'s choice."""
    if engine != "auto":
        return engine
    return "onnx" if precision == "int8" and not _is_gpu(device) else auto_engine(tiles, device)


def make_predictor(
    model: SegmentationModel,
    engine: str = "auto",
    tile: int = 512,
    batch_size: int = 4,
    threads: int | None = None,
    tiles: int | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> tuple[Predict, str]:
    """The predict callable for ``engine`` on ``device`` at ``precision`` and the engine actually used; ``auto``
    picks the engine by :func:`auto_engine` from ``tiles``, the number of tiles the scene will need (onnx for an
    explicit int8 on the CPU), and the precision by :func:`resolve_precision`. onnx always runs on the CPU."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    target = resolve_device(device)
    model.eval()
    engine = pick_engine(engine, precision, tiles, device)
    precision = resolve_precision(engine, precision)
    if engine == "onnx":
        if device != "auto" and target.type == "cuda":  # auto means the CPU for onnx
            raise BadInput(f"device {device!r}: the onnx engine runs on the CPU; use --engine torch or auto on a GPU")
        return onnx_predictor(model, tile, batch_size, threads, precision), "onnx"
    return torch_predictor(model, threads, device), "torch"
