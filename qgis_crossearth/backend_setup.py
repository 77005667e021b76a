"""Set up the backend's Python: a virtual environment in a per-user data folder with the runtime requirements.

*Settings › Options › CrossEarth › Set up the backend* runs :func:`setup_backend` in a QgsTask; the same code
runs from a terminal, from the QGIS plugins folder::

    python3 -m qgis_crossearth.backend_setup [--find-links DIR]

``--find-links DIR`` installs from a folder of wheels only (a machine without a package index). With no
backend Python set, the plugin uses this environment once it is ready (:func:`ready_python`). Nothing here
imports QGIS or torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

READY_FILE = ".crossearth-ready"  # written last: an environment without it is not used
CHECK_IMPORTS = ("torch", "timm", "rasterio", "typer")  # what the backend cannot start without
POLL_SECONDS = 0.1
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def data_home() -> Path:
    """The per-user data folder: ``$XDG_DATA_HOME`` (``~/.local/share``), ``%LOCALAPPDATA%`` on Windows,
    ``~/Library/Application Support`` on macOS."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def default_backend_dir() -> Path:
    return data_home() / "crossearth" / "backend"


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def ready_python(folder: Path | None = None) -> str:
    """The set-up environment's Python when its set-up completed, else ''."""
    folder = folder or default_backend_dir()
    python = venv_python(folder)
    return str(python) if (folder / READY_FILE).is_file() and python.is_file() else ""


def base_python() -> str:
    """A Python interpreter to create the environment with: this one, unless this process is QGIS itself (its
    ``sys.executable`` is then the QGIS program), else the matching ``python3`` of its installation or PATH."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        Path(sys.executable),
        Path(sys.exec_prefix) / "bin" / f"python{version}",
        Path(sys.exec_prefix) / "python.exe",
        Path(shutil.which(f"python{version}") or ""),
        Path(shutil.which("python3") or ""),
    ]
    for candidate in candidates:
        if candidate.name.lower().startswith("python") and candidate.is_file():
            return str(candidate)
    return ""


@dataclass
class SetupResult:
    ok: bool
    message: str  # one line: what happened, or what went wrong and how to fix it
    python: str = ""
    cancelled: bool = False


class _Cancelled(Exception):
    """The user cancelled the set-up between two of its steps."""


def setup_backend(
    requirements: Path,
    target: Path | None = None,
    find_links: str | None = None,
    progress: ProgressFn = lambda fraction, message: None,
    is_cancelled: CancelFn = lambda: False,
    python: str | None = None,
    check_imports: Sequence[str] = CHECK_IMPORTS,
) -> SetupResult:
    """Create (or refresh) the environment in ``target`` and install ``requirements`` into it.

    Cancelled or failed, it leaves no environment that looks ready: a new folder is removed, an existing one
    keeps no ready mark until a later set-up completes."""
    target = Path(target or default_backend_dir())
    python = python or base_python()
    if not python:
        return SetupResult(False, "no Python interpreter found to create the environment with: install Python 3")
    if not requirements.is_file():
        return SetupResult(False, f"{requirements}: the requirements file is missing; reinstall the plugin")
    if find_links and not Path(find_links).is_dir():
        return SetupResult(False, f"{find_links}: not a folder of wheels")
    created = not target.exists()
    (target / READY_FILE).unlink(missing_ok=True)
    log: list[str] = []
    try:
        progress(0.0, f"creating the environment in {target}")
        if not venv_python(target).is_file():
            _run([python, "-m", "venv", str(target)], log, is_cancelled)
        pip = [str(venv_python(target)), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        progress(0.05, "updating pip")
        _run([*pip, "install", "--upgrade", "pip", *_index_options(find_links)], log, is_cancelled, check=False)
        wanted = _requirement_count(requirements)
        command = [*pip, "install", "--progress-bar", "off", "-r", str(requirements), *_index_options(find_links)]

        def on_line(line: str) -> None:
            collected = sum(1 for entry in log if entry.startswith("Collecting "))
            if line.startswith("Collecting "):
                # dependencies come on top of the listed packages: about three times as many in all
                progress(0.1 + 0.7 * min(collected / (3 * wanted), 1.0), line)
            elif line.startswith("Installing collected packages"):
                progress(0.85, "installing the packages (torch takes a while)")

        progress(0.1, f"installing {requirements.name} ({wanted} packages and their dependencies)")
        _run(command, log, is_cancelled, on_line=on_line)
        progress(0.97, "checking the environment")
        _run([str(venv_python(target)), "-c", f"import {', '.join(check_imports)}"], log, is_cancelled)
        (target / READY_FILE).write_text(f"{requirements}\n", encoding="utf-8")
    except _Cancelled:
        _forget(target, created)
        return SetupResult(False, "set-up cancelled; no environment was left ready", cancelled=True)
    except (OSError, subprocess.CalledProcessError) as error:
        _forget(target, created)
        detail = next((line for line in reversed(log) if line.strip()), str(error))
        return SetupResult(False, f"set-up failed: {detail}")
    progress(1.0, "ready")
    return SetupResult(True, f"backend ready: {venv_python(target)}", python=str(venv_python(target)))


def _index_options(find_links: str | None) -> list[str]:
    return ["--no-index", "--find-links", str(find_links)] if find_links else []


def _requirement_count(requirements: Path) -> int:
    lines = requirements.read_text(encoding="utf-8").splitlines()
    return max(1, sum(1 for line in lines if line.split("#")[0].strip() and not line.startswith("-")))


def _forget(target: Path, created: bool) -> None:
    if created:
        shutil.rmtree(target, ignore_errors=True)


def _run(
    command: Sequence[str],
    log: list[str],
    is_cancelled: CancelFn,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
) -> None:
    """Run ``command``, its output lines to ``log`` (and ``on_line``); a cancel stops it."""
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")},
    )

    def pump() -> None:
        for line in process.stdout:
            line = line.rstrip()
            log.append(line)
            if on_line is not None:
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while process.poll() is None:
        if is_cancelled():
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
            if process.poll() is None:
                process.kill()
            process.wait()
            raise _Cancelled
        time.sleep(POLL_SECONDS)
    reader.join(5)
    if check and process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, list(command))


def main(argv: Sequence[str] | None = None) -> int:
    from qgis_crossearth.paths import requirements_file

    parser = argparse.ArgumentParser(
        prog="python3 -m qgis_crossearth.backend_setup",
        description="Create the CrossEarth backend's Python environment and install its runtime requirements.",
    )
    parser.add_argument("--find-links", metavar="DIR", help="install only from this folder of wheels (no index)")
    parser.add_argument("--target", type=Path, default=None, help=f"where (default: {default_backend_dir()})")
    parser.add_argument("--requirements", type=Path, default=None, help="requirements file (default: the plugin's)")
    args = parser.parse_args(argv)

    def progress(fraction: float, message: str) -> None:
        print(f"[{100 * fraction:3.0f}%] {message}", flush=True)

    stop = threading.Event()  # Ctrl-C: stop pip, remove a half-made environment
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    requirements = args.requirements or requirements_file()
    result = setup_backend(requirements, args.target, args.find_links, progress, stop.is_set)
    print(result.message, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else (130 if result.cancelled else 1)


if __name__ == "__main__":
    sys.exit(main())
