"""Hostile servers: a request ends within its time limit whatever the server
trickles, a compressed body never inflates past the cap, and a run's memory
grows with its concurrency, never with the number of codes that failed.

Each variant runs in a subprocess, as a user runs it: the subprocess timeout
ends a run that would trickle on for minutes, and conftest.run_measured gives
its peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from handmade import answer, handmade_server

from conftest import (
    EVERY_VARIANT,
    MARGIN,
    NO_DEST,
    VARIANTS,
    elapsed,
    fetch_flag,
    flag_url,
    run_measured,
    run_variant,
)
from flags_server import Workload, flag_gif

from flags2.clients import ShardedTransport, make_async_client
from flags2.codes import country_codes
from flags2.runs import Run
from flags2.servers import FlagsServer, running_server
from flags2.wire import gzip_bomb

TIMEOUT = 0.5
TRICKLES = ('trickle-headers', 'trickle-body', 'endless-chunks')
MIB = 1024 * 1024


def faulty(cc: str, kind: str = 'flag') -> bool:
    return Workload('local', error_rate=0.5, fault_kind='418').fails(cc, kind)


ALL_CODES = country_codes()
# An answered code first (its metadata too, for flags3), so the sequential
# variant meets the fault on a kept-alive connection, where no connect event
# tells its socket.
FIRST_OK = next(cc for cc in ALL_CODES if not faulty(cc) and not faulty(cc, 'metadata'))
FAILING = [cc for cc in ALL_CODES if faulty(cc) and cc > FIRST_OK][:2]
CODES = [FIRST_OK, *FAILING]


@pytest.fixture(scope='module')
def trickle_servers() -> Iterator[dict[str, FlagsServer]]:
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(running_server(
                   'local', '--fault', kind, '--fault-rate', '0.5'))
               for kind in TRICKLES}


@pytest.mark.parametrize('variant', EVERY_VARIANT)
@pytest.mark.parametrize('kind', TRICKLES)
def test_a_trickling_server_times_out_within_the_limit(
        kind: str, variant: str, trickle_servers: dict[str, FlagsServer],
        tmp_path: Path) -> None:
    result = run_variant(variant, '-v', '-m', '3', '--timeout', str(TIMEOUT),
                         '-s', trickle_servers[kind].url, '-o', str(tmp_path), *CODES,
                         cwd=tmp_path, timeout=20)
    assert result.returncode == 1, result.stderr
    assert sorted(line for line in result.lines if ' error: ' in line) == [
        f'{cc} error: timed out after {TIMEOUT:g} s' for cc in FAILING]
    assert f'{FIRST_OK} OK' in result.lines
    # The sequential run waits for each failing flag in turn; the others at once.
    rounds = len(FAILING) if variant == 'sequential' else 1
    assert elapsed(result.lines) < rounds * (TIMEOUT + 2 * MARGIN) + 0.2


def test_keep_alive_still_reuses_one_connection(local_server: FlagsServer) -> None:
    with Run(NO_DEST, TIMEOUT) as run:
        transport = ShardedTransport(1, run)
        with httpx2.Client(transport=transport) as client:
            sockets = []
            for cc in ('BR', 'CN', 'US'):
                resp = client.get(flag_url(local_server.url, cc))
                assert resp.content == flag_gif(cc)  # read to the end, and checked
                sockets.append(transport.lines[0].sock)
    assert sockets[0] is not None
    assert sockets == [sockets[0]] * 3


# ------------------------------------------------------------ compression

def gif_answer(body: bytes, encoding: str | None = None) -> bytes:
    coding = [f'Content-Encoding: {encoding}'] if encoding else []
    return answer('200 OK', body, 'Content-Type: image/gif', *coding)


def test_both_clients_ask_for_no_compression() -> None:
    async def fetch_async(url: str) -> bytes:
        """As the asyncio script fetches one flag."""
        async with make_async_client(1) as client:
            resp = await client.get(url, follow_redirects=True)
            resp.raise_for_status()
            return resp.content

    with handmade_server(lambda path, number: [gif_answer(flag_gif('BR'))]) as server:
        url = flag_url(server.url, 'BR')
        assert fetch_flag(url, TIMEOUT) == flag_gif('BR')
        with Run(NO_DEST, TIMEOUT):
            assert asyncio.run(fetch_async(url)) == flag_gif('BR')
    assert len(server.heads) == 2
    for head in server.heads:
        codings = [line for line in head.lower().split(b'\r\n')
                   if line.startswith(b'accept-encoding:')]
        assert codings == [b'accept-encoding: identity']


@pytest.fixture(scope='module')
def bomb_server() -> Iterator[FlagsServer]:
    with running_server('local', '--fault', 'gzip-bomb', '--fault-rate', '1') as server:
        yield server


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_gzip_bomb_stops_at_the_cap(variant: str, bomb_server: FlagsServer,
                                      tmp_path: Path) -> None:
    lines, rss = run_measured(variant, '-v', '-s', bomb_server.url, '-o', str(tmp_path),
                              'BR', cwd=tmp_path)
    assert 'BR error: response over 1 MiB' in lines
    assert rss < 120  # about 35 MiB; inflated whole, the bomb alone is 1000 MiB


@pytest.mark.parametrize('variant', VARIANTS)
def test_stacked_codings_stop_at_the_cap_too(variant: str, tmp_path: Path) -> None:
    twice = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = twice.compress(gzip_bomb()) + twice.flush()  # a few KiB, for 1000 MiB
    assert len(body) < 64 * 1024
    with handmade_server(lambda path, number: [gif_answer(body, 'gzip, gzip')]) as server:
        lines, rss = run_measured(variant, '-v', '-s', server.url, '-o', str(tmp_path),
                                  'BR', cwd=tmp_path)
    assert 'BR error: response over 1 MiB' in lines
    assert rss < 120


def test_memory_grows_with_concurrency_not_with_failed_codes(
        bomb_server: FlagsServer, tmp_path: Path) -> None:
    peaks = {}
    for count in (5, 40):
        lines, peaks[count] = run_measured(
            'asyncio', '-a', '-l', str(count), '-m', '1', '-s', bomb_server.url,
            '-o', str(tmp_path), cwd=tmp_path)
        assert f'errors: {count} response over 1 MiB' in lines
    # Each failed bomb held 2 MiB until the run ended: 5 codes 44 MiB, 40 codes 121 MiB.
    assert peaks[40] - peaks[5] < 15, peaks
