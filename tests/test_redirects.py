"""A redirect gets what the first request of a flag gets: its URL passes the
checks a base URL passes, its body the size cap, and its hops share the
flag's one deadline.

Each variant runs in a subprocess, as a user runs it: a traceback shows on
its stderr, and conftest.run_measured gives its peak RSS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from handmade import Answer, answer, code_of, handmade_server, head

from conftest import (
    EVERY_VARIANT,
    MARGIN,
    VARIANTS,
    elapsed,
    fetch_flag,
    run_measured,
    run_variant,
    saved_codes,
)

from flags2.failures import BadFlagError
from flags2.servers import FlagsServer
from flags2.wire import gzip_bomb

PORT_WORDS = '(a number from 1 to 65535)'


def test_a_redirect_to_a_url_no_base_url_may_have_is_that_codes_error(
        local_server: FlagsServer, tmp_path: Path) -> None:
    """Was: a host name with a 64-character or an empty label ended the sync
    variants in a UnicodeError traceback with no report; port 99999 ended the
    asyncio ones in an OverflowError; the sync ones took a port modulo 65536,
    and saved what the local server at port + 65536 sent as OK."""
    port = local_server.port
    hosts = {'AD': f'127.0.0.1:{port}',  # a redirect that is fine: the run goes on
             'BR': f'{"a" * 64}.localhost', 'CN': 'a..b',
             'DE': '127.0.0.1:99999', 'FR': f'127.0.0.1:{port + 65536}'}
    bad_name = 'bad redirect: the new URL has a bad host name: a part between dots is empty ' \
               'or over 63 characters'
    expected = [f'BR error: {bad_name}', f'CN error: {bad_name}',
                f"DE error: bad redirect: the new URL has a bad port: '99999' {PORT_WORDS}",
                f"FR error: bad redirect: the new URL has a bad port: '{port + 65536}' "
                f'{PORT_WORDS}']

    def redirect(path: str, number: int) -> Answer:
        return [answer('302 Found', b'', f'Location: http://{hosts[code_of(path)]}{path}')]

    with handmade_server(redirect) as server:
        for variant in EVERY_VARIANT:
            dest = tmp_path / variant
            result = run_variant(variant, '-v', '-s', server.url, '-o', str(dest), *hosts,
                                 cwd=tmp_path, timeout=30)
            assert 'Traceback' not in result.stderr, (variant, result.stderr)
            assert result.returncode == 1, (variant, result.stderr)
            assert sorted(line for line in result.lines if ' error: ' in line) == expected
            assert '1 flag downloaded.' in result.lines, variant
            assert '4 errors.' in result.lines, variant
            assert len(saved_codes(dest)) == 1, variant  # AD, or Andorra for flags3


# ------------------------------------------------------- a redirect's body

def long_body() -> Iterator[bytes]:
    """A 302 whose body, ended by the connection closing, is 200 MiB."""
    yield head('302 Found', 'Location: /flags/elsewhere', 'Connection: close')
    for _ in range(200 * 16):
        yield bytes(64 * 1024)


def endless_chunks() -> Iterator[bytes]:
    yield head('302 Found', 'Location: /flags/elsewhere', 'Transfer-Encoding: chunked')
    chunk = b'10000\r\n' + bytes(64 * 1024) + b'\r\n'
    while True:
        yield chunk


def bomb() -> Iterator[bytes]:
    body = gzip_bomb()  # under 1 MiB, 1000 MiB inflated
    yield answer('302 Found', body, 'Location: /flags/elsewhere', 'Content-Encoding: gzip')


REDIRECT_BODIES = {'200 MiB': long_body, 'endless chunks': endless_chunks, 'gzip bomb': bomb}


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('kind', REDIRECT_BODIES)
def test_a_redirect_body_stops_at_the_cap(kind: str, variant: str, tmp_path: Path) -> None:
    """The issue measured, per request, 441 MB for the 200 MiB body, 1.4-1.7 GB for
    the endless chunks and 1.0 GB for the bomb: a redirect's body is read (and
    dropped) by httpx2 before it follows the redirect."""
    def script(path: str, number: int) -> Answer:
        return REDIRECT_BODIES[kind]() if code_of(path) == 'BR' else [answer('404 Not Found')]

    with handmade_server(script) as server:
        lines, rss = run_measured(variant, '-v', '--timeout', '2', '-s', server.url,
                                  '-o', str(tmp_path), 'BR', cwd=tmp_path)
    assert 'BR error: response over 1 MiB' in lines
    assert rss < 120  # about 35 MiB: well below even one whole body


# ------------------------------------------------ one deadline for all hops

HOP = 0.3
TIMEOUT = 1.0


@pytest.mark.parametrize('variant', VARIANTS)
def test_every_hop_of_a_redirect_chain_shares_the_flags_deadline(variant: str,
                                                                 tmp_path: Path) -> None:
    """A bug once seen: the sync transports re-armed the deadline at each hop, so a
    chain of 0.3 s hops with --timeout 1 ran 6.5 s and ended 'too many redirects'."""
    def slow_hop(path: str, number: int) -> Answer:
        time.sleep(HOP)
        return [answer('302 Found', b'', f'Location: {path}x')]

    with handmade_server(slow_hop) as server:
        result = run_variant(variant, '-v', '--timeout', f'{TIMEOUT:g}', '-s', server.url,
                             '-o', str(tmp_path), 'BR', cwd=tmp_path, timeout=30)
    assert f'BR error: timed out after {TIMEOUT:g} s' in result.lines, result.stdout
    assert elapsed(result.lines) < TIMEOUT + 2 * MARGIN + 0.2


def test_a_url_no_base_url_may_have_is_refused_before_it_is_sent() -> None:
    """Not only a redirect's: a request the run's client is handed is checked too.
    Was: a UnicodeError, from the resolver."""
    with pytest.raises(BadFlagError) as info:
        fetch_flag('http://a..b/flags/br/br.gif', 1.0)
    assert str(info.value) == ('bad URL: the URL has a bad host name: a part between dots '
                               'is empty or over 63 characters')
