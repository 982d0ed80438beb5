"""Download flags with a pool of threads sharing one HTTP client.

The executor is the throttle: ``-m N`` means N worker threads, and the
client has room for exactly N connections. Sample run::

    $ python flags2_threadpool.py -s DELAY -a
    DELAY site: http://localhost:8001/flags
    Searching for 194 flags: from AD to ZW
    30 concurrent connections will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 30, on 30 connections.
    Elapsed time: 3.41s
"""

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

import httpx2  # httpx's maintained continuation, same API
import tqdm

from flags2_common import DownloadStatus, main, record_error
from flags2_sequential import download_one

from flags2.clients import make_client

DEFAULT_CONCUR_REQ = 30
MAX_CONCUR_REQ = 1000


def download_many(cc_list: list[str], base_url: str, verbose: bool,
                  concur_req: int) -> Counter[DownloadStatus]:
    counter: Counter[DownloadStatus] = Counter()
    with make_client(concur_req) as client, \
            ThreadPoolExecutor(max_workers=concur_req) as executor:
        to_do_map: dict[Future[DownloadStatus], str] = {}
        for cc in sorted(cc_list):
            future = executor.submit(download_one, client, cc, base_url, verbose)
            to_do_map[future] = cc  # a future does not know its code; this dict does
        done_iter: Iterable[Future[DownloadStatus]] = as_completed(to_do_map)
        if not verbose:
            done_iter = tqdm.tqdm(done_iter, total=len(cc_list))
        for future in done_iter:
            cc = to_do_map[future]
            try:
                status = future.result()
            except (httpx2.HTTPError, OSError) as exc:  # OSError: the save failed
                status = record_error(cc, exc, verbose)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM cut this download short
                break
            counter[status] += 1
    return counter


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
