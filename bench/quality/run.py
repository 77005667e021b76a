"""Cross-domain benchmark of the adaptation: every baseline, DG and DA, clean and sensor-shifted targets.

    python bench/quality/run.py --out results/quality.json      (make bench-quality)

Runs go to worker processes (one torch thread each) and are cached as JSON under ``--cache`` by a hash of
their settings, so a rerun only computes what changed; the pretrained backbones are cached there too.
At the end the results, docs/quality.md and docs/figures/quality_*.png are written from the runs.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import (
    BASELINES,
    CLASS_NAMES,
    EVAL_CROP,
    METHODS,
    PEFT_SINGLE,
    REPO,
    ROTATIONS,
    SENSOR_SHIFT,
    UDA,
    deep_update,
    run,
    run_key,
    setting_of,
    summarize,
)

from backend.model.registry import SOURCE_SAMPLES_FILE

DEFAULT_CACHE = Path.home() / ".cache" / "crossearth" / "quality"
# (held-out tile, image part): the defaults are measured on all; the other variants, which only explain
# how the defaults were chosen, on the first two
PROMISE_SCENES = [(5, 1), (6, 1), (5, 5), (6, 5)]
PROMISE_VARIANT_SCENES = 2

# Gate ablation (DG, Fisher gating): one setting changed at a time from the defaults.
ABLATION = {
    "k=0.25": {"gate": {"top_k": 0.25}},
    "k=0.75": {"gate": {"top_k": 0.75}},
    "reselect=5": {"gate": {"reselect_every": 5}},
    "reselect=never": {"gate": {"reselect_every": 100_000}},
    "norm=none": {"gate": {"normalization": "none"}},
    "norm=numel": {"gate": {"normalization": "numel"}},
    "norm=kind_block": {"gate": {"normalization": "kind_block"}},
}

# Diagnosis of the main table: some methods with settings changed, every seed, DG and both DAs.
# variant -> (AdaptConfig overrides, the methods it applies to)
DIAGNOSIS_METHODS = ["fisher_gate", "lora_only", "all_modules", "random_gate"]
KIND_BLOCK = {"gate": {"normalization": "kind_block"}}
DIAGNOSIS: dict[str, tuple[dict, list[str]]] = {
    "head lr x0.1": ({"head_lr_scale": 0.1}, DIAGNOSIS_METHODS),
    "gate norm kind_block": (KIND_BLOCK, ["fisher_gate"]),
    "head lr x0.1, gate norm kind_block": ({"head_lr_scale": 0.1, **KIND_BLOCK}, ["fisher_gate"]),
}
# In standard UDA: the head frozen (only the gated modules adapt), with and without per-block normalisation.
HEAD_FROZEN = {"head_lr_scale": 0.0}
UDA_DIAGNOSIS: dict[str, tuple[dict, list[str]]] = {
    "head frozen": (HEAD_FROZEN, ["fisher_gate", "lora_only", "random_gate"]),
    "head frozen, gate norm kind_block": ({**HEAD_FROZEN, **KIND_BLOCK}, ["fisher_gate"]),
}

# The product's DA defaults and every variant of them tried, measured on the held-out scenes. A run is
# cached by its complete AdaptOptions, so the same settings under two names are computed once.
PROMISE_VARIANTS: dict[str, dict] = {
    "defaults": {},
    "with the model's source crops (DACS)": {"source_samples": True},
    "head frozen (only the gated modules adapt)": {"extra": HEAD_FROZEN},
    "before this benchmark: lr 1e-4, EMA 0.999": {"lr": 1e-4, "ema_momentum": 0.999, "class_quantile": None},
    "lr 1e-3, EMA 0.99, one threshold for all classes": {"lr": 1e-3, "ema_momentum": 0.99, "class_quantile": None},
    "lr 1e-3, EMA 0.99, class_quantile 0.5": {"lr": 1e-3, "ema_momentum": 0.99, "class_quantile": 0.5},
}
PROMISE_ALL_SCENES = ["defaults", "with the model's source crops (DACS)", "head frozen (only the gated modules adapt)"]

# Every method on the product's own path: the held-out default model adapts to each promise scene with
# adapt-segment's defaults, only what trains changed (METHODS); source only is plain segment.
SCENE_METHODS = {method: {"extra": config} for method, config in METHODS.items() if config is not None}
SCENE_SEEDS = 3
# On the same path, with fewer seeds: the gate's ablation (one setting of Fisher gating changed), and
# whether the choice of modules matters once the modules move more (the toolbox at ten times the learning
# rate, the head kept at the default one) for Fisher gating and four baselines, and for Fisher
# gating without its depth prior (per-block normalisation), and for random gating that keeps its first
# choice as Fisher gating mostly does (does a random choice gain by changing, or by spreading over the depth?),
# and the lookahead gate (modules scored by the loss a trial step of the real size removes) at both rates.
MODULES_LR_X10 = {"lr": 1e-2, "head_lr_scale": 0.1}
X10 = ", modules lr x10"
# Three times the rate (the head's kept at 1e-3): the step between the default and ten times, at which wide
# choices became unstable (held-out images only).
MODULES_LR_X3 = {"lr": 3e-3, "head_lr_scale": 1 / 3}
X3 = ", modules lr x3"
# A longer schedule at the default rates: three times adapt-segment's 120 steps, so the modules move further
# from their no-op start without the instability of a higher rate (the four promise scenes, seed 0).
LONGER = ", 360 steps"
SCENE_VARIANTS = {
    "fisher_gate, k=0.25": {"top_k": 0.25},
    "fisher_gate, k=0.75": {"top_k": 0.75},
    "fisher_gate, norm=kind_block": {"extra": {"gate": {"normalization": "kind_block"}}},
    **{
        method + X10: {"extra": {**METHODS[method], **MODULES_LR_X10}}
        for method in ("fisher_gate", "random_gate", "lora_only", "all_modules", "earth_adapter_only")
    },
    "fisher_gate, norm=kind_block" + X10: {"extra": {"gate": {"normalization": "kind_block"}, **MODULES_LR_X10}},
    "random_gate, never re-selected" + X10: {
        "extra": {"gate": {"selection": "random", "reselect_every": 100_000}, **MODULES_LR_X10}
    },
    "lookahead_gate": {"extra": {"gate": {"selection": "lookahead"}}},
    "lookahead_gate" + X10: {"extra": {"gate": {"selection": "lookahead"}, **MODULES_LR_X10}},
    # A tighter budget, where which modules train might matter at the default rate.
    "random_gate, k=0.25": {"extra": {"gate": {"selection": "random", "top_k": 0.25}}},
    "fisher_gate, k=2": {"top_k": 2},
    "random_gate, k=2": {"extra": {"gate": {"selection": "random", "top_k": 2}}},
    "fisher_gate, k=2" + X10: {"extra": {"gate": {"top_k": 2}, **MODULES_LR_X10}},
    "random_gate, k=2" + X10: {"extra": {"gate": {"selection": "random", "top_k": 2}, **MODULES_LR_X10}},
    # Fisher's ranking within each block, the budget spread over the blocks.
    "fisher_gate, spread over blocks": {"extra": {"gate": {"spread_over_blocks": True}}},
    "fisher_gate, spread over blocks" + X10: {"extra": {"gate": {"spread_over_blocks": True}, **MODULES_LR_X10}},
    # The one module in every half Fisher's scores chose on tile 5 image 1 and in neither random first half.
    "fisher_gate, without block 1's Earth-Adapter" + X10: {
        "extra": {"gate": {"exclude": ["blocks.1.earth_adapter"]}, **MODULES_LR_X10}
    },
}
SCENE_VARIANT_SEEDS = 2
# Gates paired with random gating of the same budget and rates (reported as gate_pairs).
GATE_PAIRS = [
    ("fisher_gate", "random_gate"),
    ("lookahead_gate", "random_gate"),
    ("fisher_gate, k=0.25", "random_gate, k=0.25"),
    ("fisher_gate, k=2", "random_gate, k=2"),
    ("fisher_gate, k=2" + X10, "random_gate, k=2" + X10),
    ("fisher_gate" + X10, "random_gate" + X10),
    ("fisher_gate, norm=kind_block" + X10, "random_gate" + X10),
    ("lookahead_gate" + X10, "random_gate" + X10),
    ("fisher_gate, spread over blocks", "random_gate"),
    ("fisher_gate, spread over blocks" + X10, "random_gate" + X10),
    ("fisher_gate, without block 1's Earth-Adapter" + X10, "random_gate" + X10),
    ("random_gate, never re-selected" + X10, "random_gate" + X10),
    ("fisher_gate" + X3, "random_gate" + X3),
    ("fisher_gate" + LONGER, "random_gate" + LONGER),
]

# Every image of the two held-out tiles (18; the four promise scenes are among them), seed 0: do the promise
# and the gate's standing hold beyond four scenes, one of which (tile 5 image 1) decides every mean above?
# The methods are those the target names (Fisher gating, random gating, LoRA only: the best single-type
# PEFT on the four scenes) and the one budget at which Fisher's choice beat random gating's in every pair on the
# four scenes (k=0.25).
# Two controls on exactly Fisher gating's crops (the scoring still runs, its choice is narrowed by `exclude`),
# where lora_only and head_only draw other crops: the head alone (every module of the default recipe's 4 blocks
# x 3 kinds excluded), so the paired difference is what the chosen modules add; and LoRA in every block (the
# other kinds excluded), so Fisher gating meets the best single-type PEFT of the four scenes without crop noise.
# Faster modules, where they and not only the head move the prediction; the head's rate stays 1e-3, so the head
# alone is their control too: ten times the rate with a budget of two modules (where Fisher's choice beat random
# gating's in 7 of 8 pairs on the four scenes), and three times the rate with the default budget; LoRA in every
# block at ten times the rate meets the first on the same crops, as the best single-type PEFT.
HEAD_ALONE = "head alone, on Fisher gating's crops"
LORA_SAME_CROPS = "lora_only, on Fisher gating's crops"
EVERY_MODULE = [f"blocks.{block}.{kind}" for block in range(4) for kind in ("lora", "adapter", "earth_adapter")]
NOT_LORA = [name for name in EVERY_MODULE if not name.endswith("lora")]
HELD_OUT_IMAGES = [(tile, part) for tile in (5, 6) for part in range(1, 10)]
HELD_OUT_OPTIONS = {
    **SCENE_METHODS,
    **SCENE_VARIANTS,
    HEAD_ALONE: {"extra": {"gate": {"exclude": EVERY_MODULE}}},
    LORA_SAME_CROPS: {"extra": {"gate": {"exclude": NOT_LORA}}},
    LORA_SAME_CROPS + X10: {"extra": {"gate": {"exclude": NOT_LORA}, **MODULES_LR_X10}},
    **{method + X3: {"extra": {**METHODS[method], **MODULES_LR_X3}} for method in ("fisher_gate", "random_gate")},
}
LONGER_BASES = ("fisher_gate", "random_gate", HEAD_ALONE)
# with the 120-step rows of the same scenes and seed, already run on every held-out image
LONGER_METHODS = ["fisher_gate", "random_gate", "lora_only", HEAD_ALONE, *(name + LONGER for name in LONGER_BASES)]
HELD_OUT_OPTIONS |= {name + LONGER: {**HELD_OUT_OPTIONS[name], "steps": 360} for name in LONGER_BASES}
HELD_OUT_METHODS = [
    "fisher_gate",
    "random_gate",
    "lora_only",
    "fisher_gate, k=0.25",
    "random_gate, k=0.25",
    HEAD_ALONE,
    LORA_SAME_CROPS,
    "fisher_gate, k=2" + X10,
    "random_gate, k=2" + X10,
    "fisher_gate" + X3,
    "random_gate" + X3,
    LORA_SAME_CROPS + X10,
]
# (method, control) paired by image: what the chosen modules add to the head, and Fisher's choice against LoRA's.
HELD_OUT_CONTROLS = [
    ("fisher_gate", HEAD_ALONE),
    ("fisher_gate", LORA_SAME_CROPS),
    ("fisher_gate, k=2" + X10, HEAD_ALONE),
    ("fisher_gate, k=2" + X10, LORA_SAME_CROPS + X10),
    ("random_gate, k=2" + X10, HEAD_ALONE),
    ("fisher_gate" + X3, HEAD_ALONE),
    ("random_gate" + X3, HEAD_ALONE),
    ("fisher_gate" + LONGER, HEAD_ALONE + LONGER),
    ("random_gate" + LONGER, HEAD_ALONE + LONGER),
]
# The same path on held-out images seen through the sensor shift (protocol.SENSOR_SHIFT: colour response,
# gamma, a coarser sensor's blur, noise), seed 0. On the images as they are the head carries the gain and the
# modules barely move the prediction; a gap of colour, blur and noise is one a head on fixed features may not
# undo and modules inside the backbone might, so there the toolbox, and the gate's choice of it, could matter.
# Every other image of each held-out tile (8), the default rate and ten times it with two modules, each with its
# controls on the same crops (HELD_OUT_CONTROLS), and LoRA only as in the held-out rows.
SHIFTED_IMAGES = [(tile, part) for tile in (5, 6) for part in (1, 3, 5, 7)]
SHIFTED_METHODS = [
    "fisher_gate",
    "random_gate",
    HEAD_ALONE,
    LORA_SAME_CROPS,
    "fisher_gate, k=2" + X10,
    "random_gate, k=2" + X10,
    LORA_SAME_CROPS + X10,
    "lora_only",  # the single-type PEFT baseline, on crops of its own
]


@functools.cache
def model_sha256(model: Path, with_source_samples: bool) -> str:
    """The model files a run reads: its weights, and its source crops when DA mixes them in (hashed once)."""
    digest = hashlib.sha256((model / "model.safetensors").read_bytes())
    if with_source_samples and (model / "source_samples.safetensors").is_file():
        digest.update((model / "source_samples.safetensors").read_bytes())
    return digest.hexdigest()[:16]


def promise_spec(model: Path, tile: int, part: int, options: dict, domain: str = "clean") -> dict:
    """Every AdaptOptions field and the model's files (by hash) are in the spec, so a change of the defaults or
    a retrained model is a new run, not a stale cache. ``domain`` "shift" sees the scene through the sensor
    shift; "clean" adds no key, so the runs on the images as they are keep their cache keys."""
    from backend.jobs import AdaptOptions

    adapt_options = AdaptOptions(**options)
    spec = {
        "model": str(model),
        "model_sha256": model_sha256(model, adapt_options.source_samples),
        "tile": tile,
        "part": part,
        "options": asdict(adapt_options),
    }
    return spec if domain == "clean" else {**spec, "domain": domain}


def scene_method_jobs(model: Path) -> list[tuple[str, str, dict]]:
    """(row, kind, spec) seed by seed, so that a partial run already covers every method and scene; then the
    variants."""
    rows = [(seed, SCENE_METHODS) for seed in range(SCENE_SEEDS)]
    rows += [(seed, SCENE_VARIANTS) for seed in range(SCENE_VARIANT_SEEDS)]
    return [
        (name, "promise", promise_spec(model, *scene, {**options, "seed": seed}))
        for seed, variants in rows
        for name, options in variants.items()
        for scene in PROMISE_SCENES
    ]


def held_out_image_jobs(
    model: Path,
    methods: list[str] = HELD_OUT_METHODS,
    images: list[tuple[int, int]] = HELD_OUT_IMAGES,
    domain: str = "clean",
) -> list[tuple[str, str, dict]]:
    """(row, kind, spec) method by method, so that a partial run already covers every image for the first ones."""
    return [
        (name, "promise", promise_spec(model, *scene, {**HELD_OUT_OPTIONS[name], "seed": 0}, domain))
        for name in methods
        for scene in images
    ]


def held_out_summary(methods: list[str], results: list[dict]) -> dict:
    """Per-method rows of held-out image runs, Fisher gating paired with each method, and the gate pairs and
    controls among the methods that ran."""
    rows = scene_methods_summary(methods, results)
    return {
        "methods": rows,
        "headline": scene_headline(rows),
        "gate_pairs": gate_pairs(rows),
        "controls": {
            f"{method} vs {control}": paired_gain(rows, method, control)
            for method, control in HELD_OUT_CONTROLS
            if method in rows and control in rows
        },
    }


def pretrain(rotation: str, steps: int, cache: Path) -> str:
    """The frozen backbone of a rotation: the default model's recipe on the pretraining tiles (cached)."""
    from train_default import main as train_default

    folder = cache / "pretrained" / f"P{'-'.join(map(str, ROTATIONS[rotation]['pretrain']))}_steps{steps}"
    if not (folder / "model.safetensors").is_file():
        train_default(
            train_tiles=ROTATIONS[rotation]["pretrain"],
            eval_tiles=[],
            output=folder,
            steps=steps,
            log=folder.with_suffix(".log"),
        )
    return str(folder)


