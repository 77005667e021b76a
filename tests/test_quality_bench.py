"""The quality benchmark's summaries (bench/quality/run.py) and its measure of what the modules change."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "quality"))

from module_effect import changed, whole_tiles
from run import (
    EVERY_MODULE,
    HEAD_ALONE,
    HELD_OUT_CONTROLS,
    LONGER_METHODS,
    LORA_SAME_CROPS,
    SCENE_METHODS,
    SCENE_VARIANTS,
    SHIFTED_IMAGES,
    SHIFTED_METHODS,
    choice_changes,
    gate_pairs,
    held_out_image_jobs,
    scene_headline,
    scene_methods_summary,
)

from backend.contract import AdaptOptions

CLASSES = ["Building", "Land", "Road", "Vegetation", "Water"]
SEGMENT = {(5, 1): 0.40, (6, 1): 0.60}  # plain segment's mIoU per scene (tile, part)


def _result(method: str, scene: tuple[int, int], seed: int, miou: float) -> dict:
    iou = dict.fromkeys(CLASSES, miou) | {"Vegetation": None}  # a class absent from the scene has no IoU
    return {
        "spec": {"tile": scene[0], "part": scene[1], "options": {**SCENE_METHODS[method], "seed": seed}},
        "segment": {"miou": SEGMENT[scene], "iou": dict.fromkeys(CLASSES, SEGMENT[scene])},
        "adapt_segment": {"miou": miou, "iou": iou},
        "gain_miou": miou - SEGMENT[scene],
        "adapt_segment_seconds": 100.0,
    }


@pytest.fixture
def results() -> tuple[list[str], list[dict]]:
    """Every method gains 0.05 on every scene and seed; LoRA only 0.06; Fisher gating 0.07 (seed 0), 0.09 (seed 1)."""

    def gain(method: str, seed: int) -> float:
        return {"fisher_gate": 0.07 + 0.02 * seed, "lora_only": 0.06}.get(method, 0.05)

    jobs = [(m, scene, seed) for seed in (0, 1) for m in SCENE_METHODS for scene in SEGMENT]
    return [m for m, _, _ in jobs], [_result(m, sc, s, SEGMENT[sc] + gain(m, s)) for m, sc, s in jobs]


def test_scene_headline_pairs_fisher_gating_with_each_method_by_scene_and_seed(results):
    headline = scene_headline(scene_methods_summary(*results))
    assert headline["best_baseline"] == "lora_only" == headline["best_single_peft"]
    assert headline["gain_over_best_single_peft"] == pytest.approx(0.02)
    assert headline["gain_over_random_gate"] == pytest.approx(0.03)
    assert headline["gain_over_source_only"] == pytest.approx(0.08)
    assert headline["per_method"]["source_only"] == pytest.approx(0.50)
    assert headline["paired_gain"]["random_gate"] == {
        "mean": pytest.approx(0.03),
        "sem": pytest.approx(0.02 / 12**0.5),  # differences 0.02, 0.02, 0.04, 0.04
        "n": 4,
        "wins": 4,
    }


def test_gate_pairs_compare_each_gate_run_with_random_gating_only_where_both_ran(results):
    methods, runs = results
    variant = [("lookahead_gate", scene, 0, 0.40 + 0.01 * i) for i, scene in enumerate(SEGMENT)]  # seed 0 only
    for method, scene, seed, miou in variant:
        run = _result("random_gate", scene, seed, miou)
        methods, runs = [*methods, method], [*runs, run]
    pairs = gate_pairs(scene_methods_summary(methods, runs))
    assert pairs["fisher_gate vs random_gate"]["mean"] == pytest.approx(0.03)
    lookahead = pairs["lookahead_gate vs random_gate"]  # random gating: 0.45 and 0.65 with seed 0
    assert lookahead["n"] == 2 and lookahead["wins"] == 0
    assert lookahead["mean"] == pytest.approx(((0.40 - 0.45) + (0.41 - 0.65)) / 2)
    assert "fisher_gate, k=2 vs random_gate, k=2" not in pairs  # not run


def test_held_out_image_jobs_run_each_method_on_all_18_images_of_tiles_5_and_6_with_seed_0(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    jobs = held_out_image_jobs(tmp_path)
    assert len(jobs) == 12 * 18
    first = jobs[:18]  # method by method: a partial run has every image of the first methods
    assert {name for name, _, _ in first} == {"fisher_gate"}
    images = sorted((spec["tile"], spec["part"]) for _, _, spec in first)
    assert images == [(tile, part) for tile in (5, 6) for part in range(1, 10)]
    assert {spec["options"]["seed"] for _, _, spec in jobs} == {0}
    k025 = next(spec for name, _, spec in jobs if name == "random_gate, k=0.25")
    assert k025["options"]["extra"] == SCENE_VARIANTS["random_gate, k=0.25"]["extra"]
    assert jobs[0][2]["options"]["extra"] == SCENE_METHODS["fisher_gate"]["extra"] == {}  # the product's defaults
    head_alone = next(spec for name, _, spec in jobs if name == HEAD_ALONE)
    assert head_alone["options"]["extra"] == {"gate": {"exclude": EVERY_MODULE}}
    assert len(set(EVERY_MODULE)) == 12
    lora = next(spec for name, _, spec in jobs if name == LORA_SAME_CROPS)
    assert sorted(set(EVERY_MODULE) - set(lora["options"]["extra"]["gate"]["exclude"])) == [
        f"blocks.{block}.lora" for block in range(4)
    ]


def test_shifted_image_jobs_mark_only_their_specs_with_the_sensor_shift(tmp_path):
    """Runs on the images as they are keep the specs (and cache keys) they had before shifted runs existed."""
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    shifted = held_out_image_jobs(tmp_path, SHIFTED_METHODS, SHIFTED_IMAGES, "shift")
    assert len(shifted) == 8 * 8
    assert {spec["domain"] for _, _, spec in shifted} == {"shift"}
    assert sorted({(spec["tile"], spec["part"]) for _, _, spec in shifted}) == [
        (tile, part) for tile in (5, 6) for part in (1, 3, 5, 7)
    ]
    clean = {name: spec for name, _, spec in held_out_image_jobs(tmp_path) if (spec["tile"], spec["part"]) == (5, 1)}
    for name, _, spec in shifted:
        if (spec["tile"], spec["part"]) == (5, 1):
            assert "domain" not in clean[name]
            assert {k: v for k, v in spec.items() if k != "domain"} == clean[name]


def test_run_promise_scores_the_sensor_shifted_scene_against_the_same_labels(monkeypatch):
    """The shift changes the image the product sees, never the labels it is scored against."""
    import promise

    image = torch.full((3, 64, 64), 0.5)
    mask = torch.zeros(64, 64, dtype=torch.long)
    monkeypatch.setattr(promise, "read_part", lambda tile, part: (image, mask))
    written = {}

    def fake_write_scene(data, path):
        written["scene"] = data

    def fake_write_labels(data, path):
        written["labels"] = data

    monkeypatch.setattr(promise, "write_scene", fake_write_scene)
    monkeypatch.setattr(promise, "write_labels", fake_write_labels)
    monkeypatch.setattr(promise, "Scene", lambda **kwargs: None)
    monkeypatch.setattr(promise, "segment", lambda scene, options: None)
    monkeypatch.setattr(promise, "adapt_and_segment", lambda scene, adapt, options: None)
    monkeypatch.setattr(promise, "evaluate", lambda *args, **kwargs: {"miou": 0.5, "overall_accuracy": 0.9, "iou": {}})
    spec = {"model": "m", "tile": 5, "part": 1, "options": {}}
    promise.run_promise(spec)
    assert (written["scene"] == 128).all()
    promise.run_promise({**spec, "domain": "shift"})
    expected = (promise.sensor_shift(image, seed=501) * 255.0).round().byte().numpy()
    assert (written["scene"] == expected).all()
    assert written["scene"].mean() < 100  # gamma 1.35 and the blue gain darken a mid-grey
    assert (written["labels"] == 0).all()


def test_every_held_out_control_trains_the_head_at_the_rate_of_the_method_it_is_paired_with(tmp_path):
    """The head alone controls the faster-module runs too: only the modules' rate differs between them."""
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    jobs = held_out_image_jobs(tmp_path) + held_out_image_jobs(tmp_path, LONGER_METHODS, [(5, 1)])
    options = {name: spec["options"] for name, _, spec in jobs}

    def config(name: str):
        return AdaptOptions(**options[name]).config()

    faster = {method for method, control in HELD_OUT_CONTROLS if config(method).lr > config(control).lr}
    assert faster == {
        f"{gate}{rate}"
        for gate in ("fisher_gate", "random_gate")
        for rate in (", k=2, modules lr x10", ", modules lr x3")
    }
    for method, control in HELD_OUT_CONTROLS:
        ours, theirs = config(method), config(control)
        assert ours.lr * ours.head_lr_scale == pytest.approx(theirs.lr * theirs.head_lr_scale, rel=1e-12)
        assert (ours.steps, ours.seed, ours.mode) == (theirs.steps, theirs.seed, theirs.mode)
    longer = {method for method, control in HELD_OUT_CONTROLS if config(method).steps != AdaptOptions().steps}
    assert longer == {"fisher_gate, 360 steps", "random_gate, 360 steps"}
    assert config("fisher_gate, 360 steps").steps == 3 * config("fisher_gate").steps


