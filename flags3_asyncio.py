"""Download flags with coroutines, two requests per country: the flag, then
its metadata, one ``await`` after the other; each flag is saved under the
country's name (``Côte_d'Ivoire.gif``).

Each request takes the semaphore on its own, so the server never sees more
than ``concur_req`` requests at once. Sample run::

    $ python flags3_asyncio.py -s DELAY -a -m 10
    DELAY site: http://localhost:8001/flags
    Searching for 194 flags: from AD to ZW
    10 concurrent connections will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 10, on 10 connections.
    Elapsed time: 20.39s
"""

import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Iterable
from http import HTTPStatus

import httpx2  # httpx's maintained continuation, same API
import tqdm

from flags2_common import CodeFailure, DownloadStatus, main, record_error, save_flag

from flags2.clients import make_async_client
from flags2.failures import code_on_failure

DEFAULT_CONCUR_REQ = 5
MAX_CONCUR_REQ = 1000


async def get_flag(client: httpx2.AsyncClient, base_url: str, cc: str) -> bytes:
    cc = cc.lower()
    resp = await client.get(f'{base_url}/{cc}/{cc}.gif', follow_redirects=True)
    resp.raise_for_status()
    return resp.content


async def get_country(client: httpx2.AsyncClient, base_url: str, cc: str) -> str:
    cc = cc.lower()
    resp = await client.get(f'{base_url}/{cc}/metadata.json', follow_redirects=True)
    resp.raise_for_status()
    metadata = resp.json()
    return str(metadata['country'])


async def download_one(client: httpx2.AsyncClient, cc: str, base_url: str,
                       semaphore: asyncio.Semaphore, verbose: bool) -> DownloadStatus:
    try:
        async with semaphore:
            image = await get_flag(client, base_url, cc)
        async with semaphore:  # taken again: other codes' requests go in between
            country = await get_country(client, base_url, cc)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise
        status = DownloadStatus.NOT_FOUND
    else:
        filename = country.replace(' ', '_')
        await asyncio.to_thread(save_flag, image, f'{filename}.gif')
        status = DownloadStatus.OK
    if verbose:
        sys.stdout.write(f'{cc} {status.value}\n')
    return status


async def supervisor(cc_list: list[str], base_url: str, verbose: bool,
                     concur_req: int) -> Counter[DownloadStatus]:
    counter: Counter[DownloadStatus] = Counter()
    semaphore = asyncio.Semaphore(concur_req)
    async with make_async_client(concur_req) as client:
        to_do = [code_on_failure(cc, download_one(client, cc, base_url, semaphore, verbose))
                 for cc in sorted(cc_list)]
        to_do_iter: Iterable[Awaitable[DownloadStatus]] = asyncio.as_completed(to_do)
        if not verbose:
            to_do_iter = tqdm.tqdm(to_do_iter, total=len(cc_list))
        error: CodeFailure | None = None
        for coro in to_do_iter:
            try:
                status = await coro
            except CodeFailure as exc:
                error = exc
            except asyncio.CancelledError:  # by Ctrl-C or SIGTERM
                break
            else:
                error = None  # the book's listing never resets it: see docs/companion.md
            if error:
                status = record_error(error.cc, error.error, verbose)
            counter[status] += 1
    return counter


def download_many(cc_list: list[str], base_url: str, verbose: bool,
                  concur_req: int) -> Counter[DownloadStatus]:
    return asyncio.run(supervisor(cc_list, base_url, verbose, concur_req))


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
