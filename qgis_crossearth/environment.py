"""The "Check environment" report: can the chosen Python run the backend, and if not, what fixes it.

It runs a short script in the backend's Python (never pip, never QGIS's own interpreter for
installing anything) and turns the answer into findings with exact fix commands. QGIS-free.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from qgis_crossearth import paths
from qgis_crossearth.model_cards import list_model_cards
from qgis_crossearth.runner import SETUP_FIX, BackendConfig, backend_env

REQUIRED = ("torch", "timm", "rasterio", "safetensors", "numpy", "typer", "rich", "matplotlib")
OPTIONAL = ("onnxruntime", "distributed")
CHECK_TIMEOUT_SECONDS = 120
WEIGHTS_FILE = "model.safetensors"

PROBE = """
import importlib, importlib.metadata, json, sys
names = sys.argv[1].split(",")
report = {"python": sys.version.split()[0], "executable": sys.executable, "packages": {}}
for name in names:
    try:
        module = importlib.import_module(name)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = getattr(module, "__version__", "installed")
        report["packages"][name] = str(version)
    except Exception as error:
        report["packages"][name] = None
        report.setdefault("import_errors", {})[name] = f"{type(error).__name__}: {error}"
try:
    import torch
    report["cuda"] = bool(torch.cuda.is_available())
    report["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report["threads"] = torch.get_num_threads()
except Exception:
    report["cuda"] = None
try:
    import backend, backend.cli
    report["backend"] = {"version": backend.__version__, "path": backend.__file__}
except Exception as error:
    report["backend"] = None
    report["backend_error"] = f"{type(error).__name__}: {error}"
print(json.dumps(report))
"""


@dataclass
class Finding:
    ok: bool
    text: str
    fix: str = ""


@dataclass
class EnvironmentReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)

    def add(self, ok: bool, text: str, fix: str = "") -> None:
        self.findings.append(Finding(ok, text, fix))

    def as_text(self) -> str:
        lines = []
        for finding in self.findings:
            lines.append(("✔ " if finding.ok else "✘ ") + finding.text)
            if finding.fix:
                lines.append("    → " + finding.fix)
        return "\n".join(lines)


def install_command(python: str, requirements: Path) -> str:
    return f"{shlex.quote(python)} -m pip install -r {shlex.quote(str(requirements))}"


def check_environment(
    config: BackendConfig, requirements: Path, model_folder: Path, device: str = "auto"
) -> EnvironmentReport:
    report = EnvironmentReport()
    setup_hint = SETUP_FIX + (
        "; in a CrossEarth checkout, `make setup` creates .venv instead" if paths.is_checkout() else ""
    )
    if not config.python:
        report.add(False, "No backend Python is set, and none has been set up.", setup_hint)
        return report
    try:
        completed = subprocess.run(
            [config.python, "-c", PROBE, ",".join(REQUIRED + OPTIONAL)],
            capture_output=True,
            text=True,
            env=backend_env(config),
            cwd=config.root if config.root.is_dir() else None,
            timeout=CHECK_TIMEOUT_SECONDS,
            check=False,
        )
    except OSError as error:
        report.add(False, f"Backend Python {config.python} cannot be started: {error.strerror or error}", setup_hint)
        return report
    except subprocess.TimeoutExpired:
        report.add(False, f"{config.python} did not answer within {CHECK_TIMEOUT_SECONDS} s.")
        return report
    try:
        probe = json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"])[-1]
        report.add(False, f"{config.python} cannot run the check: {detail}", setup_hint)
        return report

    report.add(True, f"Python {probe['python']} at {probe['executable']}")
    packages: dict[str, str | None] = probe["packages"]
    missing = [name for name in REQUIRED if not packages.get(name)]
    found = ", ".join(f"{name} {packages[name]}" for name in REQUIRED if packages.get(name))
    if found:
        report.add(True, f"Packages: {found}")
    if missing:
        errors = probe.get("import_errors", {})
        detail = "; ".join(f"{name}: {errors.get(name, 'missing')}" for name in missing)
        fix = "install them: " + install_command(config.python, requirements)
        report.add(False, f"Missing packages: {detail}", fix)
    for name in OPTIONAL:
        if not packages.get(name):
            report.add(
                True,
                f"Optional {name} not installed (only needed for "
                f"{'ONNX inference' if name == 'onnxruntime' else 'dask clusters'})",
            )

    if probe.get("backend"):
        report.add(True, f"Backend {probe['backend']['version']} from {Path(probe['backend']['path']).parent}")
    elif not missing:
        report.add(
            False,
            f"The backend does not import: {probe.get('backend_error')}",
            f"the backend source is expected in {config.root}; reinstall the plugin or fix the checkout",
        )

    if probe.get("cuda"):
        report.add(True, f"Device: CUDA ({', '.join(probe.get('cuda_devices', []))})")
    elif probe.get("cuda") is False:
        if device == "cuda":
            report.add(
                False,
                "Device is set to cuda but torch sees no GPU.",
                "choose cpu (or auto), or install a CUDA build of torch into this Python",
            )
        else:
            report.add(True, f"Device: CPU ({probe.get('threads')} threads)")

    cards = list_model_cards(model_folder)
    complete = [card.name for card in cards if (card.folder / WEIGHTS_FILE).is_file()]
    incomplete = [card.name for card in cards if card.name not in complete]
    if complete:
        report.add(True, f"Models in {model_folder}: {', '.join(complete)}")
    if incomplete:
        report.add(
            False,
            f"Models without {WEIGHTS_FILE}: {', '.join(incomplete)}",
            f"copy each model's {WEIGHTS_FILE} into its folder in {model_folder}",
        )
    if not cards:
        report.add(
            False,
            f"No model found in {model_folder}.",
            "choose the folder that holds <model>/model_card.json and <model>/model.safetensors",
        )
    return report
