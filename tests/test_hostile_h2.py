"""Hostile HTTP/2 servers, client side: whatever the server does with its
streams, its connection or its header blocks, each code ends within
--timeout as that code's error with a one-line cause, the run goes on, and
the memory of the run stays bounded."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import h2.settings
import hpack
import pytest
from h2handmade import Exchange, h2_server, tiny_gif

from conftest import CONCURRENT_VARIANTS, elapsed, run_measured, run_variant

FLAG = tiny_gif()
CODES = ['AD', 'AE', 'AF', 'AG', 'AI', 'AL', 'AM', 'AO', 'AQ', 'AR']
TIMEOUT = 1.0  # --timeout of the runs that meet a server that never answers


def error_line(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith('errors: '))


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_reset_streams_are_their_codes_errors(variant: str, tmp_path: Path) -> None:
    def every_other_reset(exchange: Exchange) -> None:
        if exchange.number % 2:
            exchange.reset()
        else:
            exchange.gif(FLAG)

    with h2_server(every_other_reset) as server:
        result = run_variant(variant, '--http2', *CODES, '-m', '1', '-s', server.url,
                             '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert '5 flags downloaded.' in result.lines and '5 errors.' in result.lines
    assert error_line(result.lines) == 'errors: 5 stream reset by the server (INTERNAL_ERROR)'
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_goaway_mid_run_sends_the_refused_requests_again(variant: str,
                                                         tmp_path: Path) -> None:
    """GOAWAY names the last stream the server took: the later ones were never
    processed, and a client may send them again on a new connection."""
    def goaway_at_the_fourth(exchange: Exchange) -> None:
        if exchange.number == 4:
            exchange.goaway()
        else:
            exchange.gif(FLAG)

    with h2_server(goaway_at_the_fourth) as server:
        result = run_variant(variant, '--http2', *CODES, '-m', '1', '-s', server.url,
                             '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.lines
    assert '10 flags downloaded.' in result.lines


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_a_stream_never_answered_ends_at_the_timeout(variant: str, tmp_path: Path) -> None:
    """Streams of the same connection keep being answered meanwhile."""
    def stall_the_first(exchange: Exchange) -> None:
        if exchange.path != '/flags/ad/ad.gif':
            exchange.gif(FLAG)

    with h2_server(stall_the_first) as server:
        result = run_variant(variant, '--http2', *CODES, '-m', '5', '-s', server.url,
                             '-o', str(tmp_path), '--timeout', str(TIMEOUT), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert '9 flags downloaded.' in result.lines
    assert error_line(result.lines) == 'errors: 1 timed out'
    assert elapsed(result.lines) < TIMEOUT * 2 + 1


def test_a_window_that_never_opens_does_not_stop_a_get(tmp_path: Path) -> None:
    """A GET has no body to send: a server whose window stays at zero still
    answers every flag."""
    with h2_server(lambda exchange: exchange.gif(FLAG),
                   {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}) as server:
        result = run_variant('asyncio', '--http2', *CODES, '-s', server.url,
                             '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '10 flags downloaded.' in result.lines


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack('>I', stream_id) + payload


HEADERS, CONTINUATION = 0x1, 0x9


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_a_header_block_that_never_ends_is_cut_with_memory_bounded(
        variant: str, tmp_path: Path) -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames for ever. The
    connection is broken: each next code gets a new one, rather than wait for
    the broken one until its deadline."""
    def continuation_flood(exchange: Exchange) -> None:
        exchange.raw(frame(HEADERS, 0, exchange.stream_id, b'\x88'))  # :status 200
        chunk = frame(CONTINUATION, 0, exchange.stream_id, b'\x40\x01x\x7f\x7f' + b'a' * 16000)
        for _ in itertools.count():
            exchange.raw(chunk * 64)

    with h2_server(continuation_flood) as server:
        lines, rss = run_measured(variant, '--http2', *CODES, '-m', '1', '-s', server.url,
                                  '-o', str(tmp_path), '--timeout', str(TIMEOUT),
                                  cwd=tmp_path)
    assert '10 errors.' in lines, lines
    assert error_line(lines).startswith('errors: 10 HTTP/2 protocol error: ')
    assert elapsed(lines) < TIMEOUT
    assert rss < 150, f'{rss:.0f} MiB'


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_an_hpack_bomb_is_one_error(variant: str, tmp_path: Path) -> None:
    """One 4 KiB header value in the dynamic table, then named again 12,000
    times at one byte each: 48 MB of headers from 16 KB on the wire."""
    def hpack_bomb(exchange: Exchange) -> None:
        big = hpack.Encoder().encode([('x', 'a' * 4000)], huffman=False)  # the table's 62
        exchange.raw(frame(HEADERS, 0x4, exchange.stream_id, b'\x88' + big + b'\xbe' * 12000))

    with h2_server(hpack_bomb) as server:
        lines, rss = run_measured(variant, '--http2', *CODES, '-s', server.url,
                                  '-o', str(tmp_path), '--timeout', str(TIMEOUT),
                                  cwd=tmp_path)
    assert '10 errors.' in lines, lines
    # The other streams of a connection a bomb broke fail too, in h2's or
    # httpcore2's words ('Invalid input ... in state ConnectionState.CLOSED').
    assert 'HTTP/2 protocol error: Oversized header block' in error_line(lines)
    assert rss < 150, f'{rss:.0f} MiB'
