"""Run a variant with the book's HTTP client set-up, for comparison only.

    python benchmarks/book.py VARIANT [the variant's options]

The book's sequential and threadpool scripts call ``httpx.get`` in
``get_flag``: a new client, so a new connection and a new TLS context, for
every flag. Its asyncio script shares one ``httpx.AsyncClient()`` with the
default pool of 100 connections. This wrapper swaps exactly those two things
into the real variants, so every other line (checks, saving, reports) is the
same code the benchmark measures for flags2; the variant scripts themselves
get no flag for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

import flags2_asyncio
import flags2_sequential
import flags2_threadpool
from flags2_common import FlagBody, flag_url, settings

VARIANTS = {
    'sequential': flags2_sequential,
    'threadpool': flags2_threadpool,
    'asyncio': flags2_asyncio,
}


def get_flag_per_request_client(client: httpx.Client, base_url: str, cc: str) -> bytes:
    """The book's get_flag: ignores the shared client, as httpx.get makes its own."""
    del client
    url = flag_url(base_url, cc)
    with httpx.stream('GET', url, timeout=settings.timeout, follow_redirects=True) as resp:
        body = FlagBody(resp)
        for chunk in resp.iter_bytes():
            body.add(chunk)
        resp.raise_for_status()
        return body.image()


def default_async_client(concur_req: int) -> httpx.AsyncClient:
    """The book's AsyncClient(): httpx's default pool, whatever -m says."""
    del concur_req
    return httpx.AsyncClient(timeout=settings.timeout)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        print(f'usage: {sys.argv[0]} {{{",".join(VARIANTS)}}} [options]', file=sys.stderr)
        sys.exit(2)
    variant = sys.argv.pop(1)
    # threadpool calls flags2_sequential.download_one, which looks get_flag up there.
    flags2_sequential.get_flag = get_flag_per_request_client
    flags2_asyncio.make_async_client = default_async_client  # type: ignore[attr-defined]
    VARIANTS[variant].cli()


if __name__ == '__main__':
    main()