def test_scene_headline_compares_fisher_gating_with_the_methods_that_ran_only(results):
    methods, runs = results
    subset = {"fisher_gate", "random_gate", "adapter_only"}  # a subset, as on the held-out images
    ran = [(m, r) for m, r in zip(methods, runs, strict=True) if m in subset]
    headline = scene_headline(scene_methods_summary([m for m, _ in ran], [r for _, r in ran]))
    assert set(headline["paired_gain"]) == {"random_gate", "adapter_only", "source_only"}
    assert headline["best_single_peft"] == "adapter_only"  # the one single-type PEFT that ran
    assert headline["gain_over_source_only"] == pytest.approx(0.08)  # plain segment pairs with both seeds
    assert headline["paired_gain"]["source_only"]["n"] == 4


def test_scene_summary_counts_plain_segment_once_per_scene_and_skips_absent_classes(results):
    rows = scene_methods_summary(*results)
    assert rows["source_only"]["miou"]["n"] == 2  # deterministic: not repeated per seed
    assert rows["fisher_gate"]["miou"]["n"] == 4
    assert rows["fisher_gate"]["gain_miou"]["mean"] == pytest.approx(0.08)
    assert rows["adapter_only"]["iou"]["Road"]["mean"] == pytest.approx(0.55)
    assert "Vegetation" not in rows["adapter_only"]["iou"]


