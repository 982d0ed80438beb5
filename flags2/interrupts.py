"""What Ctrl-C needs in each variant, so a run ends within a second with the
counts so far, the report and exit status 130.

Each variant's loop notices the interruption (KeyboardInterrupt, or in
asyncio a cancelled download), marks its counter interrupted, counts what
had finished, and returns to main().
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Iterable, Iterator
from concurrent.futures import Future
from types import FrameType
from typing import Any, TypeVar

import tqdm

T = TypeVar('T')


def freeze_progress_bar(progress: Iterable[Any], done: int) -> None:
    """Stop a tqdm bar at ``done``, ending its line so the report starts on a fresh one.

    Closing the bar freezes it: the cancellations that follow do not move it.
    Does nothing when ``progress`` is not a bar (with -v there is none).
    """
    if isinstance(progress, tqdm.tqdm) and not progress.disable:
        progress.n = done  # tqdm updates n only when it redraws
        progress.close()


def uncounted_successes(futures: Iterable[Future[T]]) -> Iterator[T]:
    """Threadpool, after Ctrl-C: the results of downloads that ended well but were
    not counted yet.

    Their flags are saved, so the report counts them. Failures are left out:
    closing the client is what cut most of them short.
    """
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            yield future.result()


@contextlib.contextmanager
def ctrl_c_cancels(tasks: list[asyncio.Task[Any]]) -> Iterator[None]:
    """asyncio: while the supervisor collects results, Ctrl-C cancels every download.

    Left alone, asyncio.run turns Ctrl-C into KeyboardInterrupt after
    cancelling the supervisor, and the counts so far are lost. With the
    downloads cancelled instead, the supervisor's loop still sees every one
    of them end: it counts those that finished and returns.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread gets signals
        return
    loop = asyncio.get_running_loop()

    def cancel_all() -> None:
        for task in tasks:
            task.cancel()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(cancel_all)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def finish_even_if_cancelled(aw: Awaitable[T]) -> T:
    """asyncio: let ``aw`` finish even if Ctrl-C cancels the task awaiting it.

    For saving a flag: once the write has started in its thread, it completes
    whatever the task does, so the download is counted as done, not cancelled.
    """
    inner = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        result = await inner
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return result
