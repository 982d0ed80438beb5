"""--http2: the requests in flight share a connection, up to the server's own limit.

Over HTTP/1.1 each request in flight is a connection. Over HTTP/2 they are
streams of one connection (a second one only past httpcore2's 100 streams),
and the server announces how many it takes at once: the semaphore's twin
on its side of the wire. The bundled server speaks both on one port and
counts, for each run, its requests in flight and the connections that
carried them: the Peak line says both.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    EVERY_VARIANT,
    ServerFactory,
    free_port,
    run_variant,
    saved_codes,
    start,
)

from flags2.servers import FlagsServer, port_answers

PEAK = re.compile(r'Peak requests in flight at the server: (\d+), on (\d+) connections?\.')


def peak_line(lines: list[str]) -> tuple[int, int]:
    """The peak and the connections of a report's Peak line."""
    found = [match for line in lines if (match := PEAK.fullmatch(line))]
    assert len(found) == 1, lines
    return int(found[0][1]), int(found[0][2])


# The done-when of the issue: -m 30 on one connection, every flag at -m 1000
# on two (httpcore2 carries at most 100 streams on one), flags3 asking for
# the metadata too. Over the slow server every request of a round overlaps.
HTTP2_RUNS = {
    'sequential': (['-l', '3'], 3, 1, 1),
    'threadpool': (['-m', '30', '-l', '60'], 60, 30, 1),
    'asyncio': (['-m', '1000'], 194, 194, 2),
    'asyncio_executor': (['-m', '1000'], 194, 194, 2),
    'flags3': (['-m', '1000', '-l', '120'], 120, 120, 2),
}


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_every_variant_gets_its_peak_on_one_connection_per_100_streams(
        variant: str, slow_server: FlagsServer, tmp_path: Path) -> None:
    args, count, peak, connections = HTTP2_RUNS[variant]
    result = run_variant(variant, '--http2', '-a', *args, '-s', slow_server.url,
                         '-o', str(tmp_path), cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    assert f'{count} flags downloaded.' in result.lines
    assert peak_line(result.lines) == (peak, connections)
    assert len(list(tmp_path.iterdir())) == count


def test_the_servers_max_streams_caps_the_peak_on_one_connection(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    """A server that takes 50 streams at once throttles a client that asks for
    194: the client does not open connections to get round it."""
    server = server_factory('delay', '--delay-min', '0.2', '--delay-max', '0.3',
                            '--max-streams', '50')
    result = run_variant('asyncio', '--http2', '-a', '-m', '194', '-s', server.url,
                         '-o', str(tmp_path), cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    assert '194 flags downloaded.' in result.lines
    assert peak_line(result.lines) == (50, 1)


def test_a_server_allowing_one_stream_still_serves_every_flag(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory('delay', '--delay-min', '0.01', '--delay-max', '0.02',
                            '--max-streams', '1')
    result = run_variant('asyncio', '--http2', '-a', '-l', '20', '-m', '20', '-s', server.url,
                         '-o', str(tmp_path), cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    assert '20 flags downloaded.' in result.lines
    assert peak_line(result.lines) == (1, 1)


def test_over_http11_the_peak_line_counts_a_connection_per_request(
        slow_server: FlagsServer, tmp_path: Path) -> None:
    result = run_variant('asyncio', '-a', '-l', '10', '-m', '10', '-s', slow_server.url,
                         '-o', str(tmp_path), cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    assert peak_line(result.lines) == (10, 10)


def test_runs_side_by_side_each_report_their_own_peak(slow_server: FlagsServer,
                                                      tmp_path: Path) -> None:
    """Two runs of -m 5 at once on one server: each counts its own 5, not 10."""
    procs = [start('asyncio', '-a', '-l', '15', '-m', '5', *protocol, '-s', slow_server.url,
                   '-o', str(tmp_path / name), cwd=tmp_path)
             for name, protocol in (('one', []), ('two', ['--http2']))]
    outputs = [proc.communicate(timeout=90) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    peaks = [peak_line(out.splitlines()) for out, _ in outputs]
    assert peaks == [(5, 5), (5, 1)]


@pytest.fixture
def http11_only_server(tmp_path: Path) -> Iterator[str]:
    """Python's own http.server: HTTP/1.x only, serving a folder of one flag."""
    (tmp_path / 'site' / 'flags' / 'cn').mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind',
                             '127.0.0.1', '--directory', str(tmp_path / 'site')],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not port_answers('127.0.0.1', port):
            assert time.monotonic() < deadline, 'http.server did not start'
            time.sleep(0.05)
        yield f'http://127.0.0.1:{port}/flags'
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_server_without_h2c_is_one_line_before_any_download(http11_only_server: str,
                                                              tmp_path: Path) -> None:
    result = run_variant('asyncio', '--http2', 'CN', '-s', http11_only_server,
                         '-o', str(tmp_path / 'out'), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f'*** The server at {http11_only_server} does not speak HTTP/2 without TLS (it '
        'answered in another protocol): run without --http2.']
    assert not (tmp_path / 'out').exists() or not saved_codes(tmp_path / 'out')
