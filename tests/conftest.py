"""Fixtures and helpers shared by the test modules: the real bundled server on
loopback, on ephemeral ports, a way to run each variant as a user does, in a
subprocess, and the one way to run a variant's download_many in-process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from flags2_common import DownloadMany, DownloadStatus
from flags2_compare import variant_script

from flags2.clients import make_client
from flags2.runs import Run
from flags2.servers import (
    LINGER,
    FlagsServer,
    port_answers,
    start_server,
    stop_process,
    stop_server,
)

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ('sequential', 'threadpool', 'asyncio')
CONCURRENT_VARIANTS = ('threadpool', 'asyncio')
# The chapter's next listings: tested wherever a guarantee of every script is.
EVERY_VARIANT = (*VARIANTS, 'asyncio_executor', 'flags3')
STOP_GOAL = 1.0  # seconds from Ctrl-C or SIGTERM to exit

ServerFactory = Callable[..., FlagsServer]


@pytest.fixture(scope='session')
def server_factory() -> Iterator[ServerFactory]:
    """Start servers with flags2.servers.start_server; all stop when the session ends."""
    started: list[FlagsServer] = []

    def factory(mode: str, *options: str, bind: str = '127.0.0.1') -> FlagsServer:
        server = start_server(mode, *options, bind=bind)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


@pytest.fixture(scope='session')
def local_server(server_factory: ServerFactory) -> FlagsServer:
    return server_factory('local')


@pytest.fixture(scope='session')
def delay_server(server_factory: ServerFactory) -> FlagsServer:
    """Short delays, so the suite stays fast."""
    return server_factory('delay', '--delay-min', '0.01', '--delay-max', '0.05')


@pytest.fixture(scope='session')
def error_server(server_factory: ServerFactory) -> FlagsServer:
    return server_factory('error', '--delay-min', '0.01', '--delay-max', '0.03')


@pytest.fixture(scope='session')
def slow_server(server_factory: ServerFactory) -> FlagsServer:
    """Delays long enough that every request of a run overlaps at the server,
    even with 194 threads starting on a busy machine."""
    return server_factory('delay', '--delay-min', '1.0', '--delay-max', '1.1')


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def run_variant(variant: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 60) -> Result:
    proc = subprocess.run(
        [sys.executable, str(variant_script(variant)), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start(variant: str, *args: str, cwd: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A variant running as a user starts it, its output piped (to send it signals)."""
    return subprocess.Popen(
        [sys.executable, str(variant_script(variant)), *args],
        cwd=cwd, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_in_process(download_many: DownloadMany, cc_list: list[str], base_url: str,
                   verbose: bool, concur_req: int, *, dest: Path, timeout: float = 10.0
                   ) -> tuple[Counter[DownloadStatus], Run]:
    """Call a variant's ``download_many`` with the book's four arguments, inside
    a ``Run`` as ``main`` makes one (its signals, its /stats reset), without
    main's options, reports and exit: the counter it returns, and the run's
    record (``run.saved``, ``run.causes``). Unlike ``main``, it lets a stop
    (KeyboardInterrupt) through: a test sees whatever ended download_many."""
    with Run(dest, timeout, base_url=base_url) as run:
        counter = download_many(cc_list, base_url, verbose, concur_req)
    return counter, run


# For a run that only makes requests: not a folder, so a save would fail.
NO_DEST = Path(os.devnull)


def flag_url(base_url: str, cc: str) -> str:
    """The URL the variants ask for ``cc``."""
    return f'{base_url}/{cc.lower()}/{cc.lower()}.gif'


def fetch_flag(url: str, timeout: float) -> bytes:
    """One flag fetched as the sequential script does, with the real stack: the
    run's client, whose transport checks the body (size, GIF, cut short)."""
    with Run(NO_DEST, timeout), make_client(1) as client:
        resp = client.get(url, follow_redirects=True)
        resp.raise_for_status()
        return resp.content


# Each flag of a trickling server ends by --timeout + MARGIN: the goal; the
# tests allow twice that.
MARGIN = 0.25

# Runs a command and prints its peak RSS (KiB) and exit status to stderr. A
# child forked from the test process counts that process's memory (pytest's,
# over 120 MiB late in the suite) as its own until it execs: this small
# process is the one forked.
MEASURE = """
import os, subprocess, sys, threading
proc = subprocess.Popen(sys.argv[1:], stderr=subprocess.DEVNULL)
killer = threading.Timer(60, proc.kill)  # a run that never ends fails, never hangs
killer.start()
_, status, usage = os.wait4(proc.pid, 0)
killer.cancel()
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status), file=sys.stderr)
"""


def run_measured(variant: str, *args: str, cwd: Path) -> tuple[list[str], float]:
    """Run a variant as a user does: its stdout lines and its peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, '-c', MEASURE, sys.executable, str(variant_script(variant)), *args],
        cwd=cwd, capture_output=True, text=True, timeout=90)
    maxrss_kib, _status = proc.stderr.split()
    return proc.stdout.splitlines(), int(maxrss_kib) / 1024


def elapsed(lines: list[str]) -> float:
    """The run's own 'Elapsed time' (start-up not included)."""
    for line in lines:
        if match := re.fullmatch(r'Elapsed time: ([\d.]+)s', line):
            return float(match.group(1))
    raise AssertionError(f'no elapsed time in {lines}')


def http_get(url: str) -> tuple[int, bytes, str]:
    """Status, body and content type of a GET, an HTTP error status included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers['Content-Type']
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers['Content-Type']


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick from the ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port: int = sock.getsockname()[1]
    return port


def saved_codes(dest: Path) -> list[str]:
    """The codes of the files in ``dest`` (a temporary file would show up too)."""
    return sorted(p.stem for p in dest.iterdir())


def assert_valid_gifs(dest: Path) -> None:
    """Every file in ``dest`` is a whole flag GIF."""
    for path in dest.iterdir():
        assert path.suffix == '.gif', path
        with Image.open(path) as img:
            assert img.format == 'GIF'
            img.load()  # decodes every pixel: a truncated file fails here
            assert img.size == (120, 80)


def server_processes(port: int) -> list[int]:
    """PIDs of flags_server.py processes started for ``port`` (reads /proc)."""
    pids = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / 'cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        if any(arg.endswith(b'flags_server.py') for arg in cmdline) and \
                str(port).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


# Seconds within which an auto-started server is gone once no run uses it:
# its linger, and room for a loaded machine.
GONE_WITHIN = LINGER + 10


def servers_gone(port: int, within: float = GONE_WITHIN) -> bool:
    """Whether, within ``within`` seconds, ``port`` is closed and every
    flags_server.py started for it has exited (a run's lingers: servers.LINGER)."""
    deadline = time.monotonic() + within
    while port_answers('127.0.0.1', port) or server_processes(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """``python -m http.server`` over ``folder``, as a reader might have left one
    running (the book's own servers are such): its root URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1',
         '--directory', str(folder)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_answers('127.0.0.1', port):
            assert proc.poll() is None and time.monotonic() < deadline, 'http.server did not start'
            time.sleep(0.05)
        yield f'http://127.0.0.1:{port}'
    finally:
        stop_process(proc)
