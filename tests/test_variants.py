"""What every variant must do against the real bundled server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import flags2_asyncio
import flags2_sequential
import flags2_threadpool
from conftest import (
    CONCURRENT_VARIANTS,
    VARIANTS,
    assert_valid_gifs,
    run_in_process,
    run_variant,
    saved_codes,
)
from flags2_common import POP20_CC, DownloadStatus, save_flag
from flags_server import Workload

from flags2.clients import make_async_client
from flags2.codes import country_codes
from flags2.runs import Run
from flags2.servers import FlagsServer

ALL_CODES = list(country_codes())


@pytest.mark.parametrize('variant', VARIANTS)
def test_all_flags_from_local(variant: str, local_server: FlagsServer, tmp_path: Path) -> None:
    dest = tmp_path / 'flags'
    result = run_variant(variant, '-a', '-s', local_server.url, '-o', str(dest), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '194 flags downloaded.' in result.lines
    assert result.lines[1] == 'Searching for 194 flags: from AD to ZW'
    assert result.lines[-1].startswith('Elapsed time: ')
    assert saved_codes(dest) == ALL_CODES
    assert_valid_gifs(dest)
    assert '100%' in result.stderr  # the progress bar


@pytest.mark.parametrize('variant', VARIANTS)
def test_default_is_top_20_into_downloaded(variant: str, local_server: FlagsServer,
                                           tmp_path: Path) -> None:
    result = run_variant(variant, '-s', local_server.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'Searching for 20 flags: from BD to VN' in result.lines
    assert '20 flags downloaded.' in result.lines
    assert saved_codes(tmp_path / 'downloaded') == sorted(POP20_CC)


@pytest.mark.parametrize('variant', VARIANTS)
def test_verbose_prints_one_line_per_code_and_no_bar(variant: str, delay_server: FlagsServer,
                                                     tmp_path: Path) -> None:
    result = run_variant(variant, '-v', '-s', delay_server.url, '-o', str(tmp_path),
                         'BR', 'ZZ', 'us', 'CN', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    code_lines = sorted(line for line in result.lines if line[:3] in ('BR ', 'ZZ ', 'US ', 'CN '))
    assert code_lines == ['BR OK', 'CN OK', 'US OK', 'ZZ not found']
    assert '3 flags downloaded.' in result.lines
    assert '1 not found.' in result.lines
    assert '%|' not in result.stderr
    assert saved_codes(tmp_path) == ['BR', 'CN', 'US']


@pytest.mark.parametrize('variant', VARIANTS)
def test_error_server_counts_add_up(variant: str, error_server: FlagsServer,
                                    tmp_path: Path) -> None:
    codes = [*ALL_CODES[:40], 'QQ', 'XX']
    result = run_variant(variant, '-v', '-m', '10', '-s', error_server.url, '-o', str(tmp_path),
                         *codes, cwd=tmp_path)
    failing = sorted(cc for cc in codes if cc in ALL_CODES and Workload('error').fails(cc))
    assert failing, 'the default seed must make some of these codes fail'
    ok = sorted(cc for cc in codes if cc in ALL_CODES and cc not in failing)
    assert result.returncode == 1
    assert f'{len(ok)} flags downloaded.' in result.lines
    assert '2 not found.' in result.lines
    assert f'{len(failing)} errors.' in result.lines
    assert f'errors: {len(failing)} HTTP 418' in result.lines
    error_lines = sorted(line for line in result.lines if ' error: ' in line)
    assert error_lines == [f"{cc} error: HTTP 418 I'm a Teapot" for cc in failing]
    assert saved_codes(tmp_path) == ok


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_every_code_against_error(variant: str, error_server: FlagsServer,
                                  tmp_path: Path) -> None:
    result = run_variant(variant, '-e', '-m', '100', '-s', error_server.url,
                         '-o', str(tmp_path), cwd=tmp_path)
    failing = [cc for cc in ALL_CODES if Workload('error').fails(cc)]
    assert result.returncode == 1
    assert f'{194 - len(failing)} flags downloaded.' in result.lines
    assert f'{676 - 194} not found.' in result.lines
    assert f'{len(failing)} errors.' in result.lines
    assert len(saved_codes(tmp_path)) == 194 - len(failing)


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
@pytest.mark.parametrize(('max_req', 'args', 'expected'), [
    ('1', ('-l', '2'), 1),
    ('5', ('-l', '6'), 5),
    ('100', ('-a',), 100),
    ('1000', ('-a',), 194),
])
def test_peak_in_flight_is_exactly_the_concurrency(
        variant: str, max_req: str, args: tuple[str, ...], expected: int,
        slow_server: FlagsServer, tmp_path: Path) -> None:
    slow_server.reset()
    result = run_variant(variant, '-m', max_req, *args, '-s', slow_server.url,
                         '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if expected == 1:
        assert '1 connection will be used.' in result.lines
    else:
        assert f'{expected} concurrent connections will be used.' in result.lines
    assert slow_server.stats()['peak_in_flight'] == expected
    on = f'on {expected} connection' + ('s' if expected > 1 else '')  # every one busy at once
    assert f'Peak requests in flight at the server: {expected}, {on}.' in result.lines


class CountingRelay:
    """A TCP relay on loopback in front of a server, counting the connections
    that carry flag requests (main's /stats requests come on connections of
    their own)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.first_lines: list[bytes] = []
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []

    @property
    def flag_connections(self) -> int:
        return sum(line.startswith(b'GET /flags/') for line in self.first_lines)

    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}/flags'

    def accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            upstream = socket.create_connection(('127.0.0.1', self.upstream_port))
            self.sockets += [client, upstream]
            index = len(self.first_lines)
            self.first_lines.append(b'')
            for src, dst, note in ((client, upstream, index), (upstream, client, None)):
                threading.Thread(target=self.pipe, args=(src, dst, note), daemon=True).start()

    def pipe(self, src: socket.socket, dst: socket.socket, note: int | None) -> None:
        try:
            while data := src.recv(65536):
                if note is not None and not self.first_lines[note]:
                    self.first_lines[note] = data.split(b'\r\n', 1)[0]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    @contextlib.contextmanager
    def running(self) -> Iterator[CountingRelay]:
        thread = threading.Thread(target=self.accept_loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            thread.join()
            self.listener.close()
            for sock in self.sockets:
                sock.close()


def test_sequential_downloads_every_flag_over_one_connection(delay_server: FlagsServer,
                                                             tmp_path: Path) -> None:
    with CountingRelay(delay_server.port).running() as relay:
        result = run_variant('sequential', '-m', '50', '-l', '10', '-a', '-s', relay.url(),
                             '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '1 connection will be used.' in result.lines
    assert '10 flags downloaded.' in result.lines
    assert relay.flag_connections == 1, relay.first_lines


def test_asyncio_semaphore_throttles_even_a_client_with_room_for_more(
        monkeypatch: pytest.MonkeyPatch, slow_server: FlagsServer, tmp_path: Path) -> None:
    concur_req = 3

    def roomy_client(concur_req: int) -> httpx2.AsyncClient:
        return make_async_client(3 * concur_req)

    monkeypatch.setattr(flags2_asyncio, 'make_async_client', roomy_client)
    slow_server.reset()
    counter, _ = run_in_process(flags2_asyncio.download_many, ALL_CODES[:2 * concur_req],
                                slow_server.url, True, concur_req, dest=tmp_path)
    assert counter[DownloadStatus.OK] == 2 * concur_req
    assert slow_server.stats()['peak_in_flight'] == concur_req


def test_threadpool_runs_exactly_concur_req_worker_threads(
        monkeypatch: pytest.MonkeyPatch, delay_server: FlagsServer, tmp_path: Path) -> None:
    concur_req = 4
    workers: set[int] = set()
    download_one = flags2_sequential.download_one  # what the threadpool submits

    def spy(*args: Any) -> DownloadStatus:
        workers.add(threading.get_ident())
        return download_one(*args)

    monkeypatch.setattr(flags2_threadpool, 'download_one', spy)
    counter, _ = run_in_process(flags2_threadpool.download_many, ALL_CODES[:24],
                                delay_server.url, True, concur_req, dest=tmp_path)
    assert counter[DownloadStatus.OK] == 24
    assert len(workers) == concur_req


def test_saving_a_flag_leaves_an_open_reader_with_the_old_bytes(tmp_path: Path) -> None:
    path = tmp_path / 'BR.gif'
    path.write_bytes(b'GIF89a old flag')
    with path.open('rb') as reader, Run(tmp_path, 1):  # save_flag writes into the run's dest
        save_flag(b'GIF89a new flag, a longer one', 'BR.gif')  # replaces; never writes in place
        assert reader.read() == b'GIF89a old flag'
    assert path.read_bytes() == b'GIF89a new flag, a longer one'
    assert saved_codes(tmp_path) == ['BR']  # no temporary file left
