"""Run a variant with the book's HTTP client set-up, for comparison only.

    python benchmarks/book.py VARIANT [the variant's options]

The book's sequential and threadpool scripts call ``httpx.get`` in
``get_flag``: a new client, so a new connection and a new TLS context, for
every flag. Its asyncio script shares one ``httpx.AsyncClient()`` with the
default pool of 100 connections. This wrapper swaps exactly those two things
into the real variants, on httpx2 (httpx's continuation, same API: the
book's calls run unchanged with ``httpx2`` for ``httpx``), so every other
line (checks, saving, reports) is the same code the benchmark measures for
flags2; the variant scripts themselves get no flag for it. The checks of
each body live in flags2's transports now: the book's clients get them from
benchmarks/checked.py, around httpx2's own transports.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2
from checked import AsyncCheckedTransport, CheckedTransport

import flags2_asyncio
import flags2_sequential
import flags2_threadpool

from flags2.clients import make_client
from flags2.runs import Run, current_run

VARIANTS = {
    'sequential': flags2_sequential,
    'threadpool': flags2_threadpool,
    'asyncio': flags2_asyncio,
}


def get_flag_per_request_client(client: httpx2.Client, base_url: str, cc: str) -> bytes:
    """The book's get_flag: ``httpx2.get`` makes a client of its own per call
    (a new transport, so a new connection and a new TLS context).

    The shared client is only asked for its timeout, so --timeout still applies,
    and stands for its run (RUNS): a threadpool worker has no current run.
    """
    cc = cc.lower()
    transport = CheckedTransport(httpx2.HTTPTransport(), RUNS[client])
    with httpx2.Client(transport=transport, timeout=client.timeout) as own_client:
        resp = own_client.get(f'{base_url}/{cc}/{cc}.gif', follow_redirects=True)
    resp.raise_for_status()
    return resp.content


# The run of each shared client, recorded when the variant makes it: a
# threadpool worker has no current run, and finds it here through the client.
RUNS: weakref.WeakKeyDictionary[httpx2.Client, Run] = weakref.WeakKeyDictionary()


def recording_make_client(concur_req: int) -> httpx2.Client:
    client = make_client(concur_req)
    RUNS[client] = current_run()
    return client


def default_async_client(concur_req: int) -> httpx2.AsyncClient:
    """The book's AsyncClient(): httpx2's default pool of 100, whatever -m says.

    Attached to the run's event loop as make_async_client is (saves in the
    run's threads, a stop cancels the downloads): the client differs, not the run.
    """
    del concur_req
    run = current_run()
    run.attach_loop(asyncio.get_running_loop())
    return httpx2.AsyncClient(transport=AsyncCheckedTransport(httpx2.AsyncHTTPTransport()),
                              timeout=run.timeout)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        print(f'usage: {sys.argv[0]} {{{",".join(VARIANTS)}}} [options]', file=sys.stderr)
        sys.exit(2)
    variant = sys.argv.pop(1)
    # threadpool calls flags2_sequential.download_one, which looks get_flag up there.
    flags2_sequential.get_flag = get_flag_per_request_client
    flags2_sequential.make_client = recording_make_client  # type: ignore[attr-defined]
    flags2_threadpool.make_client = recording_make_client  # type: ignore[attr-defined]
    # the variant imported the name: patch it where supervisor() looks it up
    flags2_asyncio.make_async_client = default_async_client  # type: ignore[attr-defined]
    VARIANTS[variant].cli()


if __name__ == '__main__':
    main()
