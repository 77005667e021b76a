"""Fisher gating: train and apply only the toolbox modules that matter for this scene.

A module's importance is its empirical Fisher information: the squared gradient of the task loss,
summed over the module's parameters and averaged over a few mini-batches, measured with every module
temporarily active. The top-k modules are gated on; the choice is revisited every N steps.

The ``lookahead`` selection scores a module instead by the loss it removes on a held-out batch with one
trial step of the optimizer's real size: the Fisher score is that gain's first-order, small-step estimate.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from backend.contract import ADAPT_DEFAULTS
from backend.model.toolbox import Toolbox
from backend.progress import CancelFn, check_cancelled, never_cancelled

NORMALIZATIONS = ("none", "numel", "kind", "kind_block")
SELECTIONS = ("fisher", "lookahead", "random", "all")


@dataclass
class GateConfig:
    """How modules are chosen.

    ``top_k``: a count (>= 1) or a fraction (< 1) of all modules. ``param_budget``, when set, caps the
    selected modules' parameter count instead. ``normalization`` makes module kinds of different sizes
    comparable: ``none`` (raw sums; favours big modules), ``numel`` (mean per parameter) or ``kind``
    (each score divided by the mean score of its kind, so a module competes by how much it stands
    out among its own kind) or ``kind_block`` (``kind``, then divided by the mean of its block's scores,
    which removes the depth prior: gradients are largest in the early blocks, whatever the scene).
    ``selection``: ``fisher`` (the method), ``lookahead`` (the gain of a trial step, see
    :func:`lookahead_scores`; not normalised, as gains are in the loss's own units), ``random`` or ``all``.
    ``spread_over_blocks`` ranks modules by their rank within their block first and by score second, so the
    chosen ones spread over the depth (at most ceil(k / depth) per block) while the scores still choose the
    kinds in each block and which blocks get the extra ones: a half chosen by Fisher alone is the first
    blocks', as gradients are largest there. ``exclude`` names modules never chosen (still scored), to test
    whether one module's presence decides a result. ``reselect_every`` of ``None`` lets adaptation pick its
    mode's default.
    """

    selection: str = "fisher"
    top_k: float = ADAPT_DEFAULTS["top_k"]
    param_budget: int | None = None
    reselect_every: int | None = None
    fisher_batches: int = 2
    normalization: str = "kind"
    spread_over_blocks: bool = False
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.top_k <= 0 or (self.top_k >= 1 and self.top_k != int(self.top_k)):
            raise ValueError(f"top_k must be a fraction in (0, 1) or a whole count, got {self.top_k}")
        if self.fisher_batches < 1:
            raise ValueError("fisher_batches must be >= 1")
        if self.selection == "lookahead" and self.fisher_batches < 2:
            raise ValueError("lookahead selection needs fisher_batches >= 2: a step on one, the gain on another")

    def count(self, total: int) -> int:
        k = int(self.top_k) if self.top_k >= 1 else round(self.top_k * total)
        return max(1, min(total, k))


@contextmanager
def _every_module_measured(toolbox: Toolbox, model: nn.Module) -> Iterator[None]:
    """Every module switched on and gradients cleared for a measurement; afterwards the previous gates are
    restored and the gradients cleared again, so an optimizer step in progress is not disturbed."""
    previous = toolbox.active_names
    toolbox.set_active(list(toolbox.modules))
    model.zero_grad(set_to_none=True)
    try:
        yield
    finally:
        toolbox.set_active(previous)
        model.zero_grad(set_to_none=True)


def fisher_scores(
    toolbox: Toolbox,
    model: nn.Module,
    batches: Iterable,
    loss_fn: Callable[[object], torch.Tensor],
    is_cancelled: CancelFn = never_cancelled,
) -> dict[str, float]:
    """Raw empirical Fisher of every module: mean over ``batches`` of the summed squared gradients,
    measured with every module active (:func:`_every_module_measured`)."""
    totals = dict.fromkeys(toolbox.modules, 0.0)
    count = 0
    with _every_module_measured(toolbox, model):
        for batch in batches:
            check_cancelled(is_cancelled)
            loss_fn(batch).backward()
            for name, module in toolbox:
                totals[name] += sum(float((p.grad**2).sum()) for p in module.parameters() if p.grad is not None)
            model.zero_grad(set_to_none=True)
            count += 1
    if count == 0:
        raise ValueError("Fisher scores need at least one batch")
    return {name: total / count for name, total in totals.items()}


def lookahead_scores(
    toolbox: Toolbox,
    model: nn.Module,
    step_batch: object,
    gain_batch: object,
    loss_fn: Callable[[object], torch.Tensor],
    step_size: float,
    is_cancelled: CancelFn = never_cancelled,
) -> dict[str, float]:
    """Loss removed on ``gain_batch`` by one trial step of each module alone, taken on ``step_batch``.

    The step is Adam's first: ``step_size`` times the sign of each parameter's gradient. Where the empirical
    Fisher extrapolates an infinitesimal step, this measures a step of the size training takes, so a module
    whose large steps disturb every later feature (an early block's) scores by what they cost. ``loss_fn``
    must repeat its augmentations at every call, or the candidates are compared on different inputs.
    Every module is active while measuring, as for the Fisher scores; parameters and gates are restored.
    """
    gains = {}
    with _every_module_measured(toolbox, model):
        loss_fn(step_batch).backward()
        with torch.no_grad():
            before = float(loss_fn(gain_batch))
            for name, module in toolbox:
                check_cancelled(is_cancelled)
                stepped = [p for p in module.parameters() if p.grad is not None]
                saved = [p.detach().clone() for p in stepped]
                for parameter in stepped:
                    parameter.sub_(step_size * parameter.grad.sign())
                gains[name] = before - float(loss_fn(gain_batch))
                for parameter, value in zip(stepped, saved, strict=True):
                    parameter.copy_(value)
    return gains


def normalize_scores(toolbox: Toolbox, raw: dict[str, float], normalization: str) -> dict[str, float]:
    if normalization == "none":
        return dict(raw)
    if normalization == "numel":
        return {name: score / toolbox[name].num_parameters() for name, score in raw.items()}
    by_kind = _divide_by_group_mean(raw, lambda name: toolbox[name].kind)
    if normalization == "kind":
        return by_kind
    return _divide_by_group_mean(by_kind, _block)


def _block(name: str) -> str:
    return name.rsplit(".", 1)[0]  # blocks.{i}.<kind> -> blocks.{i}


def _divide_by_group_mean(scores: dict[str, float], group: Callable[[str], str]) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for name, score in scores.items():
        totals.setdefault(group(name), []).append(score)
    means = {key: sum(values) / len(values) for key, values in totals.items()}
    return {name: score / (means[group(name)] or 1.0) for name, score in scores.items()}


def select_modules(toolbox: Toolbox, scores: dict[str, float], config: GateConfig) -> list[str]:
    """The highest-scoring modules: ``top_k`` of them, or as many as fit ``param_budget``."""
    ranked = sorted(scores, key=lambda name: (-scores[name], name))
    if config.spread_over_blocks:
        rank_in_block: dict[str, int] = {}
        taken: dict[str, int] = {}
        for name in ranked:
            rank_in_block[name] = taken.get(_block(name), 0)
            taken[_block(name)] = rank_in_block[name] + 1
        ranked = sorted(ranked, key=rank_in_block.__getitem__)  # stable: by score within a rank
    if config.param_budget is None:
        return ranked[: config.count(len(ranked))]
    chosen, used = [], 0
    for name in ranked:
        size = toolbox[name].num_parameters()
        if used + size <= config.param_budget:
            chosen.append(name)
            used += size
    return chosen or ranked[:1]


class FisherGate:
    """Chooses the active modules and keeps the history of every choice (for the report and checkpoint)."""

    def __init__(self, toolbox: Toolbox, config: GateConfig, seed: int = 0) -> None:
        self.toolbox = toolbox
        self.config = config
        self.history: list[dict] = []
        self._random = random.Random(seed)

    def reselect(
        self,
        step: int,
        model: nn.Module,
        batches: Sequence,
        loss_fn: Callable[[object], torch.Tensor],
        is_cancelled: CancelFn = never_cancelled,
        repeatable_loss_fn: Callable[[object], torch.Tensor] | None = None,
        step_size: float = 0.0,
    ) -> list[str]:
        """Score the modules, gate on the chosen ones, record the event; returns the active names.

        ``lookahead`` selection also needs ``repeatable_loss_fn`` (``loss_fn`` with fixed augmentations) and
        the optimizer's current ``step_size``.
        """
        names = list(self.toolbox.modules)
        unknown = set(self.config.exclude) - set(names)
        if unknown:
            raise ValueError(f"cannot exclude modules the toolbox does not have: {sorted(unknown)}")
        if self.config.selection == "all":
            scores = dict.fromkeys(names, 1.0)
            chosen = [name for name in names if name not in self.config.exclude]
        else:
            # Every gate measures the Fisher scores, even those that ignore them: the measurement draws random numbers
            # (DA's augmentations), so only thus do the gates train on the same crops and differ by their choice alone.
            raw = fisher_scores(self.toolbox, model, batches, loss_fn, is_cancelled)
            if self.config.selection == "random":
                scores = {name: self._random.random() for name in names}
            elif self.config.selection == "lookahead":
                if repeatable_loss_fn is None or step_size <= 0:
                    raise ValueError("lookahead selection needs a repeatable loss and a step size > 0")
                scores = lookahead_scores(
                    self.toolbox, model, batches[0], batches[-1], repeatable_loss_fn, step_size, is_cancelled
                )
            else:
                scores = normalize_scores(self.toolbox, raw, self.config.normalization)
            allowed = {name: score for name, score in scores.items() if name not in self.config.exclude}
            chosen = select_modules(self.toolbox, allowed, self.config)
        self.toolbox.set_active(chosen)
        self.history.append({"step": step, "scores": scores, "active": sorted(chosen, key=names.index)})
        return self.toolbox.active_names

    def state(self) -> dict:
        return {"config": asdict(self.config), "history": self.history}
