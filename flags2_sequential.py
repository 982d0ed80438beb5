"""Download flags one after another, over one kept-alive connection.

The baseline for the threadpool and asyncio variants. Sample run::

    $ python flags2_sequential.py -a
    LOCAL site: http://localhost:8000/flags
    Searching for 194 flags: from AD to ZW
    1 connection will be used.
    --------------------
    194 flags downloaded.
    Elapsed time: 0.50s
"""

from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus

import httpx
import tqdm

from flags2_common import (
    DownloadStatus,
    FlagBody,
    flag_url,
    interrupted,
    main,
    make_client,
    record_error,
    report_ok,
    save_flag,
)

DEFAULT_CONCUR_REQ = 1
MAX_CONCUR_REQ = 1


def get_flag(client: httpx.Client, base_url: str, cc: str) -> bytes:
    url = flag_url(base_url, cc)
    with client.stream('GET', url, follow_redirects=True) as resp:
        body = FlagBody(resp)  # refuses a body over the size cap
        for chunk in resp.iter_bytes():
            body.add(chunk)
        resp.raise_for_status()
        return body.image()  # refuses anything but a GIF


def download_one(client: httpx.Client, cc: str, base_url: str,
                 verbose: bool) -> DownloadStatus:
    try:
        image = get_flag(client, base_url, cc)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise  # download_many reports every other failure
        status = DownloadStatus.NOT_FOUND
    else:
        save_flag(image, f'{cc}.gif')
        status = DownloadStatus.OK
    return report_ok(cc, status, verbose)


def download_many(cc_list: list[str], base_url: str, verbose: bool,
                  _unused_concur_req: int) -> Counter[DownloadStatus]:
    counter: Counter[DownloadStatus] = Counter()
    cc_iter: Iterable[str] = sorted(cc_list)
    if not verbose:
        cc_iter = tqdm.tqdm(cc_iter)
    try:
        with make_client(1) as client:  # one client, one connection, for the whole run
            for cc in cc_iter:
                try:
                    status = download_one(client, cc, base_url, verbose)
                except (httpx.HTTPError, OSError) as exc:
                    status = record_error(cc, exc, verbose)
                counter[status] += 1
    except KeyboardInterrupt:  # Ctrl-C: stop, and report what was done
        interrupted(cc_iter, counter)
    return counter


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
