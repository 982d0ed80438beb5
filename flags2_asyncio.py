"""Download flags with coroutines: one event loop, one AsyncClient, and a
semaphore that lets at most ``concur_req`` requests run at once.

Sample run::

    $ python flags2_asyncio.py -s DELAY -a -m 1000
    DELAY site: http://localhost:8001/flags
    Searching for 194 flags: from AD to ZW
    194 concurrent connections will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 194.
    Elapsed time: 0.85s
"""

import asyncio
from collections.abc import Awaitable, Iterable
from http import HTTPStatus
from pathlib import Path

import httpx2  # httpx's maintained continuation, same API
import tqdm

from flags2_common import (
    DEFAULT_TIMEOUT,
    DEST_DIR,
    DownloadCounter,
    DownloadStatus,
    flag_url,
    main,
    record_error,
    save_flag,
    say,
)

from flags2.clients import make_async_client
from flags2.failures import CodeFailure, NoThreadError, aread_flag, code_on_failure
from flags2.interrupts import ctrl_c_cancels, finish_even_if_cancelled, freeze_progress_bar

DEFAULT_CONCUR_REQ = 5
MAX_CONCUR_REQ = 1000


async def get_flag(client: httpx2.AsyncClient, base_url: str, cc: str) -> bytes:
    url = flag_url(base_url, cc)
    async with client.stream('GET', url, follow_redirects=True) as resp:
        return await aread_flag(resp)  # raises for an HTTP error, a cut-short body, or no GIF


async def download_one(client: httpx2.AsyncClient, cc: str, base_url: str, dest: Path,
                       semaphore: asyncio.Semaphore, verbose: bool) -> DownloadStatus:
    try:
        async with semaphore:  # the only throttle: at most concur_req requests at once
            image = await get_flag(client, base_url, cc)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise  # the supervisor reports every other failure
        status = DownloadStatus.NOT_FOUND
    else:
        # File I/O off the loop; once started, a save completes even after Ctrl-C.
        try:
            await finish_even_if_cancelled(
                asyncio.to_thread(save_flag, image, dest / f'{cc}.gif'))
        except RuntimeError as exc:  # to_thread could not start its thread
            raise NoThreadError() from exc
        status = DownloadStatus.OK
    if verbose:
        say(f'{cc} {status.value}')
    return status


async def supervisor(cc_list: list[str], base_url: str, verbose: bool, concur_req: int,
                     dest: Path, timeout: float) -> DownloadCounter:
    counter = DownloadCounter()
    semaphore = asyncio.Semaphore(concur_req)
    async with make_async_client(concur_req, timeout) as client:
        # Tasks, created in sorted order, wait on the semaphore in that order.
        # A failure carries its code: as_completed does not hand back our tasks.
        to_do = [asyncio.create_task(code_on_failure(
                     cc, download_one(client, cc, base_url, dest, semaphore, verbose)))
                 for cc in sorted(cc_list)]
        to_do_iter: Iterable[Awaitable[DownloadStatus]] = asyncio.as_completed(to_do)
        if not verbose:
            to_do_iter = tqdm.tqdm(to_do_iter, total=len(cc_list))
        with ctrl_c_cancels(to_do):
            for coro in to_do_iter:
                error: CodeFailure | None = None
                try:
                    status = await coro
                except asyncio.CancelledError:  # by a signal: this download never finished
                    counter.interrupted = True
                    freeze_progress_bar(to_do_iter, counter.total())
                    continue
                except CodeFailure as exc:
                    error = exc  # 'exc' is unbound once the except clause ends
                if error is not None:
                    # as_completed yields new awaitables, not our tasks: the
                    # failure carries the code that was asked for.
                    status = record_error(counter, error.cc, error.error, verbose)
                counter[status] += 1
    return counter


def download_many(cc_list: list[str], base_url: str, verbose: bool, concur_req: int,
                  *, dest: Path = DEST_DIR, timeout: float = DEFAULT_TIMEOUT
                  ) -> DownloadCounter:
    return asyncio.run(supervisor(cc_list, base_url, verbose, concur_req, dest, timeout))


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
