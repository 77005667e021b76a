"""Start QGIS with the plugin on a virtual screen, run the dock on a scene and save a screenshot.

    .venv/bin/python tests/desktop/run_desktop.py SCENE --screenshot docs/screenshots/dock.png

A fresh QGIS profile in a temporary folder enables the plugin (``[PythonPlugins]``) and sets its
settings; QGIS_PLUGINPATH points at the checkout, so the plugin runs from the source tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP = Path(__file__).resolve().parent / "qgis_startup.py"
SCREEN = "1600x1000x24"


def write_profile(profiles: Path, settings: dict[str, str]) -> None:
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    crossearth = "\n".join(f"{key}={value}" for key, value in settings.items())
    ini.write_text(
        "[PythonPlugins]\nqgis_crossearth=true\n\n"
        f"[crossearth]\n{crossearth}\n\n"
        "[qgis]\ncheckVersion=false\nshowTips322=false\n\n"
        "[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n\n"
        "[UI]\nUI\\hideSplash=true\n",
        encoding="utf-8",
    )


def run(scene: Path, screenshot: Path, model_folder: str, steps: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="crossearth-desktop-") as tmp:
        tmp_path = Path(tmp)
        settings = {"python": sys.executable, "threads": "0", "output_folder": str(tmp_path / "CrossEarth")}
        if model_folder:
            settings["model_folder"] = model_folder
        write_profile(tmp_path, settings)
        scene = Path(shutil.copy(scene, tmp_path))  # QGIS writes statistics (.aux.xml) beside what it opens
        status = tmp_path / "status.json"
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "QGIS_PLUGINPATH": str(REPO),
            "CROSSEARTH_DESKTOP_STATUS": str(status),
            "CROSSEARTH_DESKTOP_SCENE": str(scene.resolve()),
            "CROSSEARTH_DESKTOP_SCREENSHOT": str(screenshot.resolve()),
            "CROSSEARTH_DESKTOP_STEPS": str(steps),
            "CROSSEARTH_DESKTOP_TIMEOUT": str(timeout),
            "CROSSEARTH_DESKTOP_SCREEN": SCREEN,
        }
        env.pop("QT_QPA_PLATFORM", None)
        command = [
            "xvfb-run",
            "-a",
            "-s",
            f"-screen 0 {SCREEN}",
            "qgis",
            "--profiles-path",
            str(tmp_path),
            "--nologo",
            "--noversioncheck",
            "--code",
            str(STARTUP),
        ]
        subprocess.run(
            command, env=env, timeout=timeout + 120, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not status.is_file():
            return {"status": "failed", "error": "QGIS wrote no status (it did not start or crashed)"}
        return json.loads(status.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--screenshot", type=Path, default=REPO / "docs" / "screenshots" / "dock.png")
    parser.add_argument("--model-folder", default="", help="default: the checkout's resources/models")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    result = run(args.scene, args.screenshot, args.model_folder, args.steps, args.timeout)
    print(json.dumps(result, indent=1))
    sys.exit(0 if result.get("status") == "success" else 1)


if __name__ == "__main__":
    main()
