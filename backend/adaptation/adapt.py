"""Fisher-gated adaptation of a frozen segmentation ViT: DG (labelled) and DA (self-training).

DG trains on labelled samples with cross-entropy. DA trains on unlabelled target samples: an EMA
teacher labels them where it is confident, the student learns from those pseudo-labels (weighted by
the confident fraction), and labelled source samples, when given, are trained on and pasted into the
target images with ClassMix (DACS). In both, only the gated-on toolbox modules and the head train.

Self-training can drift: a class the teacher is unsure of loses its pseudo-labels, the student unlearns
it, and the teacher follows. Three guards, measured in docs/safe-adaptation.md: an anchor (the student's
predictions pulled towards the unadapted model's; on by default without labels, where it halves the images
that end more than a point below segment, off with an analyst's labels, where it gives up most of their gain),
class-balanced pseudo-label weights and a teacher that averages its predictions over flips and quarter turns
(both off). A fourth is for an analyst's labels, which push the classes they leave out down everywhere:
where the unadapted model is sure of such a class, its prediction is the pseudo-label (``protect_unlabelled``,
off: on 27 images of tiles 1, 4 and 6 with 20 polygons by class area it cost 1.5 points on average and did
not lift the worst image).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from backend.adaptation.augment import Sample, class_mix_masks, orient, photometric_jitter, sample_batch
from backend.adaptation.fisher_gate import FisherGate, GateConfig
from backend.analysis.metrics import IGNORE_INDEX
from backend.contract import ADAPT_DEFAULTS, DEFAULT_ANCHOR_WEIGHT, DEFAULT_RESELECT_EVERY
from backend.model.network import SegmentationModel
from backend.model.toolbox import ToolboxConfig
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress

# the dihedral views (quarter turns, then the same flipped) a teacher of n views averages over
DIHEDRAL_VIEWS = [(0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True)]
VIEW_COUNTS = (1, 2, 4, 8)


@dataclass
class AdaptConfig:
    """Adaptation settings; saved in the adapter checkpoint so a run can be repeated. The defaults are the
    product's (``backend.contract.ADAPT_DEFAULTS``, what ``crossearth adapt`` runs).

    ``tuning`` chooses what trains: ``toolbox`` (gated modules and head, the method), ``head`` (head
    only) or ``full`` (every backbone weight and the head, the full fine-tuning baseline); the head learns
    at ``lr * head_lr_scale``, and ``head_lr_scale`` 0 freezes it (the toolbox alone adapts).
    DA keeps a pseudo-label where the teacher's confidence reaches ``confidence``; with
    ``class_quantile`` q, each class's threshold is lowered to the q-quantile of the confidences of the
    pixels the teacher gives that class in the batch (class-balanced self-training), so classes the
    teacher is unsure of, often the rare ones, are not left out and unlearned.
    DA's guards against drift: ``anchor_weight`` weighs KL(unadapted || student) on the target pixels no label
    covers (None: ``DEFAULT_ANCHOR_WEIGHT``'s, by whether the samples carry an analyst's labels);
    ``class_balance`` p weighs each pseudo-labelled class by (its share of the batch's pseudo-labels)^-p;
    ``teacher_views`` (1, 2, 4 or 8) averages the teacher over that many flips and quarter turns.
    DA samples may carry a ``mask`` (an analyst's few labelled polygons): their pixels take the label instead of
    the pseudo-label and add a cross-entropy of weight ``label_weight`` averaged over the labelled pixels alone.
    With ``protect_unlabelled``, the classes no label shows take their pseudo-labels from the unadapted model
    (where it reaches ``confidence``), not the teacher, so that the labels' loss cannot erase them.
    """

    mode: str = ADAPT_DEFAULTS["mode"]
    steps: int = ADAPT_DEFAULTS["steps"]
    batch_size: int = ADAPT_DEFAULTS["batch_size"]
    crop_size: int = ADAPT_DEFAULTS["crop_size"]
    lr: float = ADAPT_DEFAULTS["lr"]
    head_lr_scale: float = 1.0
    weight_decay: float = 0.05
    poly_power: float = 1.0
    seed: int = ADAPT_DEFAULTS["seed"]
    tuning: str = "toolbox"
    toolbox: ToolboxConfig = field(default_factory=ToolboxConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    ema_momentum: float = ADAPT_DEFAULTS["ema_momentum"]
    confidence: float = ADAPT_DEFAULTS["confidence"]
    class_quantile: float | None = ADAPT_DEFAULTS["class_quantile"]
    class_mix: bool = True
    anchor_weight: float | None = ADAPT_DEFAULTS["anchor_weight"]
    class_balance: float = 0.0
    teacher_views: int = 1
    label_weight: float = 1.0
    protect_unlabelled: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("dg", "da"):
            raise ValueError(f"mode must be 'dg' or 'da', got {self.mode!r}")
        if self.tuning not in ("toolbox", "head", "full"):
            raise ValueError(f"tuning must be 'toolbox', 'head' or 'full', got {self.tuning!r}")
        if self.tuning == "head" and self.head_lr_scale <= 0:
            raise ValueError("head-only tuning needs head_lr_scale > 0")
        if self.steps < 1 or self.batch_size < 1 or self.crop_size < 16:
            raise ValueError("steps and batch_size must be >= 1 and crop_size >= 16")
        if not 0.0 <= self.confidence < 1.0 or not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError("confidence and ema_momentum must be in [0, 1)")
        if self.class_quantile is not None and not 0.0 <= self.class_quantile <= 1.0:
            raise ValueError(f"class_quantile must be in [0, 1], got {self.class_quantile}")
        if (self.anchor_weight or 0.0) < 0 or self.class_balance < 0 or self.label_weight < 0:
            raise ValueError("anchor_weight, class_balance and label_weight must be >= 0")
        if self.teacher_views not in VIEW_COUNTS:
            raise ValueError(f"teacher_views must be one of {VIEW_COUNTS}, got {self.teacher_views}")
        if isinstance(self.toolbox, dict):
            self.toolbox = ToolboxConfig(**self.toolbox)
        if isinstance(self.gate, dict):
            self.gate = GateConfig(**self.gate)
        if self.gate.reselect_every is None:
            self.gate.reselect_every = DEFAULT_RESELECT_EVERY[self.mode]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdaptResult:
    model: SegmentationModel
    config: AdaptConfig
    losses: list[float]
    selection: list[dict]
    trainable_parameters: int
    seconds: float
    pseudo_label_fraction: list[float] = field(default_factory=list)
    self_check: dict | None = None  # the self-check's Verdict.to_dict(), when backend.jobs ran it

    @property
    def active_modules(self) -> list[str]:
        return self.model.toolbox.active_names if self.model.toolbox else []


def adapt(
    model: SegmentationModel,
    samples: list[Sample],
    config: AdaptConfig | None = None,
    source: list[Sample] | None = None,
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> AdaptResult:
    """Adapt ``model`` in place. DG: ``samples`` are labelled. DA: ``samples`` are the unlabelled
    target; ``source`` optional labelled samples. Raises :class:`Cancelled` within a step of a cancel.
    """
    if not samples:
        raise ValueError("adaptation needs at least one sample")
    config = with_default_anchor(config or AdaptConfig(), samples)
    if config.mode == "dg" and any(s.get("mask") is None for s in samples):
        raise ValueError("DG adaptation needs labelled samples (a 'mask' in every sample)")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()

    gate = prepare_trainable(model, config)
    model.train()  # before anything runs it: the frozen backbone in eval mode, so scoring moves no norm statistics
    teacher = _make_teacher(model) if config.mode == "da" else None
    protect = config.mode == "da" and config.protect_unlabelled
    protected = unlabelled_classes(samples, model.config.num_classes) if protect else []
    needs_anchor = config.mode == "da" and (config.anchor_weight > 0 or protected)
    anchor = _make_anchor(model) if needs_anchor else None
    fractions: list[float] = []

    def next_batches() -> tuple[Sample, Sample | None]:
        batch = sample_batch(samples, config.batch_size, config.crop_size, generator)
        extra = sample_batch(source, config.batch_size, config.crop_size, generator) if source else None
        return batch, extra

    def task_loss(batches: tuple[Sample, Sample | None], rng: torch.Generator) -> tuple[torch.Tensor, float]:
        batch, source_batch = batches
        if config.mode == "dg":
            return F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=IGNORE_INDEX), 1.0
        return _self_training_loss(model, teacher, anchor, batch, source_batch, config, rng, protected)

    def loss_on(batches: tuple[Sample, Sample | None]) -> torch.Tensor:
        loss, fraction = task_loss(batches, generator)
        if config.mode == "da":
            fractions.append(fraction)
        return loss

    def repeatable_loss(batches: tuple[Sample, Sample | None]) -> torch.Tensor:
        """The same augmentations at every call, drawn aside from training's: the lookahead gate compares on it."""
        return task_loss(batches, torch.Generator().manual_seed(config.seed))[0]

    def reselect(step: int) -> None:
        batches = [next_batches() for _ in range(config.gate.fisher_batches)]
        gate.reselect(step, model, batches, loss_on, is_cancelled, repeatable_loss, config.lr * _lr_scale(step, config))
        _mirror_gates(model, teacher)

    if gate is not None:
        progress(0.0, "scoring toolbox modules (Fisher information)")
        reselect(0)
    optimizer = make_optimizer(model, config, previous=None)
    losses: list[float] = []
    for step in range(config.steps):
        check_cancelled(is_cancelled)
        if gate is not None and step > 0 and config.gate.selection != "all" and step % config.gate.reselect_every == 0:
            reselect(step)
            optimizer = make_optimizer(model, config, previous=optimizer)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * _lr_scale(step, config)
        loss = loss_on(next_batches())
        check_cancelled(is_cancelled)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if teacher is not None:
            _update_teacher(teacher, model, config.ema_momentum)
        losses.append(float(loss.detach()))
        progress((step + 1) / config.steps, f"step {step + 1}/{config.steps}, loss {losses[-1]:.3f}")
    model.eval()
    return AdaptResult(
        model=model,
        config=config,
        losses=losses,
        selection=gate.history if gate else [],
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        seconds=time.perf_counter() - started,
        pseudo_label_fraction=fractions,
    )


def _lr_scale(step: int, config: AdaptConfig) -> float:
    """The polynomial decay of the learning rate."""
    return (1.0 - step / config.steps) ** config.poly_power


def prepare_trainable(model: SegmentationModel, config: AdaptConfig) -> FisherGate | None:
    """Set requires_grad for the chosen tuning; returns the gate when the toolbox is in use."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in model.head.parameters():
        parameter.requires_grad_(config.head_lr_scale > 0)
    if config.tuning == "full":
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(True)
        return None
    if config.tuning == "head":
        return None
    if model.toolbox is None:
        model.add_toolbox(config.toolbox)
    return FisherGate(model.toolbox, config.gate, seed=config.seed)


def make_optimizer(model: SegmentationModel, config: AdaptConfig, previous: torch.optim.Optimizer | None):
    """AdamW over the trainable parameters only; state of parameters that stay trainable is carried over."""
    head = [p for p in model.head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [
        {"params": body, "initial_lr": config.lr},
        {"params": head, "initial_lr": config.lr * config.head_lr_scale},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay)
    if previous is not None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter in previous.state:
                    optimizer.state[parameter] = previous.state[parameter]
    return optimizer


def _make_teacher(model: SegmentationModel) -> SegmentationModel:
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def with_default_anchor(config: AdaptConfig, samples: list[Sample]) -> AdaptConfig:
    """``config`` with its anchor weight resolved: labels anchor the map themselves, so only self-training alone
    holds to the unadapted model by default. The result records the weight used."""
    if config.anchor_weight is not None:
        return config
    labelled = any(s.get("mask") is not None and bool((s["mask"] != IGNORE_INDEX).any()) for s in samples)
    return replace(config, anchor_weight=DEFAULT_ANCHOR_WEIGHT["with labels" if labelled else "without labels"])


def _make_anchor(model: SegmentationModel) -> SegmentationModel:
    """The unadapted model, frozen: the toolbox modules are still no-ops, so none needs to run."""
    anchor = _make_teacher(model)
    if anchor.toolbox is not None:
        anchor.toolbox.set_active([])
    return anchor


def view(images: torch.Tensor, index: int) -> torch.Tensor:
    return orient(images, *DIHEDRAL_VIEWS[index])


def unview(images: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of :func:`view`: maps a prediction on the view back onto the image."""
    turns, flip = DIHEDRAL_VIEWS[index]
    images = torch.flip(images, dims=(-1,)) if flip else images
    return torch.rot90(images, -turns, dims=(-2, -1))


@torch.no_grad()
def averaged_probabilities(model: SegmentationModel, images: torch.Tensor, views: int = 1) -> torch.Tensor:
    """Softmax of ``model`` averaged over the first ``views`` dihedral views of ``images`` (test-time augmentation)."""
    total = sum(unview(torch.softmax(model(view(images, i)), dim=1), i) for i in range(views))
    return total / views


def _mirror_gates(student: SegmentationModel, teacher: SegmentationModel | None) -> None:
    if teacher is not None and teacher.toolbox is not None:
        teacher.toolbox.set_active(student.toolbox.active_names)
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)


@torch.no_grad()
def _update_teacher(teacher: SegmentationModel, student: SegmentationModel, momentum: float) -> None:
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        if s.requires_grad:
            t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)


