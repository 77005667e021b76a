"""Adapter checkpoints: only trained weights, exact reload, the wrong backbone refused, LoRA merge."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from backend.adaptation.adapt import AdaptConfig, adapt
from backend.adaptation.fisher_gate import SELECTIONS
from backend.adaptation.selection_report import SCORE_LABELS, plot_selection, write_selection_json
from backend.errors import BadInput
from backend.model.checkpoint import load_adapter, read_adapter_metadata, save_adapter
from backend.model.network import create_model
from tests.conftest import tiny_config
from tests.test_adapt import striped_samples


@pytest.fixture
def adapted(tiny_model):
    config = AdaptConfig(mode="dg", steps=6, batch_size=2, crop_size=32, lr=3e-3, gate=dict(top_k=2, reselect_every=3))
    return adapt(tiny_model, striped_samples(), config)


def test_checkpoint_holds_only_the_active_modules_and_the_head(tmp_path, adapted):
    path = save_adapter(adapted.model, tmp_path / "a.safetensors", {"selection": adapted.selection})
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    modules = {".".join(k.split(".")[1:4]) for k in keys if k.startswith("backbone.")}
    assert modules == set(adapted.active_modules)
    assert {k.split(".")[0] for k in keys} == {"backbone", "head"}
    meta = read_adapter_metadata(path)
    assert meta["active_modules"] == adapted.active_modules and meta["backbone"] == "vit_tiny_patch16_224"
    assert len(meta["selection"]) == 2


def test_loading_onto_the_frozen_backbone_reproduces_the_adapted_logits_exactly(tmp_path, adapted):
    path = save_adapter(adapted.model, tmp_path / "a.safetensors", {})
    image = torch.rand(2, 3, 40, 40)
    expected = adapted.model.eval()(image)
    torch.manual_seed(0)
    fresh = create_model(tiny_config()).eval()  # same seed as the fixture: the same frozen backbone
    load_adapter(fresh, path)
    assert torch.equal(fresh(image), expected)
    fresh.toolbox.merge_lora()
    torch.testing.assert_close(fresh(image), expected, rtol=1e-4, atol=1e-5)


def test_an_adapter_for_another_backbone_is_refused(tmp_path, adapted):
    path = save_adapter(adapted.model, tmp_path / "a.safetensors", {})
    torch.manual_seed(99)
    with pytest.raises(BadInput, match="another backbone"):
        load_adapter(create_model(tiny_config()), path)


def test_existing_checkpoint_is_not_overwritten_without_permission(tmp_path, adapted):
    path = tmp_path / "a.safetensors"
    path.write_text("keep me")
    with pytest.raises(BadInput, match="exists"):
        save_adapter(adapted.model, path, {})
    assert path.read_text() == "keep me"


def test_a_file_that_is_not_an_adapter_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 40)
    with pytest.raises(BadInput, match=r"junk\.safetensors"):
        read_adapter_metadata(path)


def test_selection_report_as_json_and_heatmap(tmp_path, adapted):
    json_path = write_selection_json(adapted.selection, tmp_path / "sel.json")
    assert json.loads(json_path.read_text())["selections"][0]["active"] == adapted.selection[0]["active"]
    png = plot_selection(adapted.selection, depth=2, path=tmp_path / "sel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel.json", "sel.png"]


def test_every_gate_selection_has_its_own_heatmap_legend(tmp_path, adapted):
    """Random gating's colours are random draws, not Fisher scores: the legend must say which."""
    assert set(SCORE_LABELS) == set(SELECTIONS)
    for selection in SELECTIONS:
        plot_selection(adapted.selection, 2, tmp_path / f"{selection}.png", selection=selection)
    assert len({(tmp_path / f"{s}.png").read_bytes() for s in SELECTIONS}) == len(SELECTIONS)
