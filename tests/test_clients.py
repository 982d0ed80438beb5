"""The shared HTTP clients: which connection a request gets, when TLS is set up,
and that the HTTP stack is loaded before a run's clock starts."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from conftest import NO_DEST, ROOT, flag_url, free_port

from flags2.clients import (
    AsyncShardedTransport,
    ShardedTransport,
    ShardLoad,
    Shards,
    make_async_client,
    make_client,
    shard_sizes,
)
from flags2.runs import ANYIO_ASYNCIO_BACKEND, Run
from flags2.servers import FlagsServer

TIMEOUT = 5.0


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

    def slow_build(size: int) -> httpx2.Client:
        builds.append(size)
        time.sleep(0.05)  # wide enough for every thread to find the shard unbuilt
        return httpx2.Client()

    shards = Shards([4], slow_build)  # one shard of 4 connections
    with ThreadPoolExecutor(max_workers=4) as pool:
        picked = list(pool.map(lambda _: shards.pick()[1], range(4)))
    assert builds == [4]
    assert all(shard is picked[0] for shard in picked)
    assert shards.all() == [picked[0]]
    picked[0].close()


def test_plain_http_never_loads_ca_certificates(local_server: FlagsServer) -> None:
    with Run(NO_DEST, TIMEOUT), make_client(5) as client:
        for cc in ('BR', 'CN', 'US'):
            assert client.get(flag_url(local_server.url, cc)).status_code == 200
        transport = client._transport
        assert isinstance(transport, ShardedTransport)
        assert transport.tls.real is None  # no real TLS context was ever made
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
        with Run(NO_DEST, TIMEOUT), make_client(1) as client:
            assert client.get(flag_url(local_server.url, 'BR')).status_code == 200
            with pytest.raises((httpx2.ConnectError, httpx2.ConnectTimeout)):
                client.get(flag_url(https_url, 'BR'), timeout=0.3)
            assert isinstance(client._transport, ShardedTransport)
            transport = client._transport
    else:
        async def fetch() -> AsyncShardedTransport:
            async with make_async_client(1) as client:
                assert (await client.get(flag_url(local_server.url, 'BR'))).status_code == 200
                with pytest.raises((httpx2.ConnectError, httpx2.ConnectTimeout)):
                    await client.get(flag_url(https_url, 'BR'), timeout=0.3)
                assert isinstance(client._transport, AsyncShardedTransport)
                return client._transport
        with Run(NO_DEST, TIMEOUT):
            transport = asyncio.run(fetch())
    real = transport.tls.real
    assert real is not None
    assert real.cert_store_stats()['x509_ca'] > 0
    assert real.verify_mode.name == 'CERT_REQUIRED'
    assert real.check_hostname


# What a first request imports when nothing preloaded it: httpcore2 (with h11
# and anyio) for any client, and anyio's asyncio backend for an AsyncClient.
HTTP_STACK = ('httpcore2', 'h11', 'anyio', ANYIO_ASYNCIO_BACKEND)

# Runs a variant's real main() in a fresh interpreter, against a server that
# refuses connections; download_many is wrapped to note, when main calls it
# (right after starting the clock), which parts of the stack are loaded.
PRELOAD_PROBE = '''
import json, sys
import flags2_{variant} as variant
from flags2_common import main

stack = {stack!r}
seen = {{'at import': [m for m in stack if m in sys.modules]}}

def download_many(*args, **kwargs):
    seen['when timed'] = [m for m in stack if m in sys.modules]
    return variant.download_many(*args, **kwargs)

try:
    main(download_many, 1, 1, ['-s', {url!r}, '-o', {dest!r}, 'BR'])
finally:
    print(json.dumps(seen))
'''


@pytest.mark.parametrize('variant', ['sequential', 'threadpool', 'asyncio'])
def test_main_loads_the_http_stack_before_the_clock_starts(
        variant: str, tmp_path: Path) -> None:
    url = f'http://127.0.0.1:{free_port()}/flags'  # nothing listens: no request succeeds
    code = PRELOAD_PROBE.format(variant=variant, stack=HTTP_STACK, url=url,
                                dest=str(tmp_path))
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen['at import'] == [], 'importing the script already loads the stack'
    assert seen['when timed'] == list(HTTP_STACK), result.stderr


def test_anyio_still_has_its_asyncio_backend_where_the_preload_imports_it() -> None:
    """The preload's one private name: if anyio moves the module, this fails
    (the preload itself would only get slower, silently)."""
    assert importlib.util.find_spec(ANYIO_ASYNCIO_BACKEND) is not None
