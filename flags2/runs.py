"""One run of a variant: what ``main`` sets up around ``download_many``, and
what the reader's code reaches below it without being handed it.

A ``Run`` owns, for the length of a ``with`` block:

- where flags go and what ``save_flag`` saved (the report counts the files
  on disk, however the variant's loop ended), and why each error happened;
- the signals: SIGINT and SIGTERM stop the run (see ``Run.stop``), and so
  does a resource every download needs running out (no thread, no file
  handle), with advice, and a reader of our output going away (``| head``);
- stdout and stderr (``streams.guarded_streams``): a closed or failing
  stream, or text its encoding lacks, never ends a download;
- the bundled server it started, the HTTP stack loaded before the clock
  starts, with ``--http2`` the server's stream limit, the server's /stats
  for this run's requests (the ``RUN_HEADER`` each of them carries);
- the exit status.

The variants never name it. ``main`` makes it current (a context variable);
the clients made during the run find it, and so does ``save_flag``. Threads
that do not inherit the context find it through what the run gave them: a
threadpool worker through the run's HTTP transport, an event loop's
executor threads through the run's thread pool (``Run.attach_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import importlib
import secrets
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flags2.codes import country_codes
from flags2.failures import (
    NO_THREAD_ADVICE,
    NoThreadError,
    error_cause,
    exhaustion_advice,
    forget_traceback,
    raised_by_thread_start,
    short_cause,
)
from flags2.files import new_file_mode, write_atomically
from flags2.h2settings import CLIENT_STREAMS, NoH2c, server_streams
from flags2.options import printable_url
from flags2.servers import (
    BUNDLED_MODES,
    LOOPBACK_NAMES,
    SERVER_PATH,
    ServerStartError,
    bundled_server,
    server_command,
    server_stats,
    start_command,
)
from flags2.streams import guarded_streams

P = ParamSpec('P')
T = TypeVar('T')

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_OK, EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143
# A reader of our output went away: what a shell shows for a program SIGPIPE
# ended (128 + 13). Python ignores SIGPIPE; the run stops instead.
EXIT_CLOSED_PIPE = 141

# Names the run on each of its requests: the bundled server's /stats?run=
# counts them apart from another run's, so the Peak line is this run's own.
RUN_HEADER = 'x-flags2-run'

CURRENT: contextvars.ContextVar[Run] = contextvars.ContextVar('flags2_run')


class RunStopped(KeyboardInterrupt):
    """A request cut short because the run is stopping.

    A KeyboardInterrupt, so the book's ``except KeyboardInterrupt: break``
    ends a variant's loop: in the thread that waits (sequential) or, carried
    by a future, in the thread that collects the results (threadpool).
    """


def current_run() -> Run:
    try:
        return CURRENT.get()
    except LookupError:
        raise RuntimeError('no flags2 run: call download_many inside a flags2.runs.Run '
                           '(flags2_common.main makes one)') from None


@dataclass(frozen=True)
class Peak:
    requests: int
    connections: int | None  # None from a server that does not count them


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def signal_name(signum: int) -> str:
    return 'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name


class Run:
    """One run: see the module's docstring.

    ``label`` and ``base_url`` name the server (a label with a bundled mode
    gets the bundled server when nothing answers at its port); ``dest`` and
    ``timeout`` are what ``save_flag`` and the clients use, and ``http2``
    whether the clients speak HTTP/2. Signals are caught
    in the main thread. ``command_line``: once the run is over they are ignored
    to the exit, so one during the exit changes nothing; otherwise (main
    called in-process, as the tests do) the previous handlers come back.
    """

    def __init__(self, dest: Path, timeout: float, *, label: str = '', base_url: str = '',
                 http2: bool = False, command_line: bool = False) -> None:
        self.dest, self.timeout = dest, timeout
        self.label, self.base_url = label, base_url
        self.http2 = http2
        self.server_streams = CLIENT_STREAMS  # on one connection, read when http2 starts
        self.run_id = secrets.token_hex(8)  # sent as RUN_HEADER
        self.command_line = command_line
        self.signum: signal.Signals | None = None  # the first SIGINT or SIGTERM
        self.advice = ''  # what to do about a resource that ran out
        self.closed_pipe = False  # a reader of stdout or stderr went away
        self.saved = 0
        self.causes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.waiting = False  # the main thread waits on the network, in a transport
        self.stop_callbacks: list[Callable[[], None]] = []
        self.previous_handlers: dict[signal.Signals, Any] = {}
        self.stack = contextlib.ExitStack()
        self.token: contextvars.Token[Run] | None = None
        self.file_mode = 0o644
        self.not_flags = ''  # the first URL of a run whose every code got 404

    # ------------------------------------------------------ the with block

    def __enter__(self) -> Run:
        self.token = CURRENT.set(self)
        self.file_mode = new_file_mode()  # before any thread of the run starts
        self.stack.enter_context(guarded_streams(self.on_closed_pipe))  # restored last
        if in_main_thread():  # where Python lets a handler be set
            for signum in STOP_SIGNALS:
                self.previous_handlers[signum] = signal.signal(signum, self.on_signal)
        try:
            with self.interruptible():  # starting may be cut short
                self.start_server()
                preload_http_stack()
                self.read_server_streams()
                server_stats(self.base_url, reset=True)
        except KeyboardInterrupt:
            pass  # stopping: download skips download_many, the report says so
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stack.close()  # the bundled server, then stdout and stderr
        for signum, handler in self.previous_handlers.items():
            if self.command_line:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, handler)
        if self.token is not None:
            CURRENT.reset(self.token)
            self.token = None

    def start_server(self) -> None:
        mode = BUNDLED_MODES.get(self.label)
        try:
            started = self.stack.enter_context(bundled_server(self.base_url, mode))
        except ServerStartError as exc:
            print(f'*** Could not start the bundled flags server: {exc}', file=sys.stderr)
            raise SystemExit(EXIT_ERRORS) from None
        if started is not None:
            print(f'Started the bundled flags server for {self.label} on port '
                  f'{started.port}; it stops once no run uses it.')

    def read_server_streams(self) -> None:
        if not self.http2:
            return
        try:
            self.server_streams = server_streams(self.base_url, self.timeout)
        except NoH2c as exc:
            print(f'*** The server at {printable_url(self.base_url)} does not speak HTTP/2 '
                  f'without TLS ({exc}): run without --http2.', file=sys.stderr)
            raise SystemExit(EXIT_ERRORS) from None

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        """Around download_many: a stop ends the block, not main.

        Nothing is lost by that: the report takes the flags from the run's
        record. A thread that could not start (the threadpool's submit) stops
        the run with advice.
        """
        try:
            yield  # a run stopped while starting: the first request ends download_many
        except (KeyboardInterrupt, asyncio.CancelledError):
            if not self.stopping:
                raise
        except RuntimeError as exc:
            if not raised_by_thread_start(exc):
                raise
            self.stop(advice=NO_THREAD_ADVICE)

    # -------------------------------------------------------------- stopping

    @property
    def stopping(self) -> bool:
        return self.signum is not None or bool(self.advice) or self.closed_pipe

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum))

    def on_closed_pipe(self) -> None:
        """A reader of our output went away: stop, as SIGPIPE would have stopped
        us. Called from a write, in any thread, never while the main thread
        waits on the network, so no RunStopped is wanted here: the next
        request of the run raises it."""
        with contextlib.suppress(RunStopped):
            self.stop(closed_pipe=True)

    def stop(self, signum: signal.Signals | None = None, advice: str = '',
             closed_pipe: bool = False) -> None:
        """Stop the run, once: the first reason wins, later ones change nothing.

        The main thread, if it waits on the network, gets RunStopped at once;
        the clients of the run cut their other requests short (a transport
        shuts its sockets down, an event loop cancels its downloads). Saving
        and counting are never cut: a flag on disk is always in the report.
        """
        if self.stopping:
            return
        self.signum, self.advice, self.closed_pipe = signum, advice, closed_pipe
        for callback in list(self.stop_callbacks):
            callback()
        if self.waiting and in_main_thread():
            raise RunStopped

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the run stops (now, if it has)."""
        self.stop_callbacks.append(callback)
        if self.stopping:
            callback()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A wait on the network: in the main thread a stop raises RunStopped here.

        In any thread, a run that is stopping raises it at once.
        """
        if self.stopping:
            raise RunStopped
        if not in_main_thread():
            yield
            return
        previous, self.waiting = self.waiting, True
        try:
            yield
        finally:
            self.waiting = previous

    # ------------------------------------------------- what the reader's code calls

    def save(self, img: bytes, filename: str) -> None:
        """Write a flag into ``dest`` (atomically) and count it.

        ``filename`` must name a file in ``dest``: flags3 takes it from what
        the server says, and a country named '../x' must not escape.
        """
        if filename in ('', '.', '..') or Path(filename).name != filename or '\0' in filename:
            raise OSError(errno.EINVAL, 'not a plain file name', filename)
        write_atomically(self.dest / filename, img, self.file_mode)
        with self.lock:
            self.saved += 1

    def record_error(self, exc: BaseException) -> str:
        """Count why a download failed; return the words for it.

        A failure every other download would meet too (no thread, no file
        handle) stops the run. The traceback is dropped: it would keep the
        frames, and the body, of a finished download until the run ends.
        """
        if advice := exhaustion_advice(exc):
            self.stop(advice=advice)
        cause = error_cause(exc)
        forget_traceback(exc)
        with self.lock:
            self.causes[short_cause(cause)] += 1
        return cause

    # -------------------------------------------------------------- threads

    def bind_thread(self) -> None:
        """Make this run current in this thread (a threadpool worker, say)."""
        if CURRENT.get(None) is not self:
            CURRENT.set(self)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """An event loop downloading for this run: a stop cancels its downloads,
        and its default executor (asyncio.to_thread, run_in_executor(None, ...))
        runs in threads that know the run."""
        spared = asyncio.current_task(loop)  # the supervisor, which counts the rest

        def cancel_downloads() -> None:
            for task in asyncio.all_tasks(loop):
                if task is not spared:
                    task.cancel()

        def on_stop() -> None:  # from the signal handler, or a thread
            # RuntimeError: the loop is closed, download_many is over (a stop
            # during the report): nothing is left to cancel.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(cancel_downloads)

        loop.set_default_executor(RunThreads(self))
        self.on_stop(on_stop)

    # --------------------------------------------------------------- the end

    def peak(self) -> Peak | None:
        """The most of this run's requests in flight at a bundled server at once,
        and how many connections carried them; None if the run stopped."""
        if self.stopping:
            return None
        with contextlib.suppress(KeyboardInterrupt), self.interruptible():
            stats = server_stats(self.base_url, run=self.run_id)
            if stats is None:
                return None
            connections = stats.get('connections')
            return Peak(stats['peak_in_flight'],
                        connections if isinstance(connections, int) else None)
        return None

    def note_not_found(self, cc_list: list[str], not_found: int) -> None:
        """Take a run whose every code got 404 Not Found, real countries' among
        them, for what it is: not a flags server (a static server over another
        folder, a URL without /flags), an error. A flags server has every
        country's flag; a run of only unknown codes (ZZ) is no sign."""
        if (not self.stopping and not self.saved and not self.causes and cc_list
                and not_found == len(cc_list) and not set(cc_list).isdisjoint(country_codes())):
            cc = cc_list[0].lower()
            self.not_flags = f'{self.base_url}/{cc}/{cc}.gif'  # as the variants ask

    def not_flags_hint(self) -> str | None:
        """What ``note_not_found`` found, in a line: where, and how to start the
        bundled server (only where it could run: plain http on loopback)."""
        if not self.not_flags:
            return None
        line = (f'{printable_url(self.base_url)} does not answer like a flags server: every '
                f'code got 404 Not Found (the first: {printable_url(self.not_flags)}).')
        parts = urlsplit(self.base_url)
        if parts.scheme != 'http' or parts.hostname not in LOOPBACK_NAMES:
            return line
        mode = BUNDLED_MODES.get(self.label, 'local')
        port = parts.port or 80
        host = f'[{parts.hostname}]' if ':' in parts.hostname else parts.hostname
        return (f'{line} The bundled one serves http://{host}:{port}{SERVER_PATH} once '
                f'started with: {server_command(mode, port)}')

    def exit_status(self) -> int:
        if self.advice or self.not_flags:
            return EXIT_ERRORS
        if self.closed_pipe:
            return EXIT_CLOSED_PIPE
        if self.signum is not None:
            return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED
        return EXIT_ERRORS if self.causes else EXIT_OK

    def no_answer_hint(self) -> str:
        """What to do when no server answered any request: start the bundled
        server where it can serve this URL (in the label's mode, at its port,
        as the reader would type it). Elsewhere (REMOTE, an https or non-/flags
        URL) it cannot help, and the hint only says where nothing answered."""
        if command := start_command(self.label, self.base_url):
            return f'No server answered. Start the bundled one with: {command}'
        where = f'No server answered at {printable_url(self.base_url)}'
        if self.label in BUNDLED_MODES:  # FLAGS2_<LABEL>_URL moved it out of its reach
            return (f'{where}; the bundled server serves only http://localhost:PORT/flags, '
                    f'so none was started for {self.label}.')
        return f'{where}.'

    def stopped_line(self, done: int, total: int) -> str | None:
        """'Interrupted by Ctrl-C: 12 of 194 codes done, ...', or None."""
        if self.advice:
            how = 'Stopped'
        elif self.closed_pipe:
            how = 'Stopped by a closed pipe'
        elif self.signum is not None:
            how = f'Interrupted by {signal_name(self.signum)}'
        else:
            return None
        return f'{how}: {done} of {total} codes done, the rest cancelled.'


class RunThreads(ThreadPoolExecutor):
    """An event loop's default executor during a run.

    Its threads know the run (``save_flag`` there finds it), and a thread
    that cannot start is a NoThreadError: an OSError the variants report as
    that code's error, which stops the run with advice.
    """

    def __init__(self, run: Run) -> None:
        super().__init__(thread_name_prefix='flags2-save', initializer=run.bind_thread)
        self.closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError as exc:
            if self.closed:  # the other RuntimeError of submit: after shutdown
                raise
            raise NoThreadError() from exc

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.closed = True
        super().shutdown(wait, cancel_futures=cancel_futures)


def preload_http_stack() -> None:
    """Import now what httpx2 imports when it builds its first connection pool.

    httpcore2, anyio and its streams take ~25 ms on a 2-core VM: without
    this, the first request of a run pays for them, inside Elapsed, which the
    book's figures (httpx then imported httpcore up front) never included.
    An AsyncClient's first request also imports anyio's asyncio backend and
    its socket streams (another ~15 ms), so those come now too.
    """
    import httpcore2  # noqa: F401

    with contextlib.suppress(ImportError):  # if anyio moves it: slower, never broken
        importlib.import_module(ANYIO_ASYNCIO_BACKEND)


# A private name of a dependency (the other place is clients.H11_PATH): anyio
# loads this module on first use and has no public way to load it sooner.
# tests/test_clients.py checks that it is still there.
ANYIO_ASYNCIO_BACKEND = 'anyio._backends._asyncio'
