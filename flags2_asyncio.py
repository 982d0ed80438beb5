"""Download flags with coroutines: one event loop, one AsyncClient, and a
semaphore that lets at most ``concur_req`` requests run at once.

Sample run::

    $ python flags2_asyncio.py -s DELAY -a -m 50
    DELAY site: http://localhost:8001/flags
    Searching for 194 flags: from AD to ZW
    50 concurrent connections will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 50, on 50 connections.
    Elapsed time: 2.55s
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
        async with semaphore:  # the only throttle: at most concur_req requests at once
            image = await get_flag(client, base_url, cc)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise  # the supervisor counts every other failure
        status = DownloadStatus.NOT_FOUND
    else:
        await asyncio.to_thread(save_flag, image, f'{cc}.gif')  # file I/O off the loop
        status = DownloadStatus.OK
    if verbose:
        sys.stdout.write(f'{cc} {status.value}\n')
    return status


async def supervisor(cc_list: list[str], base_url: str, verbose: bool,
                     concur_req: int) -> Counter[DownloadStatus]:
    counter: Counter[DownloadStatus] = Counter()
    semaphore = asyncio.Semaphore(concur_req)
    async with make_async_client(concur_req) as client:
        # A failure carries its code: as_completed does not hand back our awaitables.
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
                error = exc  # 'exc' is unbound once the except clause ends
            except asyncio.CancelledError:  # by Ctrl-C or SIGTERM: report what was done
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