def uda_spec(common: dict, method: str, domain: str, name: str | None = None, overrides: dict | None = None) -> dict:
    """A standard-UDA run: ``UDA``'s settings, then a diagnosis variant's ``overrides``."""
    spec = {**common, **UDA, "setting": "da", "method": method, "name": name or method, "target_domain": domain}
    if overrides:
        spec["overrides"] = deep_update(UDA["overrides"], overrides)
    return spec


def uda_jobs(base: dict, pretrained: dict, rotations: list[str], seeds: int, diagnosis: bool) -> list[tuple[str, dict]]:
    """Seed by seed, so that a partial run already covers every rotation; the main table or the diagnosis."""
    jobs = []
    for seed in range(seeds):
        for rotation in rotations:
            common = {**base, "rotation": rotation, "pretrained": pretrained[rotation], "seed": seed}
            for domain in ("shift", "clean"):
                if diagnosis:
                    for variant, (overrides, methods) in UDA_DIAGNOSIS.items():
                        for method in methods:
                            jobs.append(("adapt", uda_spec(common, method, domain, f"{method}, {variant}", overrides)))
                    continue
                for method in METHODS:
                    if method != "source_only" or seed == 0:  # source only is deterministic: one evaluation
                        jobs.append(("adapt", uda_spec(common, method, domain)))
    return jobs


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _execute(kind: str, spec: dict, path: str) -> dict:
    if kind == "promise":
        from promise import run_promise

        result = run_promise(spec)
    else:
        result = run(spec)
    Path(path).write_text(json.dumps(result))
    return result


