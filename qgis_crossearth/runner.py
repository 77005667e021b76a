"""Run one backend job and report its JSON events; the only place that starts the backend.

A job is a dataclass of :mod:`backend.contract`. Subprocess mode (default) runs
``<backend python> -m backend.cli <encode(job)> --json-progress`` and reads its JSON lines; in-process
mode hands the dataclass to ``backend.cli.run_job`` in this thread, for when torch is importable in
QGIS's own Python. Either way the caller gets the same event dicts (docs/cli.md) and one
:class:`BackendRun` at the end. Nothing here imports QGIS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.contract import (
    ERROR,
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILURE,
    EXIT_OK,
    JSON_PROGRESS,
    LOG,
    RESULT,
    Job,
    encode,
)

Event = dict[str, Any]
EventFn = Callable[[Event], None]
CancelFn = Callable[[], bool]

CANCEL_POLL_SECONDS = 0.05
TERMINATE_GRACE_SECONDS = 2.0
SUBPROCESS = "subprocess"
IN_PROCESS = "in-process"


@dataclass
class BackendRun:
    """How a backend command ended: outputs and metrics on success, a one-line error otherwise."""

    exit_code: int
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def cancelled(self) -> bool:
        return self.exit_code == EXIT_CANCELLED


@dataclass
class BackendConfig:
    """How to reach the backend: its Python (subprocess), its source root, the run mode."""

    python: str
    root: Path
    mode: str = SUBPROCESS
    extra_env: dict[str, str] = field(default_factory=dict)


def torch_in_qgis_python() -> bool:
    return importlib.util.find_spec("torch") is not None


def run_backend(job: Job, config: BackendConfig, on_event: EventFn, is_cancelled: CancelFn) -> BackendRun:
    """Run a job of backend.contract, in QGIS's Python or as ``crossearth <encode(job)>``."""
    if config.mode == IN_PROCESS:
        if torch_in_qgis_python():
            return _run_in_process(job, config, on_event, is_cancelled)
        on_event(
            {
                "type": LOG,
                "level": "warning",
                "message": "torch is not importable in QGIS's Python: running the backend as a subprocess",
            }
        )
    return run_command([*encode(job), JSON_PROGRESS], config, on_event, is_cancelled, job.outputs())


