"""What Ctrl-C and SIGTERM need in each variant, so a run ends within a second
with the counts so far, the report and exit status 130 (Ctrl-C) or 143 (SIGTERM).

One handler serves the whole run (``signals_caught``, installed by main). It
raises KeyboardInterrupt only inside ``interruptible`` blocks: the waits on
the network. Anywhere else -- saving a flag, counting it, shutting down -- a
signal is noted and takes effect at the next wait, so a flag on disk is
always counted and a counted flag always on disk. Only the first signal
counts; a second one during shutdown changes nothing. In asyncio the signal
cancels the downloads instead (``ctrl_c_cancels``).

A run also stops this way when a resource every download needs has run out
(``stop_run``): no thread can start, or no file can be opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

import tqdm

T = TypeVar('T')

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class RunState:
    """Why the run is stopping (None: it is not), and how the main thread takes it."""

    signum: signal.Signals | None = None  # the first SIGINT or SIGTERM
    advice: str = ''  # set by stop_run: what to do about the exhausted resource
    raising: bool = False  # the main thread is inside an interruptible block
    active: bool = False  # inside signals_caught: a run of main
    on_stop: list[Callable[[], None]] = field(default_factory=list)  # asyncio: cancel

    @property
    def stopping(self) -> bool:
        return self.signum is not None or bool(self.advice)


STATE = RunState()


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def stop(signum: signal.Signals | None = None, advice: str = '') -> None:
    """Stop the run, once: the first reason wins and later ones change nothing.

    Outside a run of main (download_many called by itself) nothing stops.
    """
    if STATE.stopping or not STATE.active:
        return
    STATE.signum, STATE.advice = signum, advice
    for callback in STATE.on_stop:
        callback()
    if STATE.raising and in_main_thread():
        raise KeyboardInterrupt


def signal_name(signum: int) -> str:
    return 'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name


def on_signal(signum: int, frame: FrameType | None) -> None:
    stop(signal.Signals(signum))


def stop_run(advice: str) -> None:
    """End the run as a signal would, then exit 1 with ``advice`` (e.g. 'lower -m')."""
    stop(advice=advice)


@contextlib.contextmanager
def signals_caught(for_good: bool) -> Iterator[RunState]:
    """main: SIGINT and SIGTERM stop the run (see the module's docstring).

    ``for_good`` (a run from the command line): once the run is over both
    signals are ignored to the end, so one during the report or the exit
    changes nothing (at exit Python resets its handlers to the default, which
    kills; it leaves SIG_IGN alone). Otherwise (main called in-process, as
    the tests do) the previous handlers come back, unless a signal came.
    """
    STATE.signum, STATE.advice, STATE.raising, STATE.active = None, '', False, True
    previous = {}
    try:
        if in_main_thread():
            previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
        yield STATE
    finally:
        for signum, handler in previous.items():
            if for_good:
                signal.signal(signum, signal.SIG_IGN)
            elif STATE.signum is None:
                signal.signal(signum, handler)
        STATE.signum, STATE.advice, STATE.active = None, '', False


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A wait a signal may cut short with KeyboardInterrupt (in the main thread).

    A signal noted before the block starts is raised at once.
    """
    if not in_main_thread():
        yield
        return
    previous = STATE.raising
    STATE.raising = True
    try:
        if STATE.stopping:
            raise KeyboardInterrupt
        yield
    finally:
        STATE.raising = previous


def interruptibly(iterable: Iterable[T]) -> Iterator[T]:
    """Iterate, each wait for the next item ``interruptible``: for as_completed."""
    iterator = iter(iterable)
    while True:
        with interruptible():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


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
    """asyncio: while the supervisor collects results, a signal cancels every download.

    Left alone, asyncio.run turns Ctrl-C into KeyboardInterrupt after
    cancelling the supervisor, and the counts so far are lost. With the
    downloads cancelled instead, the supervisor's loop still sees every one
    of them end: it counts those that finished and returns.
    """
    loop = asyncio.get_running_loop()

    def cancel_all() -> None:
        for task in tasks:
            task.cancel()

    def on_stop() -> None:  # from the signal handler, or a thread saving a flag
        loop.call_soon_threadsafe(cancel_all)

    if STATE.stopping:  # the signal came while the tasks were being made
        cancel_all()
    STATE.on_stop.append(on_stop)
    try:
        yield
    finally:
        STATE.on_stop.remove(on_stop)


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
