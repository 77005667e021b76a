"""Segment on a Dask distributed cluster: strips of tiles are the tasks, one writer assembles them in order.

Each worker builds the predictor once (a worker plugin; the model folder and adapter checkpoint are
paths every worker must reach) and opens the raster by path for each strip it is given. :class:`DaskStrips`
is a strip executor like the single process's ``LocalStrips``: the client's ``segment_jobs`` adds the
strips' weighted probability sums in the same order either way, so the outputs are the same bits. Only a
few strips per worker are in flight at a time, so memory stays bounded however large the raster or long
the list of rasters.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from distributed import Client, Future, LocalCluster, WorkerPlugin, get_worker, wait

from backend.errors import BadInput
from backend.progress import CancelFn, check_cancelled
from backend.segmentation.sliding_window import GDAL_CACHE_MB, Predict, Strip, StripSource, StripSums

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
    precision: str = "fp32"  # int8: the onnx engine's quantised MatMuls (backend.contract.PRECISIONS)


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
                    model,
                    spec.engine,
                    spec.tile,
                    spec.batch_size,
                    self._threads,
                    device=spec.device,
                    precision=spec.precision,
                )
            return self._predict


def _plugin_name(run: str) -> str:
    return f"crossearth-predictor-{run}"


def _predict_strip_task(source: StripSource, index: int, plugin_name: str) -> StripSums:
    """Runs on a worker: read and predict one strip of tiles."""
    predict = get_worker().plugins[plugin_name].predictor()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), source.open_reader() as reader:
        return source.sum(source.read(reader, index), predict)


class DaskStrips:
    """The strip executor of a Dask cluster: submits strips in order, never more than a few per worker ahead of
    the one the client waits for, so memory stays bounded however long the list of rasters.

    Each worker builds the predictor of ``predictor`` once (a worker plugin registered for the run).
    """

    carries_edges = False  # strips run apart on the workers: the tiles across a panel edge are predicted twice

    def __init__(self, client: Client, predictor: PredictorSpec) -> None:
        self.client = client
        self.predictor = predictor

    def where(self) -> str:
        return f"on {len(self.client.scheduler_info()['workers'])} worker(s)"

    def run(self, strips: Sequence[Strip], is_cancelled: CancelFn) -> Generator[StripSums]:
        run = uuid.uuid4().hex[:8]  # names this run's tasks and plugin: runs may share a cluster
        in_flight = STRIPS_IN_FLIGHT_PER_WORKER * max(1, len(self.client.scheduler_info()["workers"]))
        pending: deque[Future] = deque()
        self.client.register_plugin(PredictorPlugin(self.predictor), name=_plugin_name(run))
        try:
            for number in range(len(strips)):
                while len(pending) < in_flight and number + len(pending) < len(strips):
                    source, index = strips[number + len(pending)]
                    pending.append(
                        self.client.submit(
                            _predict_strip_task,
                            source,
                            index,
                            _plugin_name(run),
                            key=f"crossearth-strip-{run}-{number + len(pending)}",
                            retries=RETRIES,
                            pure=False,
                        )
                    )
                future = pending.popleft()
                while not future.done():
                    check_cancelled(is_cancelled)
                    with suppress(TimeoutError):
                        wait(future, timeout=POLL_SECONDS)
                check_cancelled(is_cancelled)
                # no timeout here: a result(timeout) that expires drops the transfer, and a strip of a wide raster
                # (tens of MB) slower to fetch than the timeout would be fetched again and again
                yield future.result()  # raises the task's error, if it failed
        finally:
            self.client.cancel(list(pending))
            with suppress(OSError):  # a scheduler already gone has no plugin left to remove
                self.client.unregister_worker_plugin(_plugin_name(run))