def run_command(
    argv: Sequence[str],
    config: BackendConfig,
    on_event: EventFn,
    is_cancelled: CancelFn,
    outputs: Sequence[str] = (),
) -> BackendRun:
    """Run ``crossearth ARGV`` as a subprocess; ``outputs`` are the files it writes. On cancel, what this run
    wrote of them is removed: the backend does so itself when it stops at a cancel check, but one killed
    after the grace period (during an ONNX export, say) may have finished some (the adapter before the
    segmentation), and its ``.partial`` files."""
    before = {path: _stamp(path) for path in outputs}
    run = _run_subprocess(list(argv), config, on_event, is_cancelled)
    if run.cancelled:
        remove_partial_outputs(outputs)
        for path, stamp in before.items():
            if _stamp(path) not in (None, stamp):  # new, or replaced by this run; an earlier file stays
                with contextlib.suppress(OSError):
                    Path(path).unlink()
    return run


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def backend_env(config: BackendConfig) -> dict[str, str]:
    """QGIS's environment minus its Python settings, which would confuse another interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(config.root)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(config.extra_env)
    return env


def backend_command(argv: Sequence[str], config: BackendConfig) -> list[str]:
    return [config.python, "-m", "backend.cli", *argv]


SETUP_FIX = (
    "Settings > Options > CrossEarth > Set up the backend "
    "(or, from the QGIS plugins folder: python3 -m qgis_crossearth.backend_setup)"
)
NO_BACKEND_PYTHON = f"no backend Python is set up: {SETUP_FIX}"


def _run_subprocess(argv: list[str], config: BackendConfig, on_event: EventFn, is_cancelled: CancelFn) -> BackendRun:
    if not config.python:
        return BackendRun(EXIT_BAD_INPUT, error=NO_BACKEND_PYTHON)
    if not (config.root / "backend").is_dir():
        return BackendRun(EXIT_BAD_INPUT, error=f"the backend's source is not in {config.root}: reinstall the plugin")
    try:
        process = subprocess.Popen(
            backend_command(argv, config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=backend_env(config),
            cwd=config.root,  # ``-m`` puts the working folder first on sys.path: make it the backend's
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as error:
        return BackendRun(EXIT_BAD_INPUT, error=f"cannot start the backend Python {config.python!r}: {error}")

    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, "stdout", lines), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, "stderr", lines), daemon=True),
    ]
    for reader in readers:
        reader.start()

    collector = _Collector(on_event)
    open_streams = len(readers)
    while open_streams:
        if is_cancelled():
            stop_process(process)
            for reader in readers:
                reader.join(timeout=1.0)
            return BackendRun(EXIT_CANCELLED, error="cancelled")
        try:
            stream, line = lines.get(timeout=CANCEL_POLL_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif stream == "stdout":
            collector.stdout_line(line)
        else:
            collector.stderr_line(line)
    while process.poll() is None:
        if is_cancelled():
            stop_process(process)
            return BackendRun(EXIT_CANCELLED, error="cancelled")
        time.sleep(CANCEL_POLL_SECONDS)
    return collector.finish(process.returncode)


def _pump(stream: Any, name: str, lines: queue.Queue[tuple[str, str | None]]) -> None:
    for line in stream:
        lines.put((name, line.rstrip("\r\n")))
    stream.close()
    lines.put((name, None))


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the backend cleans up and exits 130), then SIGKILL after the grace period."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def remove_partial_outputs(outputs: Sequence[str]) -> None:
    """Delete the temporary ``.<stem>.<id>.partial<suffix>`` files a killed backend leaves beside its
    outputs (the naming of backend/rasters/atomic.py); a backend stopped by SIGTERM has already done so."""
    for output in outputs:
        target = Path(output)
        if target.parent.is_dir():
            for leftover in target.parent.glob(f".{target.stem}.*.partial{target.suffix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()


class _Collector:
    """Forwards events and keeps what the final :class:`BackendRun` needs."""

    def __init__(self, on_event: EventFn) -> None:
        self.on_event = on_event
        self.result: Event | None = None
        self.error: Event | None = None
        self.stderr_tail: list[str] = []

    def event(self, event: Event) -> None:
        if event.get("type") == RESULT:
            self.result = event
        elif event.get("type") == ERROR:
            self.error = event
        self.on_event(event)

    def stdout_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or "type" not in event:
            event = {"type": LOG, "level": "debug", "message": line}
        self.event(event)

    def stderr_line(self, line: str) -> None:
        if line.strip():
            self.stderr_tail = [*self.stderr_tail[-19:], line]
            self.on_event({"type": LOG, "level": "debug", "message": line})

    def finish(self, exit_code: int) -> BackendRun:
        if exit_code == EXIT_OK and self.result is not None:
            return BackendRun(EXIT_OK, dict(self.result.get("outputs") or {}), dict(self.result.get("metrics") or {}))
        if exit_code == EXIT_CANCELLED:
            return BackendRun(EXIT_CANCELLED, error="cancelled")
        if exit_code < 0:
            return BackendRun(EXIT_FAILURE, error=f"the backend was killed by signal {-exit_code}")
        if self.error is not None:
            return BackendRun(exit_code or EXIT_FAILURE, error=str(self.error.get("message", "backend failed")))
        detail = self.stderr_tail[-1] if self.stderr_tail else "no message"
        missing = re.match(r"ModuleNotFoundError: No module named '([\w.]+)'", detail)
        if missing:  # a Python without the backend's packages: say which and how to get them, not the traceback
            return BackendRun(
                EXIT_BAD_INPUT,
                error=f"the backend Python lacks the package {missing.group(1)!r}: {SETUP_FIX}",
            )
        if exit_code == EXIT_OK:
            return BackendRun(EXIT_FAILURE, error=f"the backend ended without a result: {detail}")
        return BackendRun(exit_code, error=f"the backend failed (exit code {exit_code}): {detail}")


def _run_in_process(job: Job, config: BackendConfig, on_event: EventFn, is_cancelled: CancelFn) -> BackendRun:
    root = str(config.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    collector = _Collector(on_event)
    try:
        from backend.cli import run_job

        exit_code = run_job(job, collector.event, is_cancelled)
    except Exception as error:  # the backend's own crash must not take QGIS down
        return BackendRun(EXIT_FAILURE, error=f"the backend failed in QGIS's Python: {type(error).__name__}: {error}")
    return collector.finish(exit_code)
