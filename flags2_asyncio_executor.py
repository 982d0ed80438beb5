"""Download flags with coroutines, saving each one through the event loop's
executor: ``loop.run_in_executor`` where flags2_asyncio.py has
``asyncio.to_thread``. Unlike the book's listing, it awaits the save, so a save
that fails is reported (docs/companion.md shows both runs).

Sample run::

    $ python flags2_asyncio_executor.py -a
    LOCAL site: http://localhost:8000/flags
    Searching for 194 flags: from AD to ZW
    5 concurrent connections will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 1, on 5 connections.
    Elapsed time: 0.50s
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


async def download_one(client: httpx2.AsyncClient, cc: str, base_url: str,
                       semaphore: asyncio.Semaphore, verbose: bool) -> DownloadStatus:
    try:
        async with semaphore:
            image = await get_flag(client, base_url, cc)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise
        status = DownloadStatus.NOT_FOUND
    else:
        loop = asyncio.get_running_loop()
        # None: the loop's default executor. Awaited, so a failed save is this
        # code's error and the flag is on disk before it counts as OK.
        await loop.run_in_executor(None, save_flag, image, f'{cc}.gif')
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
                error = None
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
