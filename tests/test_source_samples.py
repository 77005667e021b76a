"""Labelled source crops shipped with a model: storage, the default model's, and DA's use of them."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.adaptation.source_samples import load_source_samples, save_source_samples, source_provenance
from backend.analysis.metrics import IGNORE_INDEX
from backend.errors import BadInput
from backend.model.checkpoint import read_adapter_metadata
from backend.model.registry import SOURCE_SAMPLES_FILE, ModelCard
from tests import conftest_rasters as rasters
from tests.test_cli import run
from training.source_crops import label_entropy


def random_samples(count: int, size: int, classes: int = 5) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(count):
        mask = torch.randint(classes, (size, size), generator=generator)
        mask[:2] = IGNORE_INDEX
        samples.append({"image": torch.rand(3, size, size, generator=generator), "mask": mask})
    return samples


def test_source_samples_round_trip_as_bytes_keeping_the_ignore_label(tmp_path):
    samples = random_samples(3, 32)
    path = tmp_path / SOURCE_SAMPLES_FILE
    save_source_samples(samples, path, {"tiles": [1, 2]})
    loaded = load_source_samples(path)
    assert len(loaded) == 3
    for original, back in zip(samples, loaded, strict=True):
        assert torch.equal(back["image"], (original["image"] * 255).round() / 255)
        assert back["mask"].dtype == torch.int64 and torch.equal(back["mask"], original["mask"])
    assert source_provenance(path) == {"tiles": [1, 2]}
    assert stat.S_IMODE(path.stat().st_mode) & stat.S_IROTH  # shipped files are readable by every user
    assert [p.name for p in tmp_path.iterdir()] == [SOURCE_SAMPLES_FILE]  # no partial file left


def test_a_corrupt_source_samples_file_is_one_line_bad_input(tmp_path):
    path = tmp_path / SOURCE_SAMPLES_FILE
    path.write_bytes(b"not safetensors")
    with pytest.raises(BadInput, match=f"{path}: not a source-samples file"):
        load_source_samples(path)


def test_label_entropy_is_zero_for_one_class_and_log_n_for_an_even_mix():
    assert label_entropy(torch.zeros(8, 8, dtype=torch.long), 5) == 0.0
    even = torch.arange(4).repeat_interleave(16).view(8, 8)
    assert label_entropy(even, 5) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert label_entropy(torch.full((8, 8), IGNORE_INDEX), 5) == 0.0


def test_make_source_samples_keeps_the_most_class_mixed_crop_of_each_training_tile_image(
    tmp_path, tiny_model_folder, monkeypatch
):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_source_samples import main as make_source_samples

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_folder, folder)
    card = ModelCard.read(folder)
    card.provenance = {"train_tiles": [6]}
    card.write(folder)
    make_source_samples(model_dir=folder, crops=3, size=64)
    assert source_provenance(folder / SOURCE_SAMPLES_FILE) == {
        "model": "tiny-test-model",
        "tiles": [6],
        "crops_per_tile": 3,
        "size": 64,
    }
    crops = load_source_samples(folder / SOURCE_SAMPLES_FILE)
    assert [c["image"].shape for c in crops] == [(3, 64, 64)] * 3
    entropies = [label_entropy(c["mask"], 5) for c in crops]
    assert entropies == sorted(entropies, reverse=True) and entropies[-1] > 0.5  # mixed crops, best first


@pytest.fixture
def model_with_source_crops(tmp_path, tiny_model_folder):
    folder = tmp_path / "models" / "tiny-with-source"
    shutil.copytree(tiny_model_folder, folder)
    save_source_samples(random_samples(2, 64), folder / SOURCE_SAMPLES_FILE, {"tiles": [0]})
    assert ModelCard.read(folder).source_samples == folder / SOURCE_SAMPLES_FILE
    return folder


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], 0), (["--source-samples"], 2), (["--mode", "dg", "--labels", "LABELS", "--source-samples"], 0)],
    ids=["da-default", "da-asked", "dg"],
)
def test_da_mixes_in_the_models_source_crops_when_asked(tmp_path, model_with_source_crops, flags, expected):
    scene = rasters.rgb_uint8(tmp_path, height=90, width=120, name="scene.tif")
    labels = rasters.write_raster(tmp_path / "labels.tif", np.tile(np.arange(120) % 5, (1, 90, 1)).astype(np.uint8))
    adapter = tmp_path / "a.safetensors"
    flags = [str(labels) if flag == "LABELS" else flag for flag in flags]
    argv = ["adapt", scene, "--adapter-out", adapter, "--steps", "2", "--samples", "2", *flags]
    code, events = run([*argv, "--model", model_with_source_crops])
    assert code == 0, events
    assert read_adapter_metadata(adapter)["source_samples"] == expected


def test_asking_for_source_crops_a_model_does_not_ship_is_one_line_bad_input(tmp_path, tiny_model_folder):
    scene = rasters.rgb_uint8(tmp_path, height=90, width=120, name="scene.tif")
    adapter = tmp_path / "a.safetensors"
    argv = ["adapt", scene, "--adapter-out", adapter, "--steps", "2", "--source-samples", "--model", tiny_model_folder]
    code, events = run(argv)
    assert code == 2
    [error] = [e for e in events if e["type"] == "error"]
    assert error["message"].startswith(f"{tiny_model_folder}: model tiny-test-model ships no source samples")
    assert not adapter.exists()