def test_choice_changes_counts_the_reselections_that_changed_the_active_modules_per_setting_and_gate():
    def gate_run(name: str, setting: str, choices: list[list[str]]) -> dict:
        spec = {"name": name, "setting": setting, "da_source": "none" if setting == "da" else None}
        return {"spec": spec, "selection": [{"step": 15 * i, "active": a} for i, a in enumerate(choices)]}

    runs = [
        gate_run("fisher_gate", "dg", [["b0.lora", "b1.lora"], ["b1.lora", "b0.lora"], ["b0.lora", "b1.lora"]]),
        gate_run("random_gate", "dg", [["b0.lora"], ["b1.lora"], ["b1.lora"]]),
        gate_run("fisher_gate", "da", [["b0.lora"], ["b2.lora"]]),
        gate_run("lora_only", "dg", []),
    ]
    assert choice_changes(runs) == {
        "dg": {"fisher_gate": {"changed": 0, "reselections": 2}, "random_gate": {"changed": 1, "reselections": 2}},
        "da_self": {"fisher_gate": {"changed": 1, "reselections": 1}},
    }


def test_module_effect_measures_whole_tiles_and_the_share_of_pixels_whose_class_changes():
    image = torch.arange(3 * 1100 * 600, dtype=torch.float32).reshape(3, 1100, 600)
    tiles = whole_tiles(image)  # 2 rows x 1 column of 512 px; the partial tiles at the edges are left out
    assert tiles.shape == (2, 3, 512, 512) and torch.equal(tiles[1], image[:, 512:1024, :512])
    a = torch.zeros(1, 2, 2, 2)
    a[:, 0] = 1.0  # class 0 everywhere
    b = a.clone()
    b[0, 1, 0, 0] = 2.0  # class 1 at one of four pixels
    assert changed(a, b) == {"pixels": 0.25, "logit": pytest.approx(2.0 / 8)}
