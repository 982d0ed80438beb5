"""Every failure explains itself: each fault of the bundled server, seen by each variant.

The runs go through ``main`` in-process, with the real server on loopback:
the same code path as the command line, without a Python start-up per case.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx2
import pytest

import flags2_asyncio
import flags2_sequential
import flags2_threadpool
from conftest import (
    VARIANTS,
    assert_valid_gifs,
    fetch_flag,
    flag_url,
    free_port,
    run_in_process,
    saved_codes,
)
from flags2_common import DownloadStatus, expand_cc_args, main
from flags_server import FAULTS, OVERSIZE_BYTES, Workload, flag_gif

from flags2.codes import country_codes
from flags2.failures import (
    BadFlagError,
    BodyCheck,
    IncompleteBody,
    error_cause,
    short_cause,
)
from flags2.servers import FlagsServer, running_server, server_command

MODULES: dict[str, ModuleType] = {
    'sequential': flags2_sequential,
    'threadpool': flags2_threadpool,
    'asyncio': flags2_asyncio,
}
ALL_CODES = country_codes()
FAULT_RATE = 0.5
TIMEOUT = 0.3  # the client's, for the stall fault

CAUSES = {
    '418': "HTTP 418 I'm a Teapot",
    '500': 'HTTP 500 Internal Server Error',
    '503': 'HTTP 503 Service Unavailable',
    'reset': 'connection reset',
    'truncate': 'incomplete response body',
    'bad-length': 'incomplete response body',
    'stall': f'timed out after {TIMEOUT} s',
    'html': 'not a GIF (text/html)',
    'oversize': 'response over 1 MiB',
    'redirect-loop': 'too many redirects',
    'trickle-headers': f'timed out after {TIMEOUT} s',
    'trickle-body': f'timed out after {TIMEOUT} s',
    'endless-chunks': f'timed out after {TIMEOUT} s',
    'gzip-bomb': 'response over 1 MiB',
}
TRICKLES = ('trickle-headers', 'trickle-body', 'endless-chunks')
SUMMARIES = {'418': 'HTTP 418', '500': 'HTTP 500', '503': 'HTTP 503', 'stall': 'timed out',
             **dict.fromkeys(TRICKLES, 'timed out')}


def faulty(cc: str) -> bool:
    """Which codes get the fault: the same seeded choice for every kind."""
    return Workload('local', error_rate=FAULT_RATE, fault_kind='418').fails(cc)


FAILING = [cc for cc in ALL_CODES if faulty(cc)][:2]
OK = [cc for cc in ALL_CODES if not faulty(cc)][:3]
CODES = sorted([*FAILING, *OK, 'QQ'])  # QQ: not a country, 404 under every fault


def test_the_fault_table_covers_every_kind() -> None:
    assert set(CAUSES) == set(FAULTS)


@pytest.fixture(scope='module')
def fault_servers() -> Iterator[dict[str, FlagsServer]]:
    """One server per fault kind, bound to 'localhost' as the auto-start binds one."""
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(running_server(
                   'local', '--fault', kind, '--fault-rate', str(FAULT_RATE), bind='localhost'))
               for kind in FAULTS}


Run = Callable[..., tuple[int, list[str], str]]


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run one variant's ``main`` with ``args``: (exit status, stdout lines, stderr)."""
    def run(variant: str, *args: str) -> tuple[int, list[str], str]:
        module = MODULES[variant]
        with pytest.raises(SystemExit) as exit_info:
            main(module.download_many, module.DEFAULT_CONCUR_REQ, module.MAX_CONCUR_REQ,
                 list(args))
        out, err = capsys.readouterr()
        code = exit_info.value.code
        assert isinstance(code, int)
        return code, out.splitlines(), err
    return run


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('kind', FAULTS)
def test_each_fault_is_an_error_with_its_cause(kind: str, variant: str, run_main: Run,
                                               fault_servers: dict[str, FlagsServer],
                                               tmp_path: Path) -> None:
    status, lines, err = run_main(variant, '-v', '-m', '4', '--timeout', str(TIMEOUT),
                                  '-s', fault_servers[kind].url, '-o', str(tmp_path), *CODES)
    assert status == 1
    assert f'{len(OK)} flags downloaded.' in lines
    assert '1 not found.' in lines
    assert f'{len(FAILING)} errors.' in lines
    assert f'errors: {len(FAILING)} {SUMMARIES.get(kind, CAUSES[kind])}' in lines
    error_lines = sorted(line for line in lines if ' error: ' in line)
    assert error_lines == [f'{cc} error: {CAUSES[kind]}' for cc in FAILING]
    assert saved_codes(tmp_path) == OK  # nothing for a failed code, no temporary file
    assert_valid_gifs(tmp_path)
    assert 'Traceback' not in err