def cache_path(cache: Path, kind: str, spec: dict) -> Path:
    return cache / "runs" / f"{kind}-{run_key(spec)}.json"


def execute_all(jobs: list[tuple[str, dict]], cache: Path, workers: int) -> list[dict]:
    """Run every job not in the cache, ``workers`` at a time; returns the results in job order."""
    (cache / "runs").mkdir(parents=True, exist_ok=True)
    paths = [cache_path(cache, kind, spec) for kind, spec in jobs]
    todo = [i for i, path in enumerate(paths) if not path.is_file() and path not in paths[:i]]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} cached, {len(todo)} to do with {workers} workers", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        futures = {pool.submit(_execute, *jobs[i], str(paths[i])): i for i in todo}
        for done, future in enumerate(as_completed(futures), 1):
            kind, spec = jobs[futures[future]]
            future.result()
            label = spec.get("name", f"tile {spec.get('tile')} part {spec.get('part')}")
            print(f"[{done}/{len(todo)} {time.perf_counter() - started:.0f}s] {kind} {label}", flush=True)
    return [json.loads(path.read_text()) for path in paths]


def computed_span(cache: Path, jobs: list[tuple[str, dict]]) -> int:
    """Seconds from the first to the last finished run (the runs may come from several invocations)."""
    times = [cache_path(cache, kind, spec).stat().st_mtime for kind, spec in jobs]
    return round(max(times) - min(times))


def mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds (and rotations) of mIoU and per-class IoU, per table row."""
    table: dict[str, dict] = {}
    for result in runs:
        spec = result["spec"]
        setting = setting_of(spec)
        for domain, confusions in result["confusion"].items():
            row = table.setdefault(f"{setting}/{domain}", {}).setdefault(spec["name"], {"runs": []})
            row["runs"].append({"rotation": spec["rotation"], "seed": spec["seed"], **summarize(confusions)})
            row.setdefault("seconds", []).append(result["adapt_seconds"])
            row.setdefault("trainable", []).append(result["trainable_parameters"])
            if result.get("pseudo_label_fraction") is not None:
                row.setdefault("pseudo_fraction", []).append(result["pseudo_label_fraction"])
    for rows in table.values():
        for row in rows.values():
            row["miou"] = mean_std([r["miou"] for r in row["runs"]])
            row["iou"] = {c: mean_std([r["iou"][c] for r in row["runs"]]) for c in CLASS_NAMES}
            row["seconds"] = mean_std(row["seconds"])
            row["trainable_parameters"] = round(float(np.mean(row.pop("trainable"))))  # random gating varies
            if "pseudo_fraction" in row:
                row["pseudo_fraction"] = mean_std(row["pseudo_fraction"])
    return table


def headline(table: dict, setting: str) -> dict:
    """Fisher gating against the best baseline and against each reference, over the setting's target domains."""
    domains = [key for key in table if key.startswith(f"{setting}/")]
    if not domains:
        return {"domains": []}

    def overall(method: str) -> float:
        return float(np.mean([table[d][method]["miou"]["mean"] for d in domains]))

    best = max(BASELINES, key=overall)
    ours = overall("fisher_gate")
    best_single = max(PEFT_SINGLE, key=overall)
    return {
        "domains": domains,
        "fisher_gate_miou": ours,
        "best_baseline": best,
        "best_baseline_miou": overall(best),
        "gain_over_best_baseline": ours - overall(best),
        "best_single_peft": best_single,
        "gain_over_best_single_peft": ours - overall(best_single),
        "gain_over_random_gate": ours - overall("random_gate"),
        "gain_over_source_only": ours - overall("source_only"),
        "per_method": {m: overall(m) for m in METHODS},
    }


