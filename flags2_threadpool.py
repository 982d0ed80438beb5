"""Download flags with a pool of threads sharing one HTTP client.

The executor is the throttle: ``-m N`` means N worker threads, and the
client has room for exactly N connections. Sample run::

    $ python flags2_threadpool.py -a
    LOCAL site: http://localhost:8000/flags
    Searching for 194 flags: from AD to ZW
    30 concurrent connections will be used.
    --------------------
    194 flags downloaded.
    Peak requests in flight at the server: 1.
    Elapsed time: 0.30s
"""

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx2  # httpx's maintained continuation, same API
import tqdm

from flags2_common import (
    DEFAULT_TIMEOUT,
    DEST_DIR,
    DownloadCounter,
    DownloadStatus,
    main,
    record_error,
)
from flags2_sequential import download_one

from flags2.clients import make_client
from flags2.failures import NO_THREAD_ADVICE
from flags2.interrupts import freeze_progress_bar, interruptibly, stop_run, uncounted_successes

DEFAULT_CONCUR_REQ = 30
MAX_CONCUR_REQ = 1000


def download_many(cc_list: list[str], base_url: str, verbose: bool, concur_req: int,
                  *, dest: Path = DEST_DIR, timeout: float = DEFAULT_TIMEOUT
                  ) -> DownloadCounter:
    counter = DownloadCounter()
    done_iter: Iterable[Future[DownloadStatus]] = ()
    to_do_map: dict[Future[DownloadStatus], str] = {}
    # The client closes before the executor joins its threads: that ends the
    # reads of running downloads, so after Ctrl-C the join is quick.
    with ThreadPoolExecutor(max_workers=concur_req) as executor, \
            make_client(concur_req, timeout) as client:
        try:
            # A signal cuts short only the waits: for the next code to submit (never
            # between a submit and its entry in the map), and for the next future.
            for cc in interruptibly(sorted(cc_list)):
                try:
                    future = executor.submit(download_one, client, cc, base_url, dest, verbose)
                except RuntimeError:  # no thread could start: stop as Ctrl-C would
                    stop_run(NO_THREAD_ADVICE)
                    break
                to_do_map[future] = cc  # a future does not know its code; this dict does
            done_iter = interruptibly(as_completed(to_do_map))
            if not verbose:
                done_iter = tqdm.tqdm(done_iter, total=len(cc_list))
            for future in done_iter:
                cc = to_do_map.pop(future)  # the map keeps what is not counted yet
                try:
                    status = future.result()
                except (httpx2.HTTPError, OSError) as exc:
                    status = record_error(counter, cc, exc, verbose)
                counter[status] += 1
        except KeyboardInterrupt:  # Ctrl-C: drop what has not started, report the rest
            executor.shutdown(wait=False, cancel_futures=True)
            counter.interrupted = True
            freeze_progress_bar(done_iter, counter.total())
    counter.update(uncounted_successes(to_do_map))  # none unless interrupted
    return counter


def cli() -> None:
    main(download_many, DEFAULT_CONCUR_REQ, MAX_CONCUR_REQ)


if __name__ == '__main__':
    cli()