@pytest.mark.parametrize('variant', VARIANTS)
def test_no_server_means_connection_refused_and_a_hint(variant: str, run_main: Run,
                                                       tmp_path: Path) -> None:
    port = free_port()
    url = f'http://127.0.0.1:{port}/flags'
    status, lines, err = run_main(variant, '-v', '-s', url, '-o', str(tmp_path), 'BR', 'CN')
    assert status == 1
    assert sorted(line for line in lines if ' error: ' in line) == [
        'BR error: connection refused', 'CN error: connection refused']
    assert 'errors: 2 connection refused' in lines
    assert err.splitlines() == [  # tests/test_hints.py runs the command it names
        f'*** No server answered. Start the bundled one with: {server_command("local", port)}']
    assert list(tmp_path.iterdir()) == []


def test_errors_are_summed_up_by_cause_without_verbose(run_main: Run, tmp_path: Path,
                                                       error_server: FlagsServer) -> None:
    status, lines, _ = run_main('asyncio', '-a', '-s', error_server.url, '-o', str(tmp_path))
    failing = [cc for cc in ALL_CODES if Workload('error').fails(cc)]
    assert status == 1
    assert not any(' error: ' in line for line in lines)
    assert f'errors: {len(failing)} HTTP 418' in lines


# ------------------------------------------------------- the server's side

