"""The bundled server's /flags/{cc}/metadata.json: the book's country data for
flags3_asyncio.py, served as a flag is, with the same delay, stats and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import http_get
from flags_server import OVERSIZE_BYTES, Workload, metadata_json

from flags2.codes import countries, country_codes
from flags2.servers import FlagsServer, running_server

ALL_CODES = country_codes()
FAULT_KINDS = ('503', 'html', 'oversize', 'redirect-loop', 'truncate', 'reset')
DELAY_MIN, DELAY_MAX = 0.3, 0.4  # long enough to tell a delay from a fast answer


def metadata_url(server: FlagsServer, cc: str) -> str:
    return f'{server.url}/{cc.lower()}/metadata.json'


def flag_url(server: FlagsServer, cc: str) -> str:
    return f'{server.url}/{cc.lower()}/{cc.lower()}.gif'


def fetch(server: FlagsServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) read until the server closes: no redirect followed,
    and a body cut short is returned as it came."""
    with socket.create_connection(('127.0.0.1', server.port), timeout=5) as sock:
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
        data = b''
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    status_line, *lines = head.decode('latin-1').split('\r\n')
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(':') for line in lines)}
    return int(status_line.split()[1]), headers, body


# ---------------------------------------------------------------- the data

def test_every_code_has_the_books_four_fields(local_server: FlagsServer) -> None:
    names = set()
    for cc in ALL_CODES:
        status, body, content_type = http_get(metadata_url(local_server, cc))
        assert (status, content_type) == (200, 'application/json'), cc
        data = json.loads(body.decode('utf-8'))
        assert list(data) == ['tld_cc', 'iso_cc', 'country', 'gec_cc']  # the book's order
        assert data['iso_cc'] == cc
        assert data['tld_cc'] == data['tld_cc'].lower() and data['tld_cc'].startswith('.')
        assert len(data['gec_cc']) == 2 and data['gec_cc'].isupper()
        assert data['country'].strip() == data['country'] != ''
        names.add(data['country'])
    assert len(names) == len(ALL_CODES) == 194  # no two countries share a name


def test_the_table_covers_exactly_the_codes_that_have_a_flag() -> None:
    assert sorted(countries()) == list(ALL_CODES)


@pytest.mark.parametrize(('cc', 'expected'), [
    ('BR', {'tld_cc': '.br', 'iso_cc': 'BR', 'country': 'Brazil', 'gec_cc': 'BR'}),
    ('CI', {'tld_cc': '.ci', 'iso_cc': 'CI', 'country': "Côte d'Ivoire", 'gec_cc': 'IV'}),
    ('KP', {'tld_cc': '.kp', 'iso_cc': 'KP', 'country': 'Korea, North', 'gec_cc': 'KN'}),
    ('KR', {'tld_cc': '.kr', 'iso_cc': 'KR', 'country': 'Korea, South', 'gec_cc': 'KS'}),
    ('GB', {'tld_cc': '.uk', 'iso_cc': 'GB', 'country': 'United Kingdom', 'gec_cc': 'UK'}),
])
def test_spot_checks(cc: str, expected: dict[str, str], local_server: FlagsServer) -> None:
    status, body, _ = http_get(metadata_url(local_server, cc))
    assert status == 200
    assert json.loads(body) == expected


def test_names_are_utf8_on_the_wire_not_escapes(local_server: FlagsServer) -> None:
    _, body, _ = http_get(metadata_url(local_server, 'CI'))
    assert b'"country": "C\xc3\xb4te d\'Ivoire"' in body
    assert b'\\u' not in body
    assert body == metadata_json('CI')


@pytest.mark.parametrize('path', [
    '/flags/zz/metadata.json', '/flags/BR/metadata.json', '/flags/br/metadata.json/',
    '/flags/br/br.json', '/flags/br/metadata', '/flags/metadata.json',
])
def test_unknown_codes_and_other_paths_are_404(path: str, local_server: FlagsServer) -> None:
    status, body, _ = http_get(f'http://127.0.0.1:{local_server.port}{path}')
    assert (status, body) == (404, b'404 Not Found\n')


# --------------------------------------------- a flag request in all but body

@pytest.fixture(scope='module')
def slow_server() -> Iterator[FlagsServer]:
    with running_server('delay', '--delay-min', str(DELAY_MIN),
                        '--delay-max', str(DELAY_MAX)) as server:
        yield server


def test_metadata_waits_the_same_seeded_delay_as_the_flag(slow_server: FlagsServer) -> None:
    expected = Workload('delay', delay_min=DELAY_MIN, delay_max=DELAY_MAX).delay('CI')
    for url in (metadata_url(slow_server, 'CI'), flag_url(slow_server, 'CI')):
        t0 = time.perf_counter()
        status, _, _ = http_get(url)
        elapsed = time.perf_counter() - t0
        assert status == 200
        assert expected <= elapsed < expected + 0.25, url


