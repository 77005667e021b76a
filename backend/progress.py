"""The progress/cancel interface shared by every long backend call.

Long calls take ``progress(fraction, message)`` and ``is_cancelled()`` callables and
raise :class:`Cancelled`; the CLI passes a progress bar, Processing its feedback, a
QgsTask its own methods.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):
    """The user cancelled; whatever was being written has been removed."""


def no_progress(fraction: float, message: str) -> None:
    """Progress sink for callers that do not care."""


def never_cancelled() -> bool:
    return False


class CancelToken:
    """A thread-safe flag: ``cancel()`` from one thread, ``is_cancelled()`` from another."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_cancelled(self) -> bool:
        return self._event.is_set()

    __call__ = is_cancelled


def check_cancelled(is_cancelled: CancelFn) -> None:
    if is_cancelled():
        raise Cancelled("cancelled")


def sub_progress(progress: ProgressFn, start: float, end: float) -> ProgressFn:
    """Map a sub-task's 0..1 onto ``start..end`` of the parent's progress."""

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report
