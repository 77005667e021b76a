# CrossEarth for QGIS. `make demo` and `make test` are all a newcomer needs; both run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# QGIS's Python bindings live in Debian's python3, so the venv must come from it (not another python3 on PATH).
SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup test test-fast lint format demo bench bench-quality bench-loto-models train-default package clean

help:
	@echo "make demo    - adapt the embedded default model to the sample scene and segment it"
	@echo "make test    - run the test suite (about 10 minutes on 2 cores)"
	@echo "make setup   - install QGIS (Debian packages) and the Python environment; idempotent"
	@echo "make lint | bench | bench-quality | train-default | package"

setup: $(STAMP)

$(STAMP): requirements.txt requirements-runtime.txt pyproject.toml scripts/setup_qgis.sh
	@bash scripts/setup_qgis.sh
	@test -x $(PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "setup done: $(VENV) ($$($(PY) -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'))"

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not desktop"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

DEMO_OUT := demo-output
DEMO_SCENE := resources/samples/dubai_tile6.tif
DEMO_LABELS := resources/samples/dubai_tile6_labels.tif
DEMO_POLYGONS := resources/samples/dubai_tile6_polygons.gpkg
# Three maps of the sample scene, each scored on the pixels the analyst's 20 polygons leave uncovered:
# the model as it is, adapted without labels (self-training and its self-check), adapted on the polygons.
demo: setup
	@mkdir -p $(DEMO_OUT)
	$(VENV)/bin/crossearth segment $(DEMO_SCENE) -o $(DEMO_OUT)/segment_classes.tif --overwrite
	$(VENV)/bin/crossearth adapt-segment $(DEMO_SCENE) -o $(DEMO_OUT)/dubai_tile6_classes.tif \
		--confidence $(DEMO_OUT)/dubai_tile6_confidence.tif --quicklook $(DEMO_OUT)/dubai_tile6_quicklook.png --overwrite
	$(VENV)/bin/crossearth adapt-segment $(DEMO_SCENE) -o $(DEMO_OUT)/polygons_classes.tif --labels $(DEMO_POLYGONS) \
		--quicklook $(DEMO_OUT)/polygons_quicklook.png --overwrite
	@for map in segment_classes dubai_tile6_classes polygons_classes; do \
		$(VENV)/bin/crossearth evaluate $(DEMO_OUT)/$$map.tif $(DEMO_LABELS) --skip $(DEMO_POLYGONS) || exit 1; done
	@echo "outputs in $(DEMO_OUT)/: the three class rasters, confidence, adapter checkpoints, selection reports, quicklooks"

bench: setup
	$(PY) bench/end_to_end.py --out results/end_to_end.json
	$(PY) bench/engine_cost.py --out results/engine_cost.json
	$(PY) bench/inference.py --out results/inference.json
	$(PY) bench/window_memory.py --out results/window_memory.json
	$(PY) bench/cluster.py --out results/cluster.json

bench-quality: setup
	$(PY) bench/quality/run.py --out results/quality.json
	$(PY) bench/quality/module_effect.py --out results/module_effect.json
	$(PY) bench/quality/safe.py --out results/safe_adaptation.json --variant defaults --variant "no anchor" \
		--variant "no anchor, balance 0.5" --variant "teacher 4 views" --variant "60 steps" --analyst 20,area,0 \
		--analyst 20,classes,0 --analyst 20,area,0,protected --analyst 20,classes,0,anchor \
		--analyst 5,classes,0 --analyst 10,classes,0 --analyst 40,classes,0 \
		--loto-models $(LOTO_MODELS)
	$(PY) bench/quality/rounds.py --out results/label_rounds.json

LOTO_MODELS := $(HOME)/.cache/crossearth/loto
bench-loto-models: setup
	$(PY) bench/quality/loto_models.py --cache $(LOTO_MODELS)

train-default: setup
	$(PY) scripts/train_default.py --log resources/models/dubai-hybrid-vit/train.log

package: setup
	$(PY) scripts/package_plugin.py

clean:
	rm -rf $(DEMO_OUT) build dist .pytest_cache .ruff_cache
