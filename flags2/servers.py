"""Starting, stopping and asking the bundled flags server: one way, used by
the scripts' auto-start, flags2_compare.py, the tests and the benchmarks.

A server is ``python flags_server.py --mode MODE --port PORT`` in a child
process. It prints ``MODE mode serving http://HOST:PORT/flags`` and then
``Ready``; ``start_server`` waits for both, so the port is known (port 0 lets
the kernel pick one) and the server answers before anyone asks. Its log (its
stderr) goes to an unnamed temporary file, never to a pipe: nobody reads a
pipe during a run, and a server whose pipe filled up would freeze.

A server started for a run (``bundled_server``) is shared: another run that
finds it answering uses it, so it must outlive the run that started it for
as long as another uses it. It is started with ``--linger``: the run's end
closes its stdin, and the server goes on serving until no request has come
for LINGER seconds, then exits by itself. Runs started together all find the
port free and each starts a server: one listens, the others cannot, and
their runs use the one that does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from flags2.options import printable_url

# Beside this package both in a checkout and in site-packages (a wheel
# installs flags_server.py as a top-level module).
SERVER_SCRIPT = Path(__file__).resolve().parent.parent / 'flags_server.py'
# What an installed package has instead (pyproject.toml's [project.scripts]).
SERVER_CONSOLE_SCRIPT = 'flags-server'
# The one path the bundled server serves flags under.
SERVER_PATH = '/flags'
LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1')
# The labels the bundled server can stand in for, and its mode for each.
BUNDLED_MODES = {'LOCAL': 'local', 'DELAY': 'delay', 'ERROR': 'error'}
STOP_GRACE = 3.0  # seconds a server gets to exit after SIGTERM before SIGKILL
# Seconds a server started for a run goes on serving once no run uses it: its
# ``--linger`` (another run may find it between two of ours, or start at once).
LINGER = 2.0
# Seconds a run waits for the server another run started on the same port at
# the same moment: it is listening already when ours fails to (it bound first).
STARTING_WAIT = 3.0
# What each bundled mode does, for --help (flags_server.py's defaults; a test
# keeps the two in step).
MODE_WORDS = {
    'local': 'answers at once',
    'delay': 'waits 0.2 to 0.8 s before each answer',
    'error': "waits like DELAY, then answers 25% of the flags with 418 I'm a Teapot",
}


class ServerStartError(Exception):
    """flags_server.py exited before it was ready: its last words, and what to do."""

    def __init__(self, cause: str, mode: str, port: int) -> None:
        super().__init__(cause, mode, port)
        self.cause, self.mode, self.port = cause, mode, port

    def __str__(self) -> str:
        return (f'{self.cause}. Free port {self.port}, or start the server by hand: '
                f'{server_command(self.mode, self.port)}')


def servers_help(servers: Mapping[str, str], setting: str) -> str:
    """What --help says of the servers: which labels the bundled server stands
    in for and what each does, at the URLs this run would use."""
    bundled = [label for label in servers if label in BUNDLED_MODES]
    url = {label: printable_url(servers[label]) for label in servers}
    modes = '; '.join(f'{label} ({url[label]}) {MODE_WORDS[BUNDLED_MODES[label]]}'
                      for label in bundled)
    others = [f'{label} ({url[label]})' for label in servers if label not in BUNDLED_MODES]
    settings = [setting.format(label) for label in servers]
    return (f'{and_list(bundled)} are the bundled flags server ({SERVER_SCRIPT.name}), '
            'started for the run when nothing answers at its port, and stopped once no '
            'run uses it: '
            f'{modes}. {and_list(others)} is not bundled: nothing is started for it. '
            f'{and_list(settings)} move a label. HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and '
            'NO_PROXY work as in httpx2.')


def and_list(words: list[str]) -> str:
    return ' and '.join(filter(None, [', '.join(words[:-1]), *words[-1:]]))


def server_command(mode: str, port: int) -> str:
    """The command that starts the bundled server for ``mode`` at ``port``, as the
    reader in front of us would type it: the way they started this script.

    A script run as a file (``python flags2_asyncio.py``) names flags_server.py
    beside it, as they named theirs; a console script of an installed package
    (``flags2-asyncio``) names the ``flags-server`` beside it. Otherwise (a
    test, ``python -m``) the file this package was installed with.
    """
    args = f'--mode {mode} --port {port}'
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started is not None and started.suffix == '.py':
        beside = started.with_name(SERVER_SCRIPT.name)
        if beside.is_file():
            return f'{python_command()} {shlex.quote(str(beside))} {args}'
    elif started is not None:
        console = started.with_name(SERVER_CONSOLE_SCRIPT + started.suffix)  # .exe on Windows
        if console.is_file():
            return f'{on_path_as(SERVER_CONSOLE_SCRIPT, console)} {args}'
    return f'{python_command()} {shlex.quote(str(SERVER_SCRIPT))} {args}'


def python_command() -> str:
    """``python`` when that is this interpreter (an active venv), else its path."""
    return on_path_as('python', Path(sys.executable))


def on_path_as(name: str, path: Path) -> str:
    """``name`` if the shell finds ``path`` under it, else the path itself.

    The paths are compared as they are, not resolved: a venv's python is a
    link to the system's, which lacks the venv's packages.
    """
    found = shutil.which(name)
    if found is not None and os.path.abspath(found) == os.path.abspath(path):
        return name
    return shlex.quote(str(path))


@dataclass
class FlagsServer:
    """A running flags_server.py process serving one mode."""

    proc: subprocess.Popen[str]
    mode: str
    url: str  # the base URL of its flags: http://HOST:PORT/flags
    log: IO[bytes]  # its stderr: an unnamed file, gone when closed

    def log_text(self) -> str:
        """What the server has logged so far."""
        return read_log(self.log)

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def get_json(self, path: str) -> Any:
        """GET ``path`` (e.g. '/stats') from this server, decoded."""
        return server_json(self.url, path, timeout=5)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json('/stats')
        return data

    def reset(self) -> None:
        self.get_json('/stats/reset')


def start_server(mode: str, *options: str, port: int = 0, bind: str = '127.0.0.1',
                 tied: bool = False, linger: float | None = None) -> FlagsServer:
    """Start flags_server.py for ``mode`` and wait until it is ready.

    ``options`` go to flags_server.py as they are (``--delay-min 0.01``...).
    ``tied``: the server exits when our end of its stdin closes, so it cannot
    outlive us, even if we are killed outright; ``linger`` seconds after its
    last request, if given (``release_server``).
    """
    argv = [sys.executable, str(SERVER_SCRIPT), '--mode', mode, '--port', str(port),
            '--bind', bind, *options]
    if tied:
        argv.append('--exit-with-stdin')
        if linger is not None:
            argv.extend(['--linger', str(linger)])
    log = tempfile.TemporaryFile(prefix='flags_server-', suffix='.log')  # noqa: SIM115 -- lives as long as the server
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if tied else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True)  # Ctrl-C at the terminal reaches us; we stop the child
    except BaseException:
        log.close()
        raise
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "DELAY mode serving http://127.0.0.1:PORT/flags"
    ready = proc.stdout.readline()
    if not ready.startswith('Ready'):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE)  # it is exiting: let it finish its last words
        stop_process(proc)
        lines = read_log(log, tail=4096).strip().splitlines()
        log.close()
        raise ServerStartError(lines[-1] if lines else f'exit status {proc.returncode}',
                               mode, port)
    # The server writes nothing more on stdout: closing our end now leaves no
    # pipe that could fill up, whatever the run does.
    proc.stdout.close()
    return FlagsServer(proc, mode, first.split()[-1], log)


def read_log(log: IO[bytes], tail: int | None = None) -> str:
    """The log, or its last ``tail`` bytes (a long log need not fit in memory)."""
    size = log.seek(0, 2)
    log.seek(0 if tail is None else max(0, size - tail))
    return log.read().decode(errors='replace')


def stop_server(server: FlagsServer) -> None:
    stop_process(server.proc)
    server.log.close()


def release_server(server: FlagsServer) -> None:
    """Let a server started with ``linger`` go on without us: close its stdin,
    so it exits once no request has come for its linger, and our copy of its
    log (the file goes when the server's copy does). Not waited for: a thread
    reaps it when it exits, or, if we exit first, the system does.
    """
    proc = server.proc
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    server.log.close()
    threading.Thread(target=proc.wait, name='flags2-server-reaper', daemon=True).start()


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a child: close its stdin (a tied server exits), SIGTERM, then SIGKILL."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):  # after it exited: nothing blocks on them
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


@contextlib.contextmanager
def running_server(mode: str, *options: str, port: int = 0, bind: str = '127.0.0.1',
                   tied: bool = False) -> Iterator[FlagsServer]:
    """``start_server`` for the length of a ``with`` block; stopped however it ends."""
    server = start_server(mode, *options, port=port, bind=bind, tied=tied)
    try:
        yield server
    finally:
        stop_server(server)


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def bundled_port(base_url: str) -> int | None:
    """The port at which the bundled server could serve ``base_url``, or None.

    It speaks plain http, on loopback, at an explicit port, with its flags
    under /flags: anything else it would answer with TLS errors or 404s.
    """
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme != 'http' or parts.hostname not in LOOPBACK_NAMES
            or parts.path.rstrip('/') != SERVER_PATH):
        return None
    return port


@contextlib.contextmanager
def bundled_server(base_url: str, mode: str | None) -> Iterator[FlagsServer | None]:
    """Start the bundled server in ``mode`` at ``base_url``'s port if nothing answers there.

    Yields the server it started, or None when it started none (no mode, a
    URL the bundled server cannot serve, something already answers, or a
    flags server another run started at the same moment answers after ours
    could not listen). The one it started lingers after the block: see the
    module's docstring.
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or '', bundled_port(base_url)
    if mode is None or port is None or port_answers(host, port):
        yield None
        return
    bind = 'localhost' if host == 'localhost' else host
    try:
        server = start_server(mode, port=port, bind=bind, tied=True, linger=LINGER)
    except ServerStartError:
        if not flags_server_answers(base_url, STARTING_WAIT):
            raise
        yield None  # another run's, started with ours: shared
        return
    try:
        yield server
    finally:
        release_server(server)


def flags_server_answers(base_url: str, wait: float) -> bool:
    """Whether a bundled server answers its /stats at ``base_url`` within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while server_stats(base_url) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def start_command(label: str, base_url: str) -> str | None:
    """The command that starts the bundled server where it can serve ``base_url``
    (in the label's mode; local for a URL given with -s), or None where it cannot."""
    port = bundled_port(base_url)
    return None if port is None else server_command(BUNDLED_MODES.get(label, 'local'), port)


def server_json(base_url: str, path: str, timeout: float = 1) -> Any:
    """GET ``path`` from the root of the server of ``base_url``, decoded from JSON.

    None for a server off loopback (only the bundled one has these pages,
    and a run must not send extra requests to a real site) and for anything
    that is not an answer in JSON.
    """
    parts = urlsplit(base_url)
    if parts.hostname not in LOOPBACK_NAMES:
        return None
    host = f'[{parts.hostname}]' if ':' in parts.hostname else parts.hostname
    root = f'{parts.scheme}://{host}' + (f':{parts.port}' if parts.port else '')
    try:  # without the user and password of base_url, which urllib would refuse
        with urllib.request.urlopen(f'{root}{path}', timeout=timeout) as resp:
            return json.load(resp)
    except (OSError, ValueError, http.client.HTTPException):  # not HTTP/1.x: an h2c-only server
        return None


def server_stats(base_url: str, reset: bool = False, run: str = '') -> dict[str, Any] | None:
    """/stats (or /stats/reset, or one run's: /stats?run=) of a bundled server on
    loopback; None otherwise."""
    path = '/stats/reset' if reset else f'/stats?run={run}' if run else '/stats'
    data = server_json(base_url, path)
    return data if isinstance(data, dict) and 'peak_in_flight' in data else None