def test_metadata_requests_count_in_stats_and_the_log(slow_server: FlagsServer) -> None:
    paths = ['/flags/br/metadata.json'] * 4 + ['/flags/br/br.gif'] * 3
    paths += ['/flags/zz/metadata.json', '/flags/br/']

    async def fetch_all() -> None:  # all at once, so every one is in flight together
        async def one(path: str) -> None:
            reader, writer = await asyncio.open_connection('127.0.0.1', slow_server.port)
            writer.write(f'GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
                         .encode())
            await reader.read()
            writer.close()
        await asyncio.gather(*(one(path) for path in paths))

    slow_server.reset()
    asyncio.run(fetch_all())
    stats = slow_server.stats()
    assert stats['requests'] == {'200': 7, '404': 2}
    assert stats['peak_in_flight'] == 9
    assert stats['in_flight'] == 0
    log: list[dict[str, Any]] = slow_server.get_json('/stats/requests')['requests']
    seen = sorted((r['code'], r['kind'], r['status']) for r in log)
    assert seen == sorted([('BR', 'metadata', 200)] * 4 + [('BR', 'flag', 200)] * 3
                          + [('ZZ', 'metadata', 404), ('/flags/br/', None, 404)])
    assert all({'start', 'end', 'code', 'status', 'kind', 'connection'} == set(r) for r in log)


# ----------------------------------------------------------------- faults

def test_the_flag_keeps_its_fault_decisions() -> None:
    workload = Workload('error')
    assert all(workload.fault(cc) == workload.fault(cc, 'flag') for cc in ALL_CODES)
    assert all(workload.fails(cc) == workload.fails(cc, 'flag') for cc in ALL_CODES)


def test_metadata_faults_are_drawn_apart_from_the_flags() -> None:
    workload = Workload('error')
    flag_fails = {cc for cc in ALL_CODES if workload.fails(cc)}
    metadata_fails = {cc for cc in ALL_CODES if workload.fails(cc, 'metadata')}
    assert 0.15 < len(metadata_fails) / 194 < 0.35  # the same share, other codes
    assert flag_fails - metadata_fails and metadata_fails - flag_fails
    assert metadata_fails == {cc for cc in ALL_CODES if Workload('error').fails(cc, 'metadata')}
    assert not any(Workload('delay').fails(cc, 'metadata') for cc in ALL_CODES)


def test_error_server_fails_flag_and_metadata_each_as_seeded(error_server: FlagsServer) -> None:
    workload = Workload('error')
    flag_only = [cc for cc in ALL_CODES
                 if workload.fails(cc) and not workload.fails(cc, 'metadata')][:3]
    metadata_only = [cc for cc in ALL_CODES
                     if workload.fails(cc, 'metadata') and not workload.fails(cc)][:3]
    assert flag_only and metadata_only
    for cc in flag_only:
        assert http_get(flag_url(error_server, cc))[0] == 418, cc
        assert http_get(metadata_url(error_server, cc))[0] == 200, cc
    for cc in metadata_only:
        assert http_get(flag_url(error_server, cc))[0] == 200, cc
        assert http_get(metadata_url(error_server, cc))[0] == 418, cc
    for cc in ALL_CODES[:30]:
        expected = 418 if workload.fails(cc, 'metadata') else 200
        assert http_get(metadata_url(error_server, cc))[0] == expected, cc


@pytest.fixture(scope='module')
def fault_servers() -> Iterator[dict[str, FlagsServer]]:
    """One server per fault kind, faulting every request."""
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(running_server(
                   'local', '--fault', kind, '--fault-rate', '1'))
               for kind in FAULT_KINDS}


@pytest.mark.parametrize('kind', FAULT_KINDS)
def test_faults_apply_to_metadata_as_to_flags(kind: str,
                                              fault_servers: dict[str, FlagsServer]) -> None:
    server = fault_servers[kind]
    path = '/flags/ci/metadata.json'
    if kind == 'reset':
        with pytest.raises(ConnectionResetError):
            fetch(server, path)
        return
    status, headers, body = fetch(server, path)
    if kind.isdigit():
        assert status == int(kind)
    elif kind == 'html':
        assert (status, headers['content-type']) == (200, 'text/html; charset=utf-8')
    elif kind == 'oversize':
        assert (status, headers['content-type']) == (200, 'application/json')
        assert len(body) == OVERSIZE_BYTES > 1024 * 1024
        assert isinstance(json.loads(body), dict)  # only its size is wrong
    elif kind == 'redirect-loop':
        assert (status, headers['location']) == (302, path)
    elif kind == 'truncate':
        whole = metadata_json('CI')
        assert (status, headers['content-type']) == (200, 'application/json')
        assert body == whole[:len(whole) // 2]
        assert int(headers['content-length']) == len(whole)