def choice_changes(runs: list[dict]) -> dict:
    """Per setting and gate, how often a re-selection (after the first choice) changed the active modules."""
    counts: dict[str, dict[str, list[int]]] = {}
    for result in runs:
        spec = result["spec"]
        if spec["name"] not in ("fisher_gate", "random_gate"):
            continue
        active = [set(event["active"]) for event in result["selection"]]
        changed = sum(after != before for before, after in itertools.pairwise(active))
        tally = counts.setdefault(setting_of(spec), {}).setdefault(spec["name"], [0, 0])
        tally[0] += changed
        tally[1] += len(active) - 1
    return {
        setting: {gate: {"changed": c, "reselections": n} for gate, (c, n) in gates.items()}
        for setting, gates in counts.items()
    }


def promise_summary(names: list[str], results: list[dict]) -> dict:
    variants: dict[str, dict] = {}
    for name, result in zip(names, results, strict=True):
        row = variants.setdefault(name, {"options": PROMISE_VARIANTS[name], "scenes": []})
        row["scenes"].append(
            {
                "tile": result["spec"]["tile"],
                "part": result["spec"]["part"],
                "segment_miou": result["segment"]["miou"],
                "adapt_segment_miou": result["adapt_segment"]["miou"],
                "gain_miou": result["gain_miou"],
                "segment_iou": result["segment"]["iou"],
                "adapt_segment_iou": result["adapt_segment"]["iou"],
                "adapt_segment_seconds": result["adapt_segment_seconds"],
            }
        )
    for row in variants.values():
        row["gain_miou"] = mean_std([s["gain_miou"] for s in row["scenes"]])
        row["segment_miou"] = mean_std([s["segment_miou"] for s in row["scenes"]])
        row["adapt_segment_miou"] = mean_std([s["adapt_segment_miou"] for s in row["scenes"]])
    return variants


