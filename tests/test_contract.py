"""backend.contract: the jobs the CLI, backend.jobs and the plugin share, their checks, defaults and argv."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from backend.contract import (
    ADAPT_DEFAULTS,
    AccuracyJob,
    AdaptJob,
    AdaptOptions,
    AdaptSegmentJob,
    AreasJob,
    ChangeJob,
    EvaluateJob,
    SamplePointsJob,
    Scene,
    SegmentJob,
    SegmentOptions,
    SuggestLabelsJob,
    VectorizeJob,
    decode,
    encode,
)
from backend.errors import BadInput

REPO = Path(__file__).resolve().parents[1]

JOBS = {
    "segment, defaults": SegmentJob(Scene("/d/scene.tif"), SegmentOptions("/d/out.tif")),
    "segment, everything": SegmentJob(
        Scene(
            "/d/s.tif",
            bands=[3, 2, 1],
            bbox=(1.0, 2.0, 3.5, 4.0),
            bbox_crs="EPSG:4326",
            roi="/d/roi.gpkg",
            model="/m/tiny",
            models_dir="/m",
            threads=2,
            resolution=0.5,
        ),
        SegmentOptions(
            "/d/o.tif",
            confidence="/d/c.tif",
            entropy="/d/e.tif",
            quicklook="/d/q.png",
            tile_size=256,
            stride=200,
            batch_size=2,
            engine="torch",
            device="cuda:1",
            adapter="/d/a.safetensors",
            overwrite=True,
        ),
        cluster="local:2",
    ),
    "segment, several rasters": SegmentJob(Scene("/d/a.tif"), SegmentOptions("/d/out"), more_inputs=["/d/b.tif"]),
    "adapt": AdaptJob(
        Scene("/d/s.tif"),
        AdaptOptions(
            mode="dg",
            labels="/d/l.tif",
            samples=8,
            steps=5,
            top_k=6,
            reselect_every=2,
            seed=3,
            source_samples=True,
            adapter_out="/d/a.safetensors",
            report_out="/d/r.json",
            overwrite=True,
        ),
    ),
    "adapt-segment": AdaptSegmentJob(
        Scene("/d/s.tif", model="/m/tiny", resolution="native"),
        AdaptOptions(top_k=0.25, steps=7, overwrite=True),
        SegmentOptions("/d/o.tif", confidence="/d/c.tif", overwrite=True),
        cluster="tcp://host:8786",
    ),
    "evaluate": EvaluateJob("/d/p.tif", "/d/l.tif", model="/m/tiny", json_out="/d/m.json", overwrite=True),
    "adapt-segment with polygons, no self-check": AdaptSegmentJob(
        Scene("/d/s.tif"),
        AdaptOptions(labels="/d/l.gpkg", label_field="kind", label_buffer=2.5, self_check=False),
        SegmentOptions("/d/o.tif"),
    ),
    "suggest-labels": SuggestLabelsJob(Scene("/d/s.tif"), "/d/spots.gpkg", count=7, box=16, adapter="/d/a.st"),
    "vectorize, defaults": VectorizeJob("/d/c.tif", "/d/p.gpkg"),
    "vectorize, everything": VectorizeJob(
        "/d/c.tif", "/d/p.gpkg", confidence="/d/conf.tif", min_area=20.0, simplify=2.5, overwrite=True
    ),
    "areas, defaults": AreasJob("/d/c.tif", "/d/a.csv"),
    "areas per zone, no chart": AreasJob(
        "/d/c.tif", "/d/a.csv", zones="/d/z.gpkg", zone_field="name", json_out="/d/x.json", no_chart=True
    ),
    "accuracy": AccuracyJob("/d/c.tif", "/d/ref.gpkg", "/d/r.json", class_field="truth", plot="/d/cm.png"),
    "sample-points": SamplePointsJob("/d/c.tif", "/d/pts.gpkg", 30, stratified=True, seed=4, overwrite=True),
    "change": ChangeJob("/d/a.tif", "/d/b.tif", "/d/ch.tif", only_changes=True),
}


@pytest.mark.parametrize("name", list(JOBS))
def test_decode_inverts_encode_and_the_cli_parses_the_same_job(name):
    from backend.cli import parse_job

    job = JOBS[name]
    argv = encode(job)
    assert argv[0] == job.command
    assert decode(argv) == job
    assert decode([*argv, "--json-progress"]) == job
    assert parse_job(argv) == job  # the typer command line means the same


def test_encode_writes_only_what_differs_from_the_defaults_and_top_k_as_given():
    assert encode(JOBS["segment, defaults"]) == ["segment", "/d/scene.tif", "--output", "/d/out.tif"]
    argv = encode(JOBS["adapt-segment"])
    assert argv[argv.index("--top-k") + 1] == "0.25" and argv.count("--overwrite") == 1
    assert encode(JOBS["adapt"])[encode(JOBS["adapt"]).index("--top-k") + 1] == "6"
    assert "--samples" not in argv and "--mode" not in argv


def test_outputs_name_every_file_a_job_writes_defaults_included():
    job = AdaptSegmentJob(Scene("/d/s.tif"), AdaptOptions(), SegmentOptions("/d/out.tif", confidence="/d/c.tif"))
    assert job.outputs() == [
        "/d/out.tif",
        "/d/c.tif",
        "/d/out.adapter.safetensors",
        "/d/out.selection.json",
        "/d/out.selection.png",
    ]
    adapt = AdaptJob(Scene("/d/s.tif"), AdaptOptions(adapter_out="/d/a.safetensors"))
    assert adapt.outputs() == ["/d/a.safetensors", "/d/a.selection.json", "/d/a.selection.png"]


def test_analysis_jobs_name_their_default_outputs_beside_the_output():
    assert AreasJob("/d/c.tif", "/d/a.csv").outputs() == ["/d/a.csv", "/d/a.json", "/d/a.png"]
    assert AreasJob("/d/c.tif", "/d/a.csv", no_chart=True).outputs() == ["/d/a.csv", "/d/a.json"]
    assert AccuracyJob("/d/c.tif", "/d/r.tif", "/d/r.json").outputs() == ["/d/r.json", "/d/r.csv", "/d/r.png"]
    assert ChangeJob("/d/a.tif", "/d/b.tif", "/d/ch.tif").outputs() == [
        "/d/ch.tif",
        "/d/ch.matrix.csv",
        "/d/ch.matrix.json",
    ]
    job = decode(["sample-points", "c.tif", "-o", "p.gpkg", "-n", "12", "--stratified"])
    assert (job.count, job.stratified) == (12, True)
    assert decode(["areas", "c.tif", "-o", "a.csv", "--no-chart"]).chart is None


def test_the_cli_reads_dash_o_and_no_flags():
    job = decode(["adapt-segment", "s.tif", "-o", "o.tif", "--source-samples", "--no-source-samples"])
    assert job.segment.output == "o.tif" and job.adapt.source_samples is False


BAD = {
    "top-k not a whole count": lambda: AdaptOptions(top_k=2.5),
    "top-k zero": lambda: AdaptOptions(top_k=0),
    "unknown mode": lambda: AdaptOptions(mode="xx"),
    "no steps": lambda: AdaptOptions(steps=0),
    "fractional steps": lambda: AdaptOptions(steps=2.5),
    "unknown engine": lambda: SegmentOptions("o.tif", engine="tensorrt"),
    "odd device": lambda: SegmentOptions("o.tif", device="gpu"),
    "tiny tiles": lambda: SegmentOptions("o.tif", tile_size=8),
    "band zero": lambda: Scene("s.tif", bands="0,1,2"),
    "three-number bbox": lambda: Scene("s.tif", bbox="1,2,3"),
    "no input": lambda: Scene(""),
    "resolution zero": lambda: Scene("s.tif", resolution=0),
    "negative resolution": lambda: decode(["segment", "s.tif", "-o", "o.tif", "--resolution", "-0.3"]),
    "resolution not a number": lambda: Scene("s.tif", resolution="fine"),
    "resolution not finite": lambda: Scene("s.tif", resolution="nan"),
    "dg without labels": lambda: AdaptJob(Scene("s.tif"), AdaptOptions(mode="dg", adapter_out="a.safetensors")),
    "adapt without a checkpoint path": lambda: AdaptJob(Scene("s.tif"), AdaptOptions()),
    "segment without output": lambda: SegmentJob(Scene("s.tif"), SegmentOptions("")),
    "vectorize without output": lambda: VectorizeJob("c.tif", ""),
    "negative min-area": lambda: VectorizeJob("c.tif", "p.gpkg", min_area=-1),
    "no points": lambda: SamplePointsJob("c.tif", "p.gpkg", 0),
    "sample-points without -n": lambda: decode(["sample-points", "c.tif", "-o", "p.gpkg"]),
    "accuracy without reference": lambda: AccuracyJob("c.tif", "", "r.json"),
    "unknown option": lambda: decode(["segment", "s.tif", "-o", "o.tif", "--tile", "3"]),
    "unknown command": lambda: decode(["train", "s.tif"]),
    "no value": lambda: decode(["segment", "s.tif", "-o"]),
    "missing output": lambda: decode(["segment", "s.tif"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_values_are_refused_when_the_job_is_built(name):
    with pytest.raises(BadInput) as error:
        BAD[name]()
    assert "\n" not in str(error.value)


def test_resolution_is_auto_native_or_metres_written_as_typed():
    assert [Scene("s.tif", resolution=r).resolution for r in (None, "AUTO", " native", 2, "0.30")] == [
        "auto",
        "auto",
        "native",
        "2",
        "0.3",
    ]
    argv = encode(JOBS["segment, everything"])
    assert argv[argv.index("--resolution") + 1] == "0.5" and "--resolution" not in encode(JOBS["segment, defaults"])


def test_threads_zero_means_all_cores_and_paths_become_strings():
    scene = Scene(Path("/d/s.tif"), roi=Path("/d/r.gpkg"), threads=0)
    assert (scene.input, scene.roi, scene.threads) == ("/d/s.tif", "/d/r.gpkg", None)
    assert SegmentOptions(Path("/d/o.tif"), confidence="").confidence is None


def test_one_table_of_adaptation_defaults():
    from backend.adaptation.adapt import AdaptConfig

    options, config = AdaptOptions(), AdaptConfig()
    for name, value in ADAPT_DEFAULTS.items():
        assert getattr(options, name) == value, name
        if any(f.name == name for f in fields(AdaptConfig)):
            assert getattr(config, name) == value, name
    assert config.gate.top_k == ADAPT_DEFAULTS["top_k"]
    product = options.config()
    assert (product.lr, product.ema_momentum, product.class_quantile, product.steps) == (1e-3, 0.99, 0.5, 120)


def test_the_plugin_and_the_registry_read_a_card_alike_defaults_included(tmp_path):
    """One reader, one set of card defaults: a card that leaves out bands, tile, stride and nodata."""
    import json

    from backend.model.cards import CARD_DEFAULTS, CARD_FILE
    from backend.model.registry import ModelCard as BackendCard
    from qgis_crossearth.model_cards import ModelCard as PluginCard
    from qgis_crossearth.model_cards import list_model_cards

    folder = tmp_path / "m"
    folder.mkdir()
    classes = [{"value": 0, "name": "Water", "color": "#1F78B4"}, {"value": 1, "name": "Land", "color": "#D2B48C"}]
    architecture = {"backbone": "vit_tiny_patch16_224", "num_classes": 2, "in_chans": 3, "img_size": 32}
    card = {"name": "m", "description": "d", "architecture": architecture, "classes": classes}
    (folder / CARD_FILE).write_text(json.dumps(card))
    ours, theirs = PluginCard.from_folder(folder), BackendCard.read(folder)
    assert (ours.tile_size, ours.stride, ours.ignore_index, list(ours.bands)) == (
        theirs.tile_size,
        theirs.stride,
        theirs.nodata,
        theirs.bands,
    )
    assert ours.tile_size == CARD_DEFAULTS["tile_size"] and [c.name for c in ours.classes] == ["Water", "Land"]
    assert ours.resolution_m is theirs.resolution_m is None  # not known unless the card says it
    (folder / CARD_FILE).write_text(json.dumps({**card, "resolution_m": 0.3}))
    assert PluginCard.from_folder(folder).resolution_m == BackendCard.read(folder).resolution_m == 0.3
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CARD_FILE).write_text("{")
    assert [c.name for c in list_model_cards(tmp_path)] == ["m"]  # an unreadable card is skipped
    with pytest.raises(BadInput, match="not a valid model card"):
        BackendCard.read(tmp_path / "broken")


def test_contract_imports_neither_torch_nor_qgis_nor_the_cli_toolkit():
    probe = (
        "import sys\n"
        "for name in ('torch', 'rasterio', 'numpy', 'typer', 'click', 'rich', 'qgis', 'PyQt5'):\n"
        "    sys.modules[name] = None\n"
        "import backend.contract, backend.model.cards, qgis_crossearth.model_cards\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "ok", result.stderr


def test_the_tiling_is_resolved_once_from_the_card_and_a_bad_one_makes_a_bad_card(tmp_path):
    import json

    from backend.jobs import segment_tiling
    from backend.model.cards import CARD_FILE
    from backend.model.registry import ModelCard
    from backend.segmentation.tiling import Tiling

    architecture = {"backbone": "vit_tiny_patch16_224", "num_classes": 2, "in_chans": 3, "img_size": 32}
    classes = [{"value": 0, "name": "Water", "color": "#1F78B4"}, {"value": 1, "name": "Land", "color": "#D2B48C"}]
    card = {"name": "m", "description": "d", "architecture": architecture, "classes": classes}
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "tile_size": 256, "stride": 224, "blend": "centre"}))
    read = ModelCard.read(tmp_path)
    assert read.tiling == Tiling(256, 224, "centre")
    assert segment_tiling(read, SegmentOptions("o.tif")) == Tiling(256, 224, "centre")
    assert segment_tiling(read, SegmentOptions("o.tif", tile_size=128)) == Tiling(128, 112, "centre")
    assert segment_tiling(read, SegmentOptions("o.tif", stride=128, blend="hann")) == Tiling(256, 128, "hann")
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "tile_size": 256, "stride": 300}))
    with pytest.raises(BadInput, match=r"model_card.json: not a valid model card \(stride 300: must lie in 1..256"):
        ModelCard.read(tmp_path)
