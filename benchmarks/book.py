"""Run a variant with the book's HTTP client set-up, for comparison only.

    python benchmarks/book.py VARIANT [the variant's options]

The book's sequential and threadpool scripts call ``httpx.get`` in
``get_flag``: a new client, so a new connection and a new TLS context, for
every flag. Its asyncio script shares one ``httpx.AsyncClient()`` with the
default pool of 100 connections. This wrapper swaps exactly those two things
into the real variants, on httpx2 (httpx's continuation, same API: the
book's calls run unchanged with ``httpx2`` for ``httpx``), so every other
line (checks, saving, reports) is the same code the benchmark measures for
flags2; the variant scripts themselves get no flag for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2

import flags2_asyncio
import flags2_sequential
import flags2_threadpool
from flags2_common import flag_url

from flags2.failures import read_flag

VARIANTS = {
    'sequential': flags2_sequential,
    'threadpool': flags2_threadpool,
    'asyncio': flags2_asyncio,
}


def get_flag_per_request_client(client: httpx2.Client, base_url: str, cc: str) -> bytes:
    """The book's get_flag: ``httpx2.stream`` makes a client of its own per call.

    The shared client is only asked for its timeout, so --timeout still applies.
    """
    url = flag_url(base_url, cc)
    with httpx2.stream('GET', url, timeout=client.timeout, follow_redirects=True) as resp:
        return read_flag(resp)


def default_async_client(concur_req: int, timeout: float) -> httpx2.AsyncClient:
    """The book's AsyncClient(): httpx2's default pool of 100, whatever -m says."""
    del concur_req
    return httpx2.AsyncClient(timeout=timeout)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        print(f'usage: {sys.argv[0]} {{{",".join(VARIANTS)}}} [options]', file=sys.stderr)
        sys.exit(2)
    variant = sys.argv.pop(1)
    # threadpool calls flags2_sequential.download_one, which looks get_flag up there.
    flags2_sequential.get_flag = get_flag_per_request_client
    # the variant imported the name: patch it where supervisor() looks it up
    flags2_asyncio.make_async_client = default_async_client  # type: ignore[attr-defined]
    VARIANTS[variant].cli()


if __name__ == '__main__':
    main()
