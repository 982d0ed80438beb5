"""The bundled server against hostile or broken clients: big bodies, malformed
requests, idle connections, too many connections, and a log nobody reads."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

import pytest

from flags2.servers import FlagsServer, running_server
from flags2.wire import quiet_accept_errors

pytestmark = pytest.mark.skipif(not Path('/proc/self/status').exists(),
                                reason='reads memory and file handles through /proc')

GET_BR = b'GET /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n\r\n'
IDLE_TIMEOUT = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture(scope='module')
def server() -> Iterator[FlagsServer]:
    with running_server('local', '--idle-timeout', str(IDLE_TIMEOUT), tied=True) as server:
        yield server


@contextlib.contextmanager
def connect(server: FlagsServer, timeout: float = 5) -> Iterator[socket.socket]:
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=timeout)
    try:
        yield sock
    finally:
        stream = STREAMS.pop(sock, None)
        if stream is not None:
            stream.close()
        sock.close()


def status_of(sock: socket.socket) -> bytes:
    """The status line of the next response, or b'' if the server closed first."""
    data = b''
    with contextlib.suppress(ConnectionResetError):
        while b'\r\n' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.partition(b'\r\n')[0]


STREAMS: dict[socket.socket, BinaryIO] = {}  # one buffered reader per socket


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line, body) of the next response, which has a Content-Length."""
    stream = STREAMS.get(sock)
    if stream is None:
        stream = STREAMS[sock] = sock.makefile('rb')
    status = stream.readline().rstrip(b'\r\n')
    assert status, 'closed before a response'
    length = 0
    while (line := stream.readline()) not in (b'\r\n', b''):
        name, _, value = line.partition(b':')
        if name.lower() == b'content-length':
            length = int(value)
    return status, stream.read(length)


def assert_serves(server: FlagsServer) -> None:
    with connect(server) as sock:
        sock.sendall(GET_BR)
        status, body = read_response(sock)
    assert status == b'HTTP/1.1 200 OK'
    assert body[:6] in (b'GIF87a', b'GIF89a')


