"""Download flags one after another, over one kept-alive connection.

The baseline for the threadpool and asyncio variants. Sample run::

    $ python flags2_sequential.py -a
    LOCAL site: http://localhost:8000/flags
    Searching for 194 flags: from AD to ZW
    1 connection will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 1, on 1 connection.
    Elapsed time: 0.50s
"""

import sys
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus

import httpx2  # httpx's maintained continuation, same API
import tqdm

from flags2_common import DownloadStatus, main, record_error, save_flag

from flags2.clients import make_client

DEFAULT_CONCUR_REQ = 1
MAX_CONCUR_REQ = 1


def get_flag(client: httpx2.Client, base_url: str, cc: str) -> bytes:
    cc = cc.lower()
    resp = client.get(f'{base_url}/{cc}/{cc}.gif', follow_redirects=True)
    resp.raise_for_status()
    return resp.content


def download_one(client: httpx2.Client, cc: str, base_url: str,
                 verbose: bool = False) -> DownloadStatus:
    try:
        image = get_flag(client, base_url, cc)
    except httpx2.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise  # download_many counts every other failure
        status = DownloadStatus.NOT_FOUND
    else:
        save_flag(image, f'{cc}.gif')
        status = DownloadStatus.OK
    if verbose:  # one write per line, so lines from threads never mix
        sys.stdout.write(f'{cc} {status.value}\n')
    return status


def download_many(cc_list: list[str], base_url: str, verbose: bool,
                  _unused_concur_req: int) -> Counter[DownloadStatus]:
    counter: Counter[DownloadStatus] = Counter()
    cc_iter: Iterable[str] = sorted(cc_list)
    if not verbose:
        cc_iter = tqdm.tqdm(cc_iter)
    with make_client(1) as client:  # one client, one connection, for the whole run
        for cc in cc_iter:
            try:
                status = download_one(client, cc, base_url, verbose)
            except (httpx2.HTTPError, OSError) as exc:  # OSError: the save failed
                status = record_error(cc, exc, verbose)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: report what was done
                break
            counter[status] += 1
    return counter


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
