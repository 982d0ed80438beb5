"""Whatever became of stdout and stderr, a run never ends in a traceback:

- a reader that went away (``| head -1``) stops the run quietly, exit 141;
- a stream closed from the start (``>&-``, ``2>&-``) or one that fails
  (``> /dev/full``) loses its output, and every flag still lands;
- an ASCII terminal gets '?' for the text it cannot show.

Each variant runs in a subprocess, as a user runs it, with the stream set up
as a shell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import EVERY_VARIANT, STOP_GOAL, assert_valid_gifs, run_variant
from flags2_compare import variant_script

from flags2.codes import country_codes
from flags2.servers import FlagsServer

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='closes streams as a POSIX shell')

LIMIT = 2 * STOP_GOAL  # twice the goal's margin: CI runs loaded
QUIET_ERRORS = ('Traceback', 'Exception ignored', 'Task exception', 'Error')


def argv(variant: str, *args: str) -> list[str]:
    return [sys.executable, str(variant_script(variant)), *args]


def assert_quiet(stderr: str) -> None:
    for words in QUIET_ERRORS:
        assert words not in stderr, stderr


def env_with(**settings: str | None) -> dict[str, str]:
    """os.environ with ``settings``; None removes a variable."""
    env = dict(os.environ)
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# ----------------------------------------------------------- a closed pipe

@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_reader_going_away_stops_the_run_quietly(variant: str, delay_server: FlagsServer,
                                                   tmp_path: Path) -> None:
    """``| head -1``: the run stops soon after, with 141, whole files and no traceback."""
    dest = tmp_path / 'flags'
    # -e on DELAY: 676 codes take seconds in every variant; unbuffered, as a
    # terminal shows it, so the first write after the reader left fails
    proc = subprocess.Popen(argv(variant, '-v', '-e', '-m', '5', '-s', delay_server.url,
                                 '-o', str(dest)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env=env_with(PYTHONUNBUFFERED='1'))
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    t0 = time.perf_counter()
    try:
        err = proc.stderr.read()
        proc.wait(timeout=15)
    finally:
        proc.kill()
        proc.stderr.close()
    seconds = time.perf_counter() - t0
    assert first.startswith(b'http://127.0.0.1:')
    assert proc.returncode == 141, err
    assert seconds < LIMIT, f'took {seconds:.2f} s to stop'
    assert_quiet(err.decode())
    if dest.exists():
        assert_valid_gifs(dest)


@pytest.mark.parametrize('buffered', [False, True], ids=['unbuffered', 'buffered'])
@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_pipe_closed_before_the_first_line_exits_141_quietly(
        variant: str, buffered: bool, local_server: FlagsServer, tmp_path: Path) -> None:
    """Unbuffered, the first line fails; buffered, the last flush does (and nothing is
    left in Python's own buffer to fail again at exit: that would be status 120)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(argv(variant, '-v', '-a', '-s', local_server.url, '-o',
                                     str(tmp_path / 'flags')),
                                stdout=write_end, stderr=subprocess.PIPE, cwd=tmp_path,
                                text=True, timeout=60,
                                env=env_with(PYTHONUNBUFFERED=None if buffered else '1'))
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert_quiet(result.stderr)


# ------------------------------------------------------- a closed stream

def run_closing(fd: int, variant: str, *args: str,
                cwd: Path) -> subprocess.CompletedProcess[str]:
    """The variant started as ``python script args >&-`` (fd 1) or ``2>&-`` (fd 2);
    the other stream is captured."""
    return subprocess.run(['sh', '-c', f'exec "$@" {fd}>&-', 'sh', *argv(variant, *args)],
                          stdout=subprocess.PIPE if fd == 2 else None,
                          stderr=subprocess.PIPE if fd == 1 else None,
                          cwd=cwd, text=True, timeout=60, check=False)


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_closed_stdout_never_stops_the_downloads(variant: str, local_server: FlagsServer,
                                                   tmp_path: Path) -> None:
    dest = tmp_path / 'flags'
    result = run_closing(1, variant, '-v', '-a', '-s', local_server.url, '-o', str(dest),
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    assert len(list(dest.iterdir())) == len(country_codes())
    assert_valid_gifs(dest)


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_closed_stderr_never_stops_the_downloads(variant: str, local_server: FlagsServer,
                                                   tmp_path: Path) -> None:
    """The progress bar goes to stderr."""
    dest = tmp_path / 'flags'
    result = run_closing(2, variant, '-a', '-s', local_server.url, '-o', str(dest),
                         cwd=tmp_path)
    assert result.returncode == 0
    assert f'{len(country_codes())} flags downloaded.' in result.stdout.splitlines()
    assert len(list(dest.iterdir())) == len(country_codes())
    assert_valid_gifs(dest)


@pytest.mark.skipif(not Path('/dev/full').exists(), reason='needs /dev/full')
@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_stdout_that_fails_never_stops_the_downloads(variant: str,
                                                       local_server: FlagsServer,
                                                       tmp_path: Path) -> None:
    """A write to /dev/full fails with ENOSPC: the output is lost, not the flags (it
    was each code's 'cannot save: No space left on device')."""
    dest = tmp_path / 'flags'
    with open('/dev/full', 'w') as full:
        result = subprocess.run(argv(variant, '-v', '-a', '-s', local_server.url, '-o',
                                     str(dest)),
                                stdout=full, stderr=subprocess.PIPE, cwd=tmp_path, text=True,
                                timeout=60, env=env_with(PYTHONUNBUFFERED='1'))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    assert len(list(dest.iterdir())) == len(country_codes())


# --------------------------------------------------------- an ASCII terminal

NON_ASCII_TYPE = 'text/htmł'


class NonAsciiHandler(BaseHTTPRequestHandler):
    """Answers every flag with a page whose content type is not ASCII."""

    protocol_version = 'HTTP/1.1'

    def do_GET(self) -> None:
        body = b'<p>no flag here</p>'
        self.send_response(200)
        # http.server writes headers in Latin-1: these are the UTF-8 bytes of the type
        self.send_header('Content-Type', NON_ASCII_TYPE.encode().decode('latin-1'))
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope='module')
def non_ascii_server() -> Iterator[str]:
    server = ThreadingHTTPServer(('127.0.0.1', 0), NonAsciiHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}/flags'
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize('verbose', [True, False], ids=['verbose', 'report'])
@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_an_ascii_terminal_gets_question_marks(variant: str, verbose: bool,
                                               non_ascii_server: str, tmp_path: Path) -> None:
    args = ['-v'] if verbose else []
    result = run_variant(variant, *args, '-s', non_ascii_server, '-o', str(tmp_path / 'f'),
                         'BR', 'CN', cwd=tmp_path, env={'PYTHONIOENCODING': 'ascii'})
    assert result.returncode == 1, result.stderr
    assert_quiet(result.stderr)
    assert 'errors: 2 not a GIF (text/htm?)' in result.lines
    if verbose:
        assert sorted(line for line in result.lines if ' error: ' in line) == [
            'BR error: not a GIF (text/htm?)', 'CN error: not a GIF (text/htm?)']