def scene_methods_summary(methods: list[str], results: list[dict]) -> dict:
    """Per method on the product's path: mIoU and gain over plain segment, per scene and seed, and their mean."""
    if not results:
        return {}
    rows: dict[str, dict] = {"source_only": {"runs": []}}
    for method, result in zip(methods, results, strict=True):
        spec = result["spec"]
        where = {"tile": spec["tile"], "part": spec["part"], "seed": spec["options"]["seed"]}
        rows.setdefault(method, {"runs": []})["runs"].append(
            {
                **where,
                "miou": result["adapt_segment"]["miou"],
                "iou": result["adapt_segment"]["iou"],
                "gain_miou": result["gain_miou"],
                "seconds": result["adapt_segment_seconds"],
            }
        )
        if where["seed"] == 0 and method == "fisher_gate":  # plain segment is deterministic: once per scene
            rows["source_only"]["runs"].append(
                {
                    **where,
                    "miou": result["segment"]["miou"],
                    "iou": result["segment"]["iou"],
                    "gain_miou": 0.0,
                    "seconds": 0.0,
                }
            )
    for row in rows.values():
        for key in ("miou", "gain_miou", "seconds"):
            row[key] = mean_std([r[key] for r in row["runs"]])
        # a class absent from a scene and never predicted there has no IoU (None): left out of its mean
        present = {c: [r["iou"][c] for r in row["runs"] if r["iou"][c] is not None] for c in CLASS_NAMES}
        row["iou"] = {c: mean_std(values) for c, values in present.items() if values}
    return rows


def paired_gain(rows: dict, ours: str, theirs: str) -> dict:
    """``ours`` minus ``theirs`` over the (scene, seed) pairs both ran (``scene_methods_summary``'s rows): mean,
    standard error, wins. Plain segment is deterministic, so its one run per scene pairs with every seed."""
    miou = {(method, r["tile"], r["part"], r["seed"]): r["miou"] for method, row in rows.items() for r in row["runs"]}

    def other(tile: int, part: int, seed: int) -> float | None:
        return miou.get((theirs, tile, part, 0 if theirs == "source_only" else seed))

    pairs = [(value, other(*key[1:])) for key, value in miou.items() if key[0] == ours]
    gains = np.array([value - their for value, their in pairs if their is not None])
    sem = float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
    return {"mean": float(gains.mean()), "sem": sem, "n": len(gains), "wins": int((gains > 0).sum())}


def gate_pairs(rows: dict) -> dict:
    """Each gate against random gating with the same budget and rates, paired (the same crops): the choice alone."""
    pairs = [(ours, theirs) for ours, theirs in GATE_PAIRS if ours in rows and theirs in rows]
    return {f"{ours} vs {theirs}": paired_gain(rows, ours, theirs) for ours, theirs in pairs}


def scene_headline(rows: dict) -> dict:
    """Fisher gating against the other methods on the product's path, paired by scene and seed."""
    singles = [method for method in PEFT_SINGLE if method in rows]  # a subset may have run (held-out images)
    if "fisher_gate" not in rows or not singles:
        return {}

    def overall(method: str) -> float:
        return rows[method]["miou"]["mean"]

    baselines = [method for method in BASELINES if method in rows]
    best_single = max(singles, key=overall)
    best = max(baselines, key=overall)
    gains = {method: paired_gain(rows, "fisher_gate", method) for method in baselines}
    return {
        "fisher_gate_miou": overall("fisher_gate"),
        "best_baseline": best,
        "gain_over_best_baseline": gains[best]["mean"],
        "best_single_peft": best_single,
        "gain_over_best_single_peft": gains[best_single]["mean"],
        "gain_over_random_gate": gains["random_gate"]["mean"],
        "gain_over_source_only": gains["source_only"]["mean"],
        "paired_gain": gains,
        "per_method": {m: overall(m) for m in METHODS if m in rows},
    }


