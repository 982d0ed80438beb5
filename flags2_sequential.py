"""Download flags one after another, over one kept-alive connection.

The baseline for the threadpool and asyncio variants. Sample run::

    $ python flags2_sequential.py -a
    LOCAL site: http://localhost:8000/flags
    Searching for 194 flags: from AD to ZW
    1 connection will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 1.
    Elapsed time: 0.50s
"""

from collections.abc import Iterable
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

from flags2.clients import make_client
from flags2.failures import read_flag
from flags2.interrupts import freeze_progress_bar, interruptible

DEFAULT_CONCUR_REQ = 1
MAX_CONCUR_REQ = 1


def get_flag(client: httpx2.Client, base_url: str, cc: str) -> bytes:
    url = flag_url(base_url, cc)
    with client.stream('GET', url, follow_redirects=True) as resp:
        return read_flag(resp)  # raises for an HTTP error, a cut-short body, or no GIF


def download_one(client: httpx2.Client, cc: str, base_url: str, dest: Path,
                 verbose: bool) -> DownloadStatus:
    try:
        with interruptible():  # only the wait on the network; a save is always counted
            image = get_flag(client, base_url, cc)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise  # download_many reports every other failure
        status = DownloadStatus.NOT_FOUND
    else:
        save_flag(image, dest / f'{cc}.gif')
        status = DownloadStatus.OK
    if verbose:
        say(f'{cc} {status.value}')
    return status


def download_many(cc_list: list[str], base_url: str, verbose: bool, _unused_concur_req: int,
                  *, dest: Path = DEST_DIR, timeout: float = DEFAULT_TIMEOUT
                  ) -> DownloadCounter:
    counter = DownloadCounter()
    cc_iter: Iterable[str] = sorted(cc_list)
    if not verbose:
        cc_iter = tqdm.tqdm(cc_iter)
    try:
        with make_client(1, timeout) as client:  # one client, one connection, for the run
            for cc in cc_iter:
                try:
                    status = download_one(client, cc, base_url, dest, verbose)
                except (httpx2.HTTPError, OSError) as exc:
                    status = record_error(counter, cc, exc, verbose)
                counter[status] += 1
    except KeyboardInterrupt:  # Ctrl-C: stop, and report what was done
        counter.interrupted = True
        freeze_progress_bar(cc_iter, counter.total())
    return counter


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
