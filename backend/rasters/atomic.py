"""Write outputs to a temporary file beside the target and rename only when complete."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backend.errors import BadInput


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output without ``overwrite`` and an unwritable folder, before any work."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise BadInput(f"{target}: output exists (use --overwrite to replace it)")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise BadInput(f"{target}: output folder {folder} is not writable")
    return target


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``path``, on any error delete it.

    The temporary name keeps the suffix so that GDAL picks the right driver.
    """
    target = check_writable(path, overwrite)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.partial{target.suffix}")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # writers such as safetensors create files readable by the owner only
        os.replace(tmp, target)
    except BaseException:
        for leftover in tmp.parent.glob(tmp.name + "*"):  # GDAL side-cars (.aux.xml, .ovr)
            leftover.unlink(missing_ok=True)
        raise