def peak_rss_kib(pid: int) -> int:
    """The most memory the process has held (VmHWM): a body freed at once still shows."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    raise AssertionError('no VmHWM')


# ------------------------------------------------------------------ bodies

def test_a_big_body_is_never_held_in_memory(server: FlagsServer) -> None:
    size = 64 * 1024 * 1024
    before = peak_rss_kib(server.proc.pid)
    with connect(server) as sock:
        sock.sendall(b'POST /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: %d\r\n\r\n' % size)

        def send_body() -> None:
            chunk = bytes(1024 * 1024)
            with contextlib.suppress(OSError):
                for _ in range(size // len(chunk)):
                    sock.sendall(chunk)

        sender = threading.Thread(target=send_body)
        sender.start()
        status = status_of(sock)
        sender.join(timeout=10)
    # the phrase is Python's own: 'Request Entity Too Large', 'Content Too Large' in 3.13
    assert status == f'HTTP/1.1 413 {HTTPStatus.REQUEST_ENTITY_TOO_LARGE.phrase}'.encode()
    assert peak_rss_kib(server.proc.pid) - before < 16 * 1024  # the old server grew by 64 MiB+
    assert_serves(server)


def test_a_small_body_is_skipped_and_the_connection_serves_on(server: FlagsServer) -> None:
    with connect(server) as sock:
        sock.sendall(b'POST /flags/br/br.gif HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n'
                     + b'x' * 5000 + GET_BR)
        assert read_response(sock)[0] == b'HTTP/1.1 405 Method Not Allowed'
        assert read_response(sock)[0] == b'HTTP/1.1 200 OK'


# ------------------------------------------------------- malformed requests

H = b'Host: x\r\n'  # so that each request is refused for its own fault

MALFORMED = [
    ('bad length', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: abc\r\n\r\n', 400),
    ('negative length', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: -5\r\n\r\n', 400),
    ('superscript length', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: \xb2\r\n\r\n', 400),
    # a number, then what int() would take or what no number has
    ('length then garbage', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: 5x\r\n\r\n', 400),
    ('length with underscore', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: 1_0\r\n\r\n', 400),
    ('length with a sign', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: +5\r\n\r\n', 400),
    ('two numbers', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: 5 5\r\n\r\n', 400),
    ('huge length', b'POST / HTTP/1.1\r\n' + H + b'Content-Length: 99999999999999999999\r\n\r\n',
     413),
    ('5000-digit length',
     b'POST / HTTP/1.1\r\n' + H + b'Content-Length: ' + b'9' * 5000 + b'\r\n\r\n', 413),
    ('two lengths',
     b'POST / HTTP/1.1\r\n' + H + b'Content-Length: 1\r\nContent-Length: 5\r\n\r\nx', 400),
    ('two hosts', b'GET / HTTP/1.1\r\n' + H + H + b'\r\n', 400),
    ('non-ASCII name', b'GET / HTTP/1.1\r\n' + H + b'X-\xff\xfe: 1\r\n\r\n', 400),
    ('no colon', b'GET / HTTP/1.1\r\n' + H + b'NoColonHere\r\n\r\n', 400),
    ('space before colon', b'GET / HTTP/1.1\r\n' + H + b'Content-Length : 5\r\n\r\n', 400),
    ('folded line', b'GET / HTTP/1.1\r\n' + H + b'X: a\r\n b\r\n\r\n', 400),
    ('overlong request line', b'GET /' + b'a' * 70_000 + b' HTTP/1.1\r\n' + H + b'\r\n', 414),
    ('overlong header line', b'GET / HTTP/1.1\r\n' + H + b'X: ' + b'a' * 70_000 + b'\r\n\r\n',
     431),
    ('too many headers', b'GET / HTTP/1.1\r\n' + H + b'X: y\r\n' * 5000 + b'\r\n', 431),
    ('bare LF', b'GET / HTTP/1.1\nHost: x\n\n', 400),
    ('NUL in target', b'GET /\x00 HTTP/1.1\r\n' + H + b'\r\n', 400),
    ('NUL in value', b'GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n', 400),
    ('non-ASCII target', b'GET /flags/\xe9 HTTP/1.1\r\n' + H + b'\r\n', 400),
    ('bad version', b'GET / HTTP/1.\xff\r\n' + H + b'\r\n', 400),
    # The whole preface is HTTP/2's now (tests/test_server_h2.py); one that
    # differs in a byte is an HTTP/1.1 request line of another version.
    ('HTTP/2 request line', b'PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n', 505),
]


@pytest.mark.parametrize(('data', 'status'), [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_a_malformed_request_gets_4xx_and_the_server_serves_on(
        data: bytes, status: int, server: FlagsServer) -> None:
    log_before = server.log_text()
    with connect(server) as sock:
        with contextlib.suppress(OSError):  # the server may answer before reading it all
            sock.sendall(data)
        assert status_of(sock).startswith(b'HTTP/1.1 %d ' % status)
        assert status_of(sock) == b''  # then closes
    assert_serves(server)
    new_lines = server.log_text()[len(log_before):].splitlines()
    assert len(new_lines) == 1 and new_lines[0].startswith(f'flags_server: {status} ')


# ------------------------------------------------------- idle connections

@pytest.mark.parametrize('after_a_request', [False, True])
def test_an_idle_connection_is_closed_after_the_idle_timeout(after_a_request: bool,
                                                             server: FlagsServer) -> None:
    with connect(server) as sock:
        if after_a_request:
            sock.sendall(GET_BR)
            read_response(sock)
        start = time.monotonic()
        assert status_of(sock) == b''  # closed, with no answer
        waited = time.monotonic() - start
    assert IDLE_TIMEOUT * 0.9 <= waited < IDLE_TIMEOUT * 2


def test_a_slow_request_head_is_closed_after_the_idle_timeout(server: FlagsServer) -> None:
    with connect(server) as sock:
        start = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(int(IDLE_TIMEOUT * 2 / 0.1)):  # one byte every 0.1 s
                sock.sendall(b'X')
                time.sleep(0.1)
        assert status_of(sock) == b''
        assert time.monotonic() - start < IDLE_TIMEOUT * 2 + 0.5


# ---------------------------------------------------------- the connection cap

def test_past_the_cap_connections_are_turned_away_and_the_log_stays_short() -> None:
    with running_server('local', '--max-connections', str(MAX_CONNECTIONS)) as server, \
            contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(server)) for _ in range(MAX_CONNECTIONS)]
        for sock in held:  # each served once: each is open at the server
            sock.sendall(GET_BR)
            read_response(sock)
        for _ in range(200):
            with connect(server, timeout=2) as extra:
                start = time.monotonic()
                assert status_of(extra) in (b'', b'HTTP/1.1 503 Service Unavailable')
                assert time.monotonic() - start < 1
        for sock in held:  # the connections within the cap still work
            sock.sendall(GET_BR)
            assert read_response(sock)[0] == b'HTTP/1.1 200 OK'
        freed = held.pop()
        STREAMS.pop(freed).close()  # a socket's file handle closes with its last reader
        freed.close()
        deadline = time.monotonic() + 2
        while True:  # the freed slot serves a new connection
            try:
                assert_serves(server)
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        log = server.log_text().splitlines()
    assert 1 <= len(log) <= 3, log
    assert 'connections open' in log[0]


# ------------------------------------------------------ a log nobody reads

def test_an_auto_started_server_that_logs_a_lot_never_blocks(server: FlagsServer) -> None:
    # The tied server is the one the scripts start; its stderr must not be a
    # pipe: a pipe nobody reads fills at 64 KiB and freezes the server.
    assert not stat.S_ISFIFO(os.stat(f'/proc/{server.proc.pid}/fd/2').st_mode)
    bad = b'GET / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n'  # one log line each
    start_size = len(server.log_text())
    for _ in range(3000):
        with connect(server, timeout=5) as sock:
            sock.sendall(bad)
            assert status_of(sock).startswith(b'HTTP/1.1 400 ')
        if len(server.log_text()) - start_size > 100 * 1024:
            break
    assert len(server.log_text()) - start_size > 100 * 1024
    assert_serves(server)


def test_running_out_of_file_handles_is_one_log_line_a_second(
        capsys: pytest.CaptureFixture[str]) -> None:
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        for _ in range(2048):  # asyncio 3.11 reports once per connection waiting
            loop.call_exception_handler({
                'message': 'socket.accept() out of system resource',
                'exception': OSError(errno.EMFILE, os.strerror(errno.EMFILE))})
    finally:
        loop.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ['flags_server: cannot accept connections: Too many open files; '
                     'retrying (failures since the last such line: 1)']


# ------------------------------------------------------- one loop for everyone

LOGGED = 20_000  # the most a run's log keeps
LOG_READERS = 400
STALL_GOAL = 1.0  # seconds a flag request may wait while the log is being read


async def pipelined_heads(port: int, n: int) -> None:
    """``n`` flag requests on one connection, sent at once: each one is logged."""
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    writer.write(b'HEAD /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n\r\n' * n)
    for _ in range(n):
        assert (await reader.readuntil(b'\r\n\r\n')).startswith(b'HTTP/1.1 200 OK')
    writer.close()


async def ask(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    writer.write(f'GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
    return reader, writer


async def body_digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> tuple[bytes, int, str]:
    """(status line, body length, body sha256) of a whole answer, never held in memory."""
    status = (await reader.readuntil(b'\r\n\r\n')).partition(b'\r\n')[0]
    digest, size = hashlib.sha256(), 0
    while chunk := await reader.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    writer.close()
    return status, size, digest.hexdigest()


def test_reading_a_long_request_log_never_stalls_the_loop() -> None:
    """400 clients reading a log of 20,000 requests at once (1.6 MB each) took the
    one event loop for a minute: a flag request made meanwhile waited 64 s."""
    with running_server('local', tied=True) as server:
        async def scenario() -> tuple[float, list[tuple[bytes, int, str]], bytes]:
            await asyncio.gather(*(pipelined_heads(server.port, LOGGED // 8) for _ in range(8)))
            readers = [await ask(server.port, '/stats/requests') for _ in range(LOG_READERS)]
            await asyncio.sleep(0.2)  # the server is on them now
            start = time.monotonic()
            async with asyncio.timeout(STALL_GOAL * 2):
                flag = await body_digest(*await ask(server.port, '/flags/br/br.gif'))
            waited = time.monotonic() - start
            assert flag[0] == b'HTTP/1.1 200 OK'
            answers = await asyncio.gather(*(body_digest(*pair) for pair in readers))
            reader, writer = await ask(server.port, '/stats/requests')
            await reader.readuntil(b'\r\n\r\n')
            log = await reader.read()
            writer.close()
            return waited, answers, log

        waited, answers, log = asyncio.run(scenario())
    assert waited < STALL_GOAL * 2
    entries = json.loads(log)
    assert len(entries['requests']) == LOGGED
    assert entries['dropped'] == 1  # the flag request: the log was full
    assert entries['requests'][0].keys() == {'start', 'end', 'code', 'status', 'kind',
                                             'connection'}
    assert {(r['code'], r['status'], r['kind']) for r in entries['requests']} == {
        ('BR', 200, 'flag')}
    # every reader got the whole log, as it was before or after the flag request
    before = log.replace(b'"dropped": 1}', b'"dropped": 0}')
    assert {answer[0] for answer in answers} == {b'HTTP/1.1 200 OK'}
    assert {answer[1] for answer in answers} == {len(log)}
    assert {answer[2] for answer in answers} <= {hashlib.sha256(log).hexdigest(),
                                                 hashlib.sha256(before).hexdigest()}