def main(
    out: Annotated[Path, typer.Option(help="results JSON")] = REPO / "results" / "quality.json",
    cache: Annotated[Path, typer.Option(help="cached runs and pretrained backbones (not committed)")] = DEFAULT_CACHE,
    rotations: Annotated[list[str], typer.Option(help="splits to run (see protocol.ROTATIONS)")] = ["r1", "r2"],  # noqa: B006
    seeds: int = 3,
    ablation_seeds: int = 2,
    steps: int = 30,
    batch_size: int = 4,
    crop: int = 160,
    reselect_every: Annotated[int, typer.Option(help="Fisher re-selection interval in the benchmark")] = 15,
    pretrain_steps: int = 200,
    promise_model: Annotated[
        Path, typer.Option(help="default model retrained without the promise scenes' tiles (5 and 6)")
    ] = DEFAULT_CACHE / "heldout-default-model",
    workers: Annotated[int, typer.Option(help="parallel processes, one torch thread each")] = 2,
    promise: Annotated[bool, typer.Option(help="measure the product promise (adapt-segment vs segment)")] = True,
    docs: Annotated[bool, typer.Option(help="also write docs/quality.md and its figures")] = True,
    cached_only: Annotated[
        bool, typer.Option(help="report only the runs already finished (while another process computes the rest)")
    ] = False,
) -> None:
    started = time.perf_counter()
    pretrained = {r: pretrain(r, pretrain_steps, cache) for r in rotations}
    if promise and not (promise_model / SOURCE_SAMPLES_FILE).is_file():
        from make_source_samples import main as make_source_samples  # scripts/ is on the path (protocol)

        make_source_samples(model_dir=promise_model)  # labelled crops of its training tiles, for the DACS variant
    base = {"steps": steps, "batch_size": batch_size, "crop_size": crop, "reselect_every": reselect_every}
    jobs = uda_jobs(base, pretrained, rotations, seeds, diagnosis=False)
    jobs += uda_jobs(base, pretrained, rotations, seeds, diagnosis=True)
    for rotation in rotations:
        for seed in range(seeds):
            common = {**base, "rotation": rotation, "pretrained": pretrained[rotation], "seed": seed}
            for setting in ("da", "dg", "da_self"):
                for method in METHODS:
                    if method == "source_only" and seed > 0:
                        continue  # deterministic: one evaluation is every seed's
                    spec = {**common, "setting": setting, "method": method, "name": method, "target_domain": "clean"}
                    if setting == "da_self":  # DA on the target images alone, no source crops (as the product)
                        spec.update(setting="da", da_source="none")
                    jobs.append(("adapt", spec))
            for name, overrides in ABLATION.items():
                if seed >= ablation_seeds:
                    break
                jobs.append(
                    (
                        "adapt",
                        {
                            **common,
                            "setting": "dg",
                            "method": "fisher_gate",
                            "name": name,
                            "target_domain": "clean",
                            "overrides": overrides,
                        },
                    )
                )
            for setting in ("dg", "da", "da_self"):
                for variant, (overrides, methods) in DIAGNOSIS.items():
                    for method in methods:
                        spec = {**common, "setting": setting, "method": method, "target_domain": "clean"}
                        if setting == "da_self":
                            spec.update(setting="da", da_source="none")
                        jobs.append(("adapt", {**spec, "name": f"{method}, {variant}", "overrides": overrides}))
    variants = [
        (variant, scene)
        for variant in PROMISE_VARIANTS
        for scene in (PROMISE_SCENES if variant in PROMISE_ALL_SCENES else PROMISE_SCENES[:PROMISE_VARIANT_SCENES])
    ]
    variants = variants if promise else []
    promise_jobs = [("promise", promise_spec(promise_model, *scene, PROMISE_VARIANTS[v])) for v, scene in variants]
    scene_methods = scene_method_jobs(promise_model) if promise else []
    held_out = held_out_image_jobs(promise_model) if promise else []
    shifted = held_out_image_jobs(promise_model, SHIFTED_METHODS, SHIFTED_IMAGES, "shift") if promise else []
    longer = held_out_image_jobs(promise_model, LONGER_METHODS, PROMISE_SCENES) if promise else []
    if cached_only:
        variants = [v for v, job in zip(variants, promise_jobs, strict=True) if cache_path(cache, *job).is_file()]
        promise_jobs = [job for job in promise_jobs if cache_path(cache, *job).is_file()]
        scene_methods = [job for job in scene_methods if cache_path(cache, *job[1:]).is_file()]
        held_out = [job for job in held_out if cache_path(cache, *job[1:]).is_file()]
        shifted = [job for job in shifted if cache_path(cache, *job[1:]).is_file()]
        longer = [job for job in longer if cache_path(cache, *job[1:]).is_file()]
        jobs = [job for job in jobs if cache_path(cache, *job).is_file()]
    promise_jobs += [(kind, spec) for _, kind, spec in scene_methods + held_out + shifted + longer]
    results = execute_all(promise_jobs + jobs, cache, workers)
    promise_results, runs = results[: len(promise_jobs)], results[len(promise_jobs) :]
    variant_results = promise_results[: len(variants)]
    held_out_start = len(variants) + len(scene_methods)
    shifted_start = held_out_start + len(held_out)
    longer_start = shifted_start + len(shifted)
    scene_results = promise_results[len(variants) : held_out_start]
    scene_rows = scene_methods_summary([name for name, _, _ in scene_methods], scene_results)
    main_runs = [r for r in runs if r["spec"]["name"] in METHODS]
    early = [r for r in runs if r["spec"]["seed"] < ablation_seeds]  # the seeds the ablation ran on
    ablation_runs = [r for r in early if r["spec"]["name"] in ABLATION or r["spec"]["name"] == "fisher_gate"]
    references = ["source_only", "head_only"]  # shown beside the diagnosis rows
    diagnosis_runs = [r for r in runs if r["spec"]["name"].split(", ")[0] in DIAGNOSIS_METHODS + references]
    table = aggregate(main_runs)
    report = {
        "protocol": {
            "rotations": {r: ROTATIONS[r] for r in rotations},
            "pretrained": {r: {"folder": pretrained[r], "steps": pretrain_steps} for r in rotations},
            "seeds": seeds,
            "budget": {**base, "eval_crop": EVAL_CROP},
            "uda": UDA,
            "sensor_shift": SENSOR_SHIFT,
            "methods": METHODS,
            "ablation": ABLATION,
            "diagnosis": {"methods": DIAGNOSIS_METHODS, "variants": DIAGNOSIS, "uda_variants": UDA_DIAGNOSIS},
            "promise_scenes": PROMISE_SCENES,
            "held_out_images": HELD_OUT_IMAGES,
            "held_out_shifted_images": SHIFTED_IMAGES,
            "longer_schedule_scenes": PROMISE_SCENES,
            "promise_defaults": promise_spec(promise_model, 0, 0, {})["options"],
            "promise_model": str(promise_model),
            "promise_model_card": json.loads((promise_model / "model_card.json").read_text()).get("provenance"),
        },
        "headline": {
            **{setting: headline(table, setting) for setting in ("dg", "uda", "da", "da_self")},
            "scene": scene_headline(scene_rows),
        },
        "promise": promise_summary([v for v, _ in variants], variant_results),
        "scene_methods": scene_rows,
        "gate_pairs": gate_pairs(scene_rows),
        "held_out_images": held_out_summary(
            [name for name, _, _ in held_out], promise_results[held_out_start:shifted_start]
        ),
        "held_out_shifted_images": held_out_summary(
            [name for name, _, _ in shifted], promise_results[shifted_start:longer_start]
        ),
        "longer_schedule": held_out_summary([name for name, _, _ in longer], promise_results[longer_start:]),
        "table": table,
        "choice_changes": choice_changes(main_runs),
        "ablation": aggregate([r for r in ablation_runs if r["spec"]["setting"] == "dg"]),
        "diagnosis": aggregate(diagnosis_runs),
        "runs": [{k: v for k, v in r.items() if k != "panels"} for r in runs],
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "workers": workers,
            "threads_per_worker": 1,
            "python": platform.python_version(),
        },
        "wall_seconds": round(time.perf_counter() - started),
        "adapt_seconds_total": round(
            sum(r["adapt_seconds"] for r in runs) + sum(r["adapt_segment_seconds"] for r in promise_results)
        ),
        "cached_only": cached_only,
        "computed_span_seconds": computed_span(cache, promise_jobs + jobs),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} in {report['wall_seconds']} s", flush=True)
    if docs:
        from report import write_report

        write_report(report, runs, REPO / "docs")


if __name__ == "__main__":
    typer.run(main)