def fetch(server: FlagsServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers, the body as far as it came."""
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=TIMEOUT)
    try:
        conn.request('GET', path)
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def trickled(server: FlagsServer, path: str, wait: float = 0.35) -> tuple[bytes, bytes]:
    """What a trickling fault sends in ``wait`` seconds: the head so far, the body so far."""
    with socket.create_connection(('127.0.0.1', server.port), timeout=wait) as sock:
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        got = b''
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            got += data
    head, _, body = got.partition(b'\r\n\r\n')
    return head, body


def flag_path(cc: str) -> str:
    return f'/flags/{cc.lower()}/{cc.lower()}.gif'


@pytest.mark.parametrize('kind', FAULTS)
def test_server_injects_the_fault_and_keeps_serving(kind: str,
                                                    fault_servers: dict[str, FlagsServer]
                                                    ) -> None:
    server = fault_servers[kind]
    path = flag_path(FAILING[0])
    if kind == 'reset':
        with pytest.raises(ConnectionResetError) as reset:
            fetch(server, path)
        assert reset.value.errno == errno.ECONNRESET  # a RST, not a polite close
    elif kind == 'stall':
        with pytest.raises(TimeoutError):
            fetch(server, path)
    elif kind in TRICKLES:
        head, body = trickled(server, path)
        if kind == 'trickle-headers':
            assert 0 < len(head) < 10  # a byte every 0.1 s, no end to the head in sight
            assert b'HTTP/1.1 200 OK\r\n'.startswith(head)
        elif kind == 'trickle-body':
            assert head.startswith(b'HTTP/1.1 200 OK\r\n')
            assert 0 < len(body) < 10
            assert flag_gif(FAILING[0]).startswith(body)
        else:
            assert b'\r\nTransfer-Encoding: chunked\r\n' in head
            assert body.startswith(b'6\r\nGIF89a\r\n1\r\n\x00\r\n')
            assert len(body) < 60
    else:
        status, headers, body = fetch(server, path)
        if kind.isdigit():
            assert status == int(kind)
        elif kind in ('truncate', 'bad-length'):
            gif = flag_gif(FAILING[0])
            assert status == 200
            assert body == (gif if kind == 'bad-length' else gif[:len(gif) // 2])
            assert int(headers['content-length']) > len(body)
        elif kind == 'html':
            assert (status, headers['content-type']) == (200, 'text/html; charset=utf-8')
        elif kind == 'oversize':
            assert (status, len(body)) == (200, OVERSIZE_BYTES)
            assert len(body) > 1024 * 1024
        elif kind == 'gzip-bomb':
            assert (status, headers['content-encoding']) == (200, 'gzip')
            assert len(body) < 1024 * 1024  # within the cap, until inflated
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert inflater.decompress(body, 1024 * 1024).startswith(b'GIF89a')
            assert len(inflater.unconsumed_tail) > 1000
        else:
            assert (status, headers['location']) == (302, path)
    status, headers, body = fetch(server, flag_path(OK[0]))  # still serving
    assert (status, headers['content-type']) == (200, 'image/gif')


@pytest.mark.parametrize('path', [
    '/flags/../flags/br/br.gif', '/flags/%2e%2e/flags/br/br.gif', '/flags/br/../br/br.gif',
    '/flags/br/br.gif/..', '/flags/%62r/%62r.gif', '/../flags_server.py',
])
def test_traversal_is_404_even_under_a_fault(path: str,
                                             fault_servers: dict[str, FlagsServer]) -> None:
    status, _, body = fetch(fault_servers['html'], path)
    assert (status, body) == (404, b'404 Not Found\n')


@pytest.mark.skipif(not Path('/proc/net/tcp').exists(), reason='reads /proc/net/tcp')
def test_localhost_bind_listens_on_loopback_only(fault_servers: dict[str, FlagsServer]) -> None:
    port = fault_servers['418'].port
    listening = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        if not os.path.exists(table):
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.split(':')
            if state == '0A' and int(port_hex, 16) == port:  # 0A: LISTEN
                listening.add(address)
    assert listening
    assert listening <= {'0100007F', '00000000000000000000000001000000'}  # 127.0.0.1, ::1


# -------------------------------------------------------------- under load

def open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


@pytest.mark.skipif(not Path('/proc/self/fd').exists(), reason='counts fds in /proc')
@pytest.mark.parametrize('variant', ['threadpool', 'asyncio'])
def test_every_code_at_m_1000_leaks_no_fd_or_thread(variant: str, error_server: FlagsServer,
                                                   tmp_path: Path) -> None:
    every = expand_cc_args(True, False, [], None)  # AA to ZZ, as -e gives
    fds, threads = open_fds(), threading.active_count()
    counter, run = run_in_process(MODULES[variant].download_many, every, error_server.url,
                                  True, 676, dest=tmp_path, timeout=10.0)
    failing = [cc for cc in ALL_CODES if Workload('error').fails(cc)]
    assert counter == Counter({DownloadStatus.OK: 194 - len(failing),
                               DownloadStatus.NOT_FOUND: 676 - 194,
                               DownloadStatus.ERROR: len(failing)})
    assert run.causes == Counter({'HTTP 418': len(failing)})
    assert len(saved_codes(tmp_path)) == 194 - len(failing)
    assert (open_fds(), threading.active_count()) == (fds, threads)


# ------------------------------------------- the words for each exception

@pytest.mark.parametrize(('exc', 'cause'), [
    (httpx2.DecodingError(''), 'undecodable response body: DecodingError with no details'),
    (httpx2.ReadError(''), 'network error: ReadError with no details'),
    (httpx2.RemoteProtocolError(''), 'protocol error: RemoteProtocolError with no details'),
    (httpx2.ConnectError('boom'), 'connection failed: boom'),
    (httpx2.UnsupportedProtocol(''), 'network error: UnsupportedProtocol with no details'),
    (httpx2.TooManyRedirects(''), 'too many redirects'),
    (httpx2.ReadTimeout(''), 'timed out'),
    (httpx2.HTTPError(''), 'unexpected HTTPError: no details'),
    (OSError(), 'cannot save: OSError with no details'),
    # the cause, not the file: failed saves group into one cause; -v names the code
    (OSError(errno.ENOSPC, 'No space left on device', '/x/BR.gif'),
     'cannot save: No space left on device'),
])
def test_a_cause_is_never_empty_nor_a_bare_class_name(exc: Exception, cause: str) -> None:
    assert error_cause(exc) == cause


def caught(url: str) -> BaseException:
    """What fetching one flag as the sequential script does raises."""
    with pytest.raises((httpx2.HTTPError, OSError)) as info:
        fetch_flag(url, TIMEOUT)
    return info.value


REAL_TYPES: dict[str, type[BaseException]] = {
    '418': httpx2.HTTPStatusError,
    '500': httpx2.HTTPStatusError,
    '503': httpx2.HTTPStatusError,
    'reset': httpx2.ReadError,
    'truncate': IncompleteBody,
    'bad-length': IncompleteBody,
    'stall': httpx2.ReadTimeout,
    'html': BadFlagError,
    'oversize': BadFlagError,
    'redirect-loop': httpx2.TooManyRedirects,
    'trickle-headers': httpx2.ReadTimeout,
    'trickle-body': httpx2.ReadTimeout,
    'endless-chunks': httpx2.ReadTimeout,
    'gzip-bomb': BadFlagError,
}


@pytest.mark.parametrize('kind', FAULTS)
def test_each_cause_names_the_real_exception_of_its_fault(
        kind: str, fault_servers: dict[str, FlagsServer]) -> None:
    exc = caught(flag_url(fault_servers[kind].url, FAILING[0]))
    assert type(exc) is REAL_TYPES[kind]
    assert error_cause(exc) == CAUSES[kind]
    assert short_cause(error_cause(exc)) == SUMMARIES.get(kind, CAUSES[kind])


def test_nothing_listening_is_connection_refused() -> None:
    exc = caught(flag_url(f'http://127.0.0.1:{free_port()}/flags', 'BR'))
    assert type(exc) is httpx2.ConnectError
    assert error_cause(exc) == 'connection refused'


def test_a_host_that_does_not_resolve_is_host_name_not_found(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ('HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(name, raising=False)  # the name must go to the resolver
    exc = caught(flag_url('http://flags.invalid/flags', 'BR'))  # .invalid never resolves
    assert type(exc) is httpx2.ConnectError
    assert error_cause(exc) == 'host name not found'


def test_a_content_length_of_unicode_digits_is_not_a_size(local_server: FlagsServer) -> None:
    """A byte 0xB2 reads as '²' (headers decode as Latin-1): '²'.isdigit() is true,
    but int('²') raises. The header is ignored, not a crash."""
    request = httpx2.Request('GET', flag_url(local_server.url, 'BR'))
    response = httpx2.Response(200, headers=[(b'Content-Length', b'\xb2')], request=request)
    assert response.headers['content-length'] == '²'
    body = BodyCheck(request, response.status_code, response.headers)
    body.add(b'GIF89a')
    body.end()  # a whole GIF under the cap: accepted
    assert body.size == len(b'GIF89a')