def pseudo_label_thresholds(
    confidence: torch.Tensor, pseudo: torch.Tensor, valid: torch.Tensor, config: AdaptConfig
) -> torch.Tensor:
    """Per-pixel confidence threshold: ``config.confidence``, lowered per class by ``class_quantile``."""
    threshold = torch.full_like(confidence, config.confidence)
    if config.class_quantile is None:
        return threshold
    for label in pseudo[valid].unique():
        of_class = (pseudo == label) & valid
        quantile = torch.quantile(confidence[of_class].float(), config.class_quantile)
        threshold[of_class] = torch.clamp(quantile, max=config.confidence)
    return threshold


def unlabelled_classes(samples: list[Sample], num_classes: int) -> list[int]:
    """The classes no labelled pixel shows, when some pixels are labelled (none: there is nothing to protect)."""
    seen: set[int] = set()
    for sample in samples:
        if sample.get("mask") is not None:
            seen.update(int(value) for value in sample["mask"].unique() if value != IGNORE_INDEX)
    return [label for label in range(num_classes) if label not in seen] if seen else []


def protect_classes(
    pseudo: torch.Tensor, unadapted: torch.Tensor, protected: list[int], confidence: float, free: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pseudo-labels with the ``free`` pixels where the unadapted model's probabilities ``[B, C, H, W]`` give a
    ``protected`` class at least ``confidence`` taking that class, and the mask of those pixels."""
    sure, label = unadapted.max(dim=1)
    kept = torch.isin(label, torch.tensor(protected)) & (sure >= confidence) & free
    return torch.where(kept, label, pseudo), kept


def class_balance_weights(pseudo: torch.Tensor, power: float, num_classes: int) -> torch.Tensor:
    """Per-pixel weight (share of the pixel's pseudo-class among the batch's pseudo-labels) ** -power,
    scaled to a mean of 1 over the pseudo-labelled pixels, so a rare class keeps its say in the loss."""
    labelled = pseudo != IGNORE_INDEX
    if power == 0 or not labelled.any():
        return torch.ones(pseudo.shape)
    counts = torch.bincount(pseudo[labelled], minlength=num_classes).float()
    per_class = (counts / counts.sum()).clamp(min=1e-6) ** -power
    weights = torch.where(labelled, per_class[pseudo.clamp(max=num_classes - 1)], torch.zeros(()))
    return weights / weights[labelled].mean()


def _self_training_loss(
    student: SegmentationModel,
    teacher: SegmentationModel,
    anchor: SegmentationModel | None,
    target: Sample,
    source: Sample | None,
    config: AdaptConfig,
    generator: torch.Generator,
    protected: list[int],
) -> tuple[torch.Tensor, float]:
    """DACS: pseudo-labels from the teacher where confident, weighted by the confident fraction;
    plus the drift guards of :class:`AdaptConfig`; ``protected`` classes' pseudo-labels from the anchor."""
    with torch.no_grad():
        probabilities = averaged_probabilities(teacher, target["image"], config.teacher_views)
        confidence, pseudo = probabilities.max(dim=1)
        threshold = pseudo_label_thresholds(confidence, pseudo, target["valid"], config)
        confident = (confidence >= threshold) & target["valid"]
        weight = confident.flatten(1).float().mean(dim=1)  # per image
        pseudo = torch.where(confident, pseudo, IGNORE_INDEX)
        known = target["mask"]  # the analyst's labels, IGNORE_INDEX where there are none
        labelled = known != IGNORE_INDEX
        pseudo = torch.where(labelled, known, pseudo)
        kept = torch.zeros_like(labelled)
        if protected:
            unadapted = torch.softmax(anchor(target["image"]), dim=1)
            pseudo, kept = protect_classes(pseudo, unadapted, protected, config.confidence, target["valid"] & ~labelled)
    pixel_weight = torch.where(labelled | kept, 1.0, weight.view(-1, 1, 1).expand_as(pseudo))
    loss = torch.zeros(())
    images = target["image"]
    if source is not None:
        loss = F.cross_entropy(student(source["image"]), source["mask"], ignore_index=IGNORE_INDEX)
        if config.class_mix:
            paste = class_mix_masks(source["mask"], generator)
            images = torch.where(paste[:, None], source["image"], images)
            pseudo = torch.where(paste, source["mask"], pseudo)
            known = torch.where(paste, IGNORE_INDEX, known)
            pixel_weight = torch.where(paste, torch.ones_like(pixel_weight), pixel_weight)
    if config.class_balance > 0:
        pixel_weight = pixel_weight * class_balance_weights(pseudo, config.class_balance, probabilities.shape[1])
    logits = student(photometric_jitter(images, generator))
    per_pixel = F.cross_entropy(logits, pseudo, ignore_index=IGNORE_INDEX, reduction="none")
    counted = (pseudo != IGNORE_INDEX).float()
    loss = loss + (per_pixel * pixel_weight * counted).sum() / counted.sum().clamp(min=1.0)
    if config.anchor_weight > 0:  # the analyst's pixels follow their labels, not the unadapted model
        loss = loss + config.anchor_weight * anchor_divergence(anchor, images, logits, target["valid"] & ~labelled)
    if (known != IGNORE_INDEX).any():
        loss = loss + config.label_weight * F.cross_entropy(logits, known, ignore_index=IGNORE_INDEX)
    return loss, float(confident.float().mean())


def anchor_divergence(
    anchor: SegmentationModel, images: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean KL(unadapted || student) over the valid pixels: how far the student's map has drifted."""
    with torch.no_grad():
        reference = torch.log_softmax(anchor(images), dim=1)
    divergence = (reference.exp() * (reference - torch.log_softmax(logits, dim=1))).sum(dim=1)
    weight = valid.float()
    return (divergence * weight).sum() / weight.sum().clamp(min=1.0)
