"""Segment on a Dask distributed cluster: strips of tiles are the tasks, one writer assembles them in order.

Each worker builds the predictor once (a worker plugin; the model folder and adapter checkpoint are
paths every worker must reach) and opens the raster by path for each strip it is given. The client
adds the strips' weighted probability sums in order with the same :class:`StripAssembler` as a
single process, so the outputs are the same bits. Only a few strips per worker are in flight at a
time, so memory stays bounded however large the raster or long the list of rasters.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import uuid
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import rasterio
from distributed import Client, Future, LocalCluster, WorkerPlugin, get_worker, wait

from backend.errors import BadInput
from backend.progress import CancelFn, ProgressFn, check_cancelled, never_cancelled, no_progress
from backend.rasters.raster_io import NoCrsWarning, SceneReader, Stretch
from backend.rasters.roi import Roi
from backend.segmentation.sliding_window import (
    GDAL_CACHE_MB,
    Predict,
    SegmentResult,
    StripAssembler,
    StripSums,
    TileGrid,
    check_tiling,
    predict_strip,
)

LOCAL = "local"
RETRIES = 2  # a strip whose task raises (a network filesystem hiccup) runs again; a dead worker's are re-run anyway
STRIPS_IN_FLIGHT_PER_WORKER = 2  # enough to keep every worker busy while the client writes
POLL_SECONDS = 0.2  # how often the client checks for a cancel while it waits for a strip
CONNECT_TIMEOUT = "10s"


def parse_cluster(spec: str) -> int | str:
    """``local`` (one worker per core), ``local:N`` (N local workers) or a scheduler address."""
    spec = spec.strip()
    if spec == LOCAL:
        return os.cpu_count() or 1
    if spec.startswith(LOCAL + ":"):
        count = spec.removeprefix(LOCAL + ":")
        if not count.isdigit() or int(count) < 1:
            raise BadInput(f"cluster {spec!r}: local:N needs a worker count N of at least 1")
        return int(count)
    if not spec:
        raise BadInput("cluster '': give local, local:N or a scheduler address such as tcp://host:8786")
    return spec


def local_threads(workers: int) -> int:
    """Inference threads for each of ``workers`` local workers: the machine's cores shared out."""
    return max(1, (os.cpu_count() or 1) // workers)


class ExitWithoutTeardown(WorkerPlugin):
    """Makes a worker process of our own LocalCluster skip interpreter teardown when it exits.

    Unloading torch takes seconds per process; skipped, closing the cluster after a cancel takes a
    fraction of a second. The workers hold nothing that needs it: every output is the client's.
    """

    def setup(self, worker: Any) -> None:
        atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextmanager
def connect(spec: str) -> Iterator[Client]:
    """A client of a new LocalCluster (``local[:N]``, shut down on exit) or of the scheduler at an address."""
    target = parse_cluster(spec)
    if isinstance(target, int):
        with (
            LocalCluster(
                n_workers=target,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: no clash with another cluster on this machine
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            client.register_plugin(ExitWithoutTeardown(), name="crossearth-exit-without-teardown")
            yield client
        return
    try:
        client = Client(target, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise BadInput(f"cluster {target}: no Dask scheduler answered ({error})") from error
    with client:
        yield client


@dataclass(frozen=True)
class PredictorSpec:
    """What a worker needs to build the predictor: paths it can read and the inference settings."""

    model_folder: str
    adapter: str | None
    engine: str
    device: str
    tile: int
    batch_size: int
    threads: int | None = None  # None: the worker's cores shared among its task threads


class PredictorPlugin(WorkerPlugin):
    """Loads the model (and adapter) on a worker at its first strip and keeps the predictor for the others.

    Loading at the first strip rather than in ``setup`` keeps registration instant (the client can still
    cancel), and a model the worker cannot read fails that strip with the loader's own error.
    """

    def __init__(self, spec: PredictorSpec) -> None:
        self.spec = spec

    def setup(self, worker: Any) -> None:
        self._lock = threading.Lock()
        self._predict: Predict | None = None
        self._threads = self.spec.threads or max(1, (os.cpu_count() or 1) // max(1, worker.state.nthreads))

    def predictor(self) -> Predict:
        with self._lock:
            if self._predict is None:
                from backend.model.checkpoint import load_adapter
                from backend.model.registry import ModelCard, load_model
                from backend.segmentation.predictor import make_predictor

                model = load_model(ModelCard.read(Path(self.spec.model_folder)))
                if self.spec.adapter:
                    load_adapter(model, self.spec.adapter)
                spec = self.spec
                self._predict, _ = make_predictor(
                    model, spec.engine, spec.tile, spec.batch_size, self._threads, device=spec.device
                )
            return self._predict


@dataclass(frozen=True)
class StripSource:
    """One raster's strips as a worker sees them: a path, the client's band mapping and stretch, no open file."""

    path: str
    bands: tuple[int, ...]
    n_inputs: int
    stretch: Stretch
    roi: Roi
    grid: TileGrid
    n_classes: int
    batch_size: int

    def open_reader(self) -> SceneReader:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoCrsWarning)  # the client has warned about it once already
            return SceneReader(self.path, self.bands, self.n_inputs, stretch=self.stretch)


@dataclass(frozen=True)
class RasterJob:
    """One raster to segment and the files to write for it."""

    source: StripSource
    output: str
    confidence: str | None = None
    entropy: str | None = None
    overwrite: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)  # tags of the outputs (model, engine, ...)

    @classmethod
    def plan(
        cls,
        reader: SceneReader,
        roi: Roi,
        *,
        n_classes: int,
        tile: int,
        stride: int,
        batch_size: int,
        output: str,
        confidence: str | None = None,
        entropy: str | None = None,
        overwrite: bool = False,
    ) -> RasterJob:
        check_tiling(tile, stride, batch_size)
        source = StripSource(
            path=os.path.abspath(reader.path),
            bands=tuple(reader.bands),
            n_inputs=len(reader.bands),
            stretch=reader.stretch,
            roi=roi,
            grid=TileGrid.over(roi.window, tile, stride),
            n_classes=n_classes,
            batch_size=batch_size,
        )
        return cls(source, output, confidence, entropy, overwrite)


def _plugin_name(run: str) -> str:
    return f"crossearth-predictor-{run}"


def _predict_strip_task(source: StripSource, index: int, plugin_name: str) -> StripSums:
    """Runs on a worker: read and predict one strip of tiles."""
    predict = get_worker().plugins[plugin_name].predictor()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), source.open_reader() as reader:
        return predict_strip(
            reader,
            predict,
            source.grid,
            index,
            roi=source.roi,
            n_classes=source.n_classes,
            batch_size=source.batch_size,
        )


class _StripStream:
    """Submits strips in order, never more than ``in_flight`` ahead of the one the client waits for."""

    def __init__(self, client: Client, strips: Sequence[tuple[StripSource, int]], run: str) -> None:
        self.client = client
        self.strips = strips
        self.run = run
        self.in_flight = STRIPS_IN_FLIGHT_PER_WORKER * max(1, len(client.scheduler_info()["workers"]))
        self.pending: deque[Future] = deque()
        self.submitted = 0

    def next(self, is_cancelled: CancelFn) -> StripSums:
        while len(self.pending) < self.in_flight and self.submitted < len(self.strips):
            source, index = self.strips[self.submitted]
            future = self.client.submit(
                _predict_strip_task,
                source,
                index,
                _plugin_name(self.run),
                key=f"crossearth-strip-{self.run}-{self.submitted}",
                retries=RETRIES,
                pure=False,
            )
            self.pending.append(future)
            self.submitted += 1
        future = self.pending.popleft()
        while not future.done():
            check_cancelled(is_cancelled)
            with suppress(TimeoutError):
                wait(future, timeout=POLL_SECONDS)
        check_cancelled(is_cancelled)
        # no timeout here: a result(timeout) that expires drops the transfer, and a strip of a wide raster
        # (tens of MB) slower to fetch than the timeout would be fetched again and again
        return future.result()  # raises the task's error, if it failed

    def cancel(self) -> None:
        self.client.cancel(list(self.pending))


def segment_on_cluster(
    client: Client,
    predictor: PredictorSpec,
    jobs: Sequence[RasterJob],
    classes: Sequence[Mapping[str, Any]],
    progress: ProgressFn = no_progress,
    is_cancelled: CancelFn = never_cancelled,
) -> list[SegmentResult]:
    """Segment every job's raster on the cluster; each output appears complete, or (error, cancel) not at all.

    The strips of all rasters flow through the cluster in one ordered stream, so workers keep busy across
    the boundary between two rasters, while the client writes one raster at a time.
    """
    run = uuid.uuid4().hex[:8]  # names this run's tasks and plugin: runs may share a cluster
    panels = [job.source.grid.panels() for job in jobs]
    strips = [
        (replace(job.source, grid=panel.grid), index)
        for job, job_panels in zip(jobs, panels, strict=True)
        for panel in job_panels
        for index in range(panel.grid.strips)
    ]
    stream = _StripStream(client, strips, run)
    total = sum(panel.grid.tiles for job_panels in panels for panel in job_panels)
    done = 0
    results = []
    workers = len(client.scheduler_info()["workers"])
    progress(0.0, f"segmenting {len(jobs)} raster(s), {total} tiles, on {workers} worker(s)")
    client.register_plugin(PredictorPlugin(predictor), name=_plugin_name(run))
    try:
        for number, job in enumerate(jobs, start=1):
            with job.source.open_reader() as reader:
                assembler = StripAssembler(
                    reader,
                    job.output,
                    classes=classes,
                    grid=job.source.grid,
                    confidence=job.confidence,
                    entropy=job.entropy,
                    overwrite=job.overwrite,
                    metadata=job.metadata,
                )
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), assembler:
                strip_count, strip = sum(panel.grid.strips for panel in assembler.panels), 0
                for panel in assembler.panels:
                    assembler.begin(panel)
                    for _ in range(panel.grid.strips):
                        assembler.add(stream.next(is_cancelled))
                        done, strip = done + len(panel.grid.lefts), strip + 1
                        progress(0.95 * done / total, f"raster {number}/{len(jobs)}: strip {strip}/{strip_count}")
            results.append(assembler.result())
    finally:
        stream.cancel()
        with suppress(OSError):  # a scheduler already gone has no plugin left to remove
            client.unregister_worker_plugin(_plugin_name(run))
    progress(1.0, "done")
    return results
