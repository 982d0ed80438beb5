"""The shared HTTP clients: which connection a request gets, and when TLS is set up."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import ROOT, FlagsServer
from flags2_common import (
    AsyncShardedTransport,
    ShardedTransport,
    ShardLoad,
    Shards,
    flag_url,
    make_async_client,
    make_client,
    shard_sizes,
)


def test_shards_hold_exactly_the_connections_asked_for() -> None:
    for concur_req in (1, 3, 4, 5, 30, 194, 676):
        sizes = shard_sizes(concur_req)
        assert sum(sizes) == concur_req
        assert max(sizes) - min(sizes) <= 1


def test_a_request_gets_the_most_recently_freed_connection() -> None:
    load = ShardLoad([1, 1, 1])
    first, second = load.take(), load.take()
    assert (first, second) == (0, 1)  # a cold start fills shards in order
    release_second = load.release_once(second)
    release_second()
    release_second()  # releasing twice frees the connection once
    assert load.take() == second  # the warm connection, not the never-used shard 2
    assert load.take() == 2
    assert load.open == [1, 1, 1]


def test_when_every_connection_is_busy_the_least_busy_shard_queues_it() -> None:
    load = ShardLoad([2, 1])
    taken = [load.take() for _ in range(3)]
    assert sorted(taken) == [0, 0, 1]
    extra = load.take()  # more requests than connections
    assert extra == 1
    load.release_once(extra)()
    assert load.free == []  # shard 1 is still full
    load.release_once(1)()
    assert load.free == [1]


def test_threads_reaching_an_unbuilt_shard_together_build_it_once() -> None:
    builds: list[int] = []

    def slow_build(size: int) -> httpx.HTTPTransport:
        builds.append(size)
        time.sleep(0.05)  # wide enough for every thread to find the shard unbuilt
        return httpx.HTTPTransport()

    shards = Shards(4, slow_build)  # one shard of 4 connections
    with ThreadPoolExecutor(max_workers=4) as pool:
        picked = list(pool.map(lambda _: shards.pick()[0], range(4)))
    assert builds == [4]
    assert all(shard is picked[0] for shard in picked)
    assert shards.all() == [picked[0]]
    picked[0].close()


def test_plain_http_never_loads_ca_certificates(local_server: FlagsServer) -> None:
    with make_client(5) as client:
        for cc in ('BR', 'CN', 'US'):
            assert client.get(flag_url(local_server.url, cc)).status_code == 200
        transport = client._transport
        assert isinstance(transport, ShardedTransport)
        assert not transport.tls.loaded
        assert transport.tls.cert_store_stats()['x509_ca'] == 0
        assert len(transport.shards.all()) == 1  # one warm shard served them all


@pytest.mark.parametrize('variant', ['sync', 'async'])
def test_the_first_https_handshake_loads_the_ca_certificates(
        variant: str, local_server: FlagsServer) -> None:
    # The bundled server speaks plain HTTP and waits for a request line, so the
    # TLS handshake stalls; what matters is that it was tried with real CAs.
    https_url = local_server.url.replace('http://', 'https://')
    transport: ShardedTransport | AsyncShardedTransport
    if variant == 'sync':
        with make_client(1) as client:
            assert client.get(flag_url(local_server.url, 'BR')).status_code == 200
            with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)):
                client.get(flag_url(https_url, 'BR'), timeout=0.3)
            assert isinstance(client._transport, ShardedTransport)
            transport = client._transport
    else:
        async def fetch() -> AsyncShardedTransport:
            async with make_async_client(1) as client:
                assert (await client.get(flag_url(local_server.url, 'BR'))).status_code == 200
                with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)):
                    await client.get(flag_url(https_url, 'BR'), timeout=0.3)
                assert isinstance(client._transport, AsyncShardedTransport)
                return client._transport
        transport = asyncio.run(fetch())
    assert transport.tls.loaded
    assert transport.tls.cert_store_stats()['x509_ca'] > 0
    assert transport.tls.verify_mode.name == 'CERT_REQUIRED'
    assert transport.tls.check_hostname


def test_the_http_stack_is_loaded_before_the_clock_starts() -> None:
    # httpx 0.28 imports httpcore on first use, and httpcore imports anyio's
    # asyncio backend on the first request: main() loads them before timing.
    code = ('import sys, asyncio, flags2_common\n'
            'flags2_common.preload_http_stack()\n'
            'print(*(name in sys.modules for name in '
            '("httpcore", "anyio._backends._asyncio", "httpcore._backends.anyio")))\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.split() == ['True', 'True', 'True'], result.stderr
