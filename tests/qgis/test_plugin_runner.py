"""The runner's side of the JSON protocol, against a scripted ``backend.cli`` in a temporary root.

The script plays the backend's part exactly as docs/cli.md describes it (events on stdout, exit
codes, SIGTERM -> exit 130), plus one misbehaving child that ignores SIGTERM, which the real
backend never does but the runner must still stop.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qgis_crossearth.runner import EXIT_CANCELLED, BackendConfig, run_command

FAKE_CLI = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path

    def emit(**event):
        print(json.dumps(event), flush=True)

    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "ok":
        emit(type="log", level="info", message="starting")
        print("stray text on stdout", flush=True)
        print("a warning on stderr", file=sys.stderr, flush=True)
        for i in range(1, 4):
            emit(type="progress", fraction=i / 3, message=f"step {i}")
        out.write_text("done")
        emit(type="result", outputs={"OUTPUT": str(out)}, metrics={"miou": 0.5})
    elif scenario == "bad":
        emit(type="error", message=f"{out}: not a raster GDAL can read", exit_code=2)
        sys.exit(2)
    elif scenario == "crash":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ZeroDivisionError: division by zero", file=sys.stderr, flush=True)
        sys.exit(1)
    elif scenario == "no-packages":  # a python3 without the backend's packages
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ModuleNotFoundError: No module named 'typer'", file=sys.stderr, flush=True)
        sys.exit(1)
    elif scenario == "adapted-then-killed":  # the adapter is complete, the segmentation ignores SIGTERM
        out.with_name("scene.adapter.safetensors").write_text("adapter")
        out.with_name(f".{out.stem}.abcd1234.partial{out.suffix}").write_text("half")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        emit(type="progress", fraction=0.8, message="segmenting")
        while True:
            time.sleep(0.05)
    elif scenario in ("slow", "stubborn"):
        partial = out.with_name(f".{out.stem}.abcd1234.partial{out.suffix}")
        partial.write_text("half")
        out.with_name("child.pid").write_text(str(os.getpid()))
        if scenario == "slow":
            def stop(signum, frame):
                partial.unlink()
                sys.exit(130)
            signal.signal(signal.SIGTERM, stop)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        emit(type="progress", fraction=0.1, message="working")
        while True:
            time.sleep(0.05)
    """
)


@pytest.fixture
def fake_backend(tmp_path: Path) -> BackendConfig:
    package = tmp_path / "root" / "backend"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(FAKE_CLI)
    return BackendConfig(python=sys.executable, root=tmp_path / "root")


def run(config: BackendConfig, scenario: str, out: Path, cancel_after: float | None = None):
    events: list[dict] = []
    start = time.monotonic()

    def is_cancelled() -> bool:
        return (
            cancel_after is not None
            and any(e.get("type") == "progress" for e in events)
            and (time.monotonic() - start > cancel_after)
        )

    result = run_command([scenario, str(out)], config, events.append, is_cancelled, outputs=[str(out)])
    return result, events, time.monotonic() - start


def test_success_forwards_events_and_returns_outputs(fake_backend, tmp_path):
    out = tmp_path / "classes.tif"
    result, events, _ = run(fake_backend, "ok", out)
    assert result.ok
    assert result.outputs == {"OUTPUT": str(out)}
    assert result.metrics == {"miou": 0.5}
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    messages = {e["message"]: e.get("level") for e in events if e["type"] == "log"}
    assert messages["starting"] == "info"
    assert messages["stray text on stdout"] == "debug"
    assert messages["a warning on stderr"] == "debug"


def test_error_event_gives_the_backends_one_line_message(fake_backend, tmp_path):
    result, _, _ = run(fake_backend, "bad", tmp_path / "scene.tif")
    assert result.exit_code == 2
    assert result.error == f"{tmp_path / 'scene.tif'}: not a raster GDAL can read"


def test_crash_without_error_event_reports_the_last_stderr_line(fake_backend, tmp_path):
    result, _, _ = run(fake_backend, "crash", tmp_path / "x.tif")
    assert result.exit_code == 1
    assert "exit code 1" in result.error
    assert "ZeroDivisionError: division by zero" in result.error


def test_a_python_without_the_packages_says_how_to_set_one_up(fake_backend, tmp_path):
    result, _, _ = run(fake_backend, "no-packages", tmp_path / "x.tif")
    assert result.exit_code == 2 and "\n" not in result.error
    assert result.error.startswith("the backend Python lacks the package 'typer': ")
    assert "Set up the backend" in result.error and "python3 -m qgis_crossearth.backend_setup" in result.error


def test_missing_python_is_a_clear_error(fake_backend, tmp_path):
    config = BackendConfig(python=str(tmp_path / "no-python"), root=fake_backend.root)
    result, _, _ = run(config, "ok", tmp_path / "x.tif")
    assert not result.ok
    assert f"cannot start the backend Python '{tmp_path / 'no-python'}'" in result.error


def test_missing_backend_source_is_a_clear_error(tmp_path):
    result, _, _ = run(BackendConfig(python=sys.executable, root=tmp_path / "lib"), "ok", tmp_path / "x.tif")
    assert result.error == f"the backend's source is not in {tmp_path / 'lib'}: reinstall the plugin"


def test_cancel_removes_what_a_killed_backend_finished_but_not_earlier_files(fake_backend, tmp_path):
    """Adapt-and-segment killed during its segmentation: the adapter it wrote goes, as the dock says nothing was
    written; an output that was there before the run (and that this run did not replace) stays."""
    out, adapter, report = tmp_path / "classes.tif", tmp_path / "scene.adapter.safetensors", tmp_path / "r.json"
    report.write_text("an earlier run's report")
    events: list[dict] = []

    def is_cancelled() -> bool:
        return any(e.get("type") == "progress" for e in events)

    outputs = [str(out), str(adapter), str(report)]
    result = run_command(["adapted-then-killed", str(out)], fake_backend, events.append, is_cancelled, outputs)
    assert result.cancelled
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "root") == ["r.json"]
    assert report.read_text() == "an earlier run's report"


@pytest.mark.parametrize(("scenario", "max_seconds"), [("slow", 1.0), ("stubborn", 3.0)])
def test_cancel_stops_the_child_and_leaves_no_partial_output(fake_backend, tmp_path, scenario, max_seconds):
    out = tmp_path / "classes.tif"
    result, _, elapsed = run(fake_backend, scenario, out, cancel_after=0.2)
    assert result.cancelled and result.exit_code == EXIT_CANCELLED
    assert elapsed < max_seconds + 0.2 + 1.0  # cancel latency + the SIGKILL grace period when ignored
    assert list(tmp_path.glob("*classes*")) == []
    pid = int((tmp_path / "child.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
