"""Run a variant with some of flags2/clients.py's plumbing swapped for the
plain httpx2 way, for benchmarks/plumbing.py only.

    python benchmarks/plumbing_runner.py VARIANT PLAIN [the variant's options]

PLAIN is a comma-separated list of pieces to replace, or 'none':

* ``pool``: one plain ``httpx2.Client``/``AsyncClient`` with room for
  concur_req connections, instead of the shards of SHARD_SIZE. It verifies
  TLS as httpx2 does by default (an eager context), as the plain client would.
  Its transport is httpx2's own, wrapped by benchmarks/checked.py in the
  body checks every run makes (flags2's transports make them now); it has no
  deadline per request and is not cut short when the run stops.
* ``tls``: the shards keep their pools, but share one eager
  ``httpx2.create_ssl_context()`` instead of the LazyTLSContext.
* ``preload``: no ``flags2.runs.preload_http_stack``: the first request
  imports the rest of the HTTP stack, inside Elapsed.

flags2/clients.py and flags2/runs.py stay as they are: the names are patched
where the variants look them up (they did ``from flags2.clients import
make_client``), and where ``Run`` looks ``preload_http_stack`` up.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2
from checked import AsyncCheckedTransport, CheckedTransport

import flags2_asyncio
import flags2_sequential
import flags2_threadpool

import flags2.clients
import flags2.runs
from flags2.runs import current_run

VARIANTS = {
    'sequential': flags2_sequential,
    'threadpool': flags2_threadpool,
    'asyncio': flags2_asyncio,
}
PIECES = ('pool', 'tls', 'preload')


def plain_limits(concur_req: int) -> httpx2.Limits:
    return httpx2.Limits(max_connections=concur_req, max_keepalive_connections=concur_req)


def plain_client(concur_req: int) -> httpx2.Client:
    run = current_run()
    transport = httpx2.HTTPTransport(limits=plain_limits(concur_req))
    return httpx2.Client(transport=CheckedTransport(transport, run), timeout=run.timeout)


def plain_async_client(concur_req: int) -> httpx2.AsyncClient:
    """Attached to the run's event loop as make_async_client is: only the client differs."""
    run = current_run()
    run.attach_loop(asyncio.get_running_loop())
    transport = httpx2.AsyncHTTPTransport(limits=plain_limits(concur_req))
    return httpx2.AsyncClient(transport=AsyncCheckedTransport(transport), timeout=run.timeout)


def no_preload() -> None:
    """Nothing: httpx2 imports httpcore2 and anyio when the first pool is built."""


def patch(name: str, value: object, *modules: ModuleType) -> None:
    for module in modules:
        if hasattr(module, name):
            setattr(module, name, value)


def swap(pieces: set[str]) -> None:
    if 'pool' in pieces:
        patch('make_client', plain_client,
              flags2.clients, flags2_sequential, flags2_threadpool)
        patch('make_async_client', plain_async_client, flags2.clients, flags2_asyncio)
    if 'tls' in pieces:
        # ShardedTransport.__init__ looks LazyTLSContext up in flags2.clients
        # for each client, so one eager context is made per client, then shared.
        patch('LazyTLSContext', httpx2.create_ssl_context, flags2.clients)
    if 'preload' in pieces:
        patch('preload_http_stack', no_preload, flags2.runs)


def main() -> None:
    usage = f'usage: {sys.argv[0]} {{{",".join(VARIANTS)}}} {{none|{",".join(PIECES)}}} ...'
    if len(sys.argv) < 3 or sys.argv[1] not in VARIANTS:
        sys.exit(usage)
    variant, plain = sys.argv.pop(1), sys.argv.pop(1)
    pieces = set() if plain == 'none' else set(plain.split(','))
    if not pieces <= set(PIECES):
        sys.exit(usage)
    swap(pieces)
    VARIANTS[variant].cli()


if __name__ == '__main__':
    main()
