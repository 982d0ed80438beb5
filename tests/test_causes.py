"""The summary groups failures by cause (no code, no file name in the words),
-v names the code that was asked for, and running out of threads or file
handles ends the run with advice instead of a traceback."""

from __future__ import annotations

import http.server
import re
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import flags2_asyncio
from conftest import CONCURRENT_VARIANTS, VARIANTS, Result, saved_codes
from flags2_common import main
from flags2_compare import variant_script

from flags2.codes import country_codes
from flags2.servers import FlagsServer

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='POSIX resource limits')

CODES = country_codes()[:12]
NO_THREAD_ADVICE = 'No thread to start: lower -m, or give the process more memory.'
NO_FILE_ADVICE = 'Too many open files: lower -m, or raise the limit with ulimit -n.'


def run_limited(variant: str, *args: str, limit: Callable[[], None], cwd: Path) -> Result:
    proc = subprocess.run([sys.executable, str(variant_script(variant)), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60,
                          preexec_fn=limit)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def no_file_may_grow() -> None:
    """Every write to a file fails with EFBIG, as on a full disk (root ignores modes)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def nothing() -> None:
    pass


def report_count(result: Result) -> int:
    match = re.search(r'^(\d+) flags? downloaded\.$', result.stdout, re.MULTILINE)
    assert match, result.stdout
    return int(match[1])


@pytest.mark.parametrize('variant', VARIANTS)
def test_failed_saves_group_into_one_cause(variant: str, local_server: FlagsServer,
                                           tmp_path: Path) -> None:
    result = run_limited(variant, '-a', '-s', local_server.url, '-o', str(tmp_path / 'f'),
                         limit=no_file_may_grow, cwd=tmp_path)
    assert result.returncode == 1, result
    assert 'errors: 194 cannot save: File too large' in result.lines
    assert saved_codes(tmp_path / 'f') == []  # not even an empty temporary file


@pytest.mark.parametrize('variant', VARIANTS)
def test_verbose_names_the_code_whose_save_failed(variant: str, local_server: FlagsServer,
                                                  tmp_path: Path) -> None:
    result = run_limited(variant, '-v', '-s', local_server.url, '-o', str(tmp_path / 'f'),
                         *CODES, limit=no_file_may_grow, cwd=tmp_path)
    errors = sorted(line for line in result.lines if ' error: ' in line)
    assert errors == [f'{cc} error: cannot save: File too large' for cc in CODES]


@pytest.fixture(scope='module')
def redirect_server(server_factory: Callable[..., FlagsServer]) -> FlagsServer:
    return server_factory('local', '--fault', 'redirect-loop', '--fault-rate', '1')


@pytest.mark.parametrize('variant', VARIANTS)
def test_verbose_names_the_asked_code_after_redirects(variant: str,
                                                      redirect_server: FlagsServer,
                                                      tmp_path: Path) -> None:
    result = run_limited(variant, '-v', '-s', redirect_server.url, '-o', str(tmp_path),
                         *CODES, limit=nothing, cwd=tmp_path)
    errors = sorted(line for line in result.lines if ' error: ' in line)
    assert errors == [f'{cc} error: too many redirects' for cc in CODES]


class RedirectElsewhere(http.server.BaseHTTPRequestHandler):
    """Every request is sent on to /elsewhere/x: the failed request's URL names no code."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header('Location', '/elsewhere/x')
        self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class RoomyServer(http.server.ThreadingHTTPServer):
    """A listen backlog of 5 (the default) drops connections on a loaded machine:
    the client's retry a second later can run past the 3.1 s timeout."""

    request_queue_size = 128


@pytest.fixture(scope='module')
def elsewhere_url() -> Iterator[str]:
    server = RoomyServer(('127.0.0.1', 0), RedirectElsewhere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}/flags'
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize('variant', VARIANTS)
def test_verbose_names_the_asked_code_after_redirects_elsewhere(
        variant: str, elsewhere_url: str, tmp_path: Path) -> None:
    result = run_limited(variant, '-v', '-s', elsewhere_url, '-o', str(tmp_path),
                         *CODES[:4], limit=nothing, cwd=tmp_path)
    errors = sorted(line for line in result.lines if ' error: ' in line)
    assert errors == [f'{cc} error: too many redirects' for cc in CODES[:4]]


def assert_stopped_with(result: Result, advice: str, dest: Path) -> None:
    """Exit 1, the report of what was done, one line of advice, no traceback."""
    assert result.returncode == 1, result
    assert 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == f'*** {advice}'
    assert any(line.startswith('Stopped: ') for line in result.lines), result.stdout
    saved = saved_codes(dest) if dest.exists() else []
    assert all(not cc.startswith('.') for cc in saved)  # no temporary file
    assert report_count(result) == len(saved)


def little_memory() -> None:
    """Room for Python, not for 1000 thread stacks."""
    resource.setrlimit(resource.RLIMIT_AS, (1500 << 20, 1500 << 20))


def test_no_thread_to_start(slow_server: FlagsServer, tmp_path: Path) -> None:
    dest = tmp_path / 'f'  # slow: every download holds its thread, none is reused
    result = run_limited('threadpool', '-a', '-m', '1000', '-s', slow_server.url,
                         '-o', str(dest), limit=little_memory, cwd=tmp_path)
    assert_stopped_with(result, NO_THREAD_ADVICE, dest)


def few_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (60, 60))


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_too_many_open_files(variant: str, slow_server: FlagsServer, tmp_path: Path) -> None:
    dest = tmp_path / 'f'
    result = run_limited(variant, '-a', '-m', '100', '-s', slow_server.url, '-o', str(dest),
                         limit=few_files, cwd=tmp_path)
    assert_stopped_with(result, NO_FILE_ADVICE, dest)
    assert 'too many open files' in next(line for line in result.lines
                                         if line.startswith('errors: '))


def test_asyncio_no_thread_to_save_stops_the_run(local_server: FlagsServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """asyncio saves in threads (asyncio.to_thread, in the run's executor, whose
    threads are named flags2-save...); when none can start (as with too little
    memory). Every other thread starts as usual."""
    start = threading.Thread.start

    def no_save_thread(thread: threading.Thread) -> None:
        if thread.name.startswith('flags2-save'):
            raise RuntimeError("can't start new thread")  # what Thread.start raises then
        start(thread)

    monkeypatch.setattr(threading.Thread, 'start', no_save_thread)
    with pytest.raises(SystemExit) as exit_info:
        main(flags2_asyncio.download_many, 5, 1000,
             ['-v', '-s', local_server.url, '-o', str(tmp_path), *CODES])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert err.splitlines()[-1] == f'*** {NO_THREAD_ADVICE}'
    assert 'Stopped: ' in out
    assert saved_codes(tmp_path) == []
    failed = [line.split()[0] for line in out.splitlines()
              if line.endswith(' error: no thread to start')]
    assert failed and set(failed) <= set(CODES)
