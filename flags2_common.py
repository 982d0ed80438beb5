"""What the flags2 variants share: the command line, saving, the reports and
main.

Each variant supplies ``download_many(cc_list, base_url, verbose,
concur_req)`` and calls ``main(download_many, DEFAULT_CONCUR_REQ,
MAX_CONCUR_REQ)``. The plumbing a reader of the book can skip (the HTTP
client, Ctrl-C, the bundled server, the words for failures, checking options)
lives in the ``flags2`` package beside this file; ``main`` runs
``download_many`` inside a ``flags2.runs.Run``, which ``save_flag`` and the
clients find without being handed it.
"""

from __future__ import annotations

import os
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import NoReturn, Protocol

from flags2.codes import country_codes
from flags2.failures import CodeFailure as CodeFailure  # the asyncio variants catch it
from flags2.options import (
    MAX_TIMEOUT,
    SERVER_URL_SETTING,
    ArgumentParser,
    UsageError,
    check_dest,
    check_proxy_settings,
    dest_folder,
    positive_int,
    printable_url,
    resolve_server,
    server_urls,
    timeout_seconds,
)
from flags2.runs import Run, current_run
from flags2.servers import servers_help

POP20_CC = 'CN IN US ID BR PK NG BD RU JP MX PH VN ET EG DE IR TR CD FR'.split()
DEFAULT_SERVER = 'LOCAL'
DEFAULT_SERVERS = {
    'REMOTE': 'https://www.fluentpython.com/data/flags',
    'LOCAL': 'http://localhost:8000/flags',
    'DELAY': 'http://localhost:8001/flags',
    'ERROR': 'http://localhost:8002/flags',
}
# FLAGS2_LOCAL_URL and friends move a label (the tests' servers use ephemeral ports).
SERVERS = server_urls(DEFAULT_SERVERS, os.environ)
DEST_DIR = Path('downloaded')
DEFAULT_TIMEOUT = 3.1


class DownloadStatus(Enum):
    OK = 'OK'
    NOT_FOUND = 'not found'
    ERROR = 'error'


class DownloadMany(Protocol):
    def __call__(self, cc_list: list[str], base_url: str, verbose: bool, concur_req: int,
                 /) -> Counter[DownloadStatus]: ...


# ---------------------------------------------------------- downloading

def save_flag(img: bytes, filename: str) -> None:
    """Write a flag into the run's folder (-o), atomically: a reader never sees
    half a flag. The run counts it, so the report matches the disk even when a
    signal ends the variant's loop before the loop counts it."""
    current_run().save(img, filename)


def record_error(cc: str, exc: BaseException, verbose: bool) -> DownloadStatus:
    """Note why ``cc`` failed (and say so with -v); return the ERROR status to count."""
    cause = current_run().record_error(exc)
    if verbose:
        sys.stdout.write(f'{cc} error: {cause}\n')  # one write: lines from threads never mix
    return DownloadStatus.ERROR


# ---------------------------------------------------------- command line

def expand_cc_args(every_cc: bool, all_cc: bool, cc_args: list[str],
                   limit: int | None) -> list[str]:
    """The sorted, de-duplicated codes to fetch, cut to ``limit``."""
    codes: set[str] = set()
    letters = string.ascii_uppercase
    if every_cc:
        codes.update(a + b for a in letters for b in letters)
    elif all_cc:
        codes.update(country_codes())
    elif cc_args:
        for arg in cc_args:  # as typed: 'ß'.upper() is 'SS', a dotless i's is 'I'
            if not (1 <= len(arg) <= 2 and arg.isascii() and arg.isalpha()):
                raise UsageError(f'country code must be one or two ASCII letters, got {arg!r}')
            cc = arg.upper()
            if len(cc) == 1:
                codes.update(cc + c for c in letters)
            else:
                codes.add(cc)
    else:
        codes.update(POP20_CC)
    return sorted(codes)[:limit]


def build_parser(default_concur_req: int, max_concur_req: int | None = None) -> ArgumentParser:
    """The command line; ``max_concur_req``, the variant's cap of -m, for --help."""
    parser = ArgumentParser(
        description='Download flags for country codes. Default: top 20 countries by population.',
        epilog='Exit status: 0 when every flag was downloaded or not found, 1 when any '
               'download failed, every code was not found (not a flags server), the '
               'bundled server could not start or threads or file handles ran out, 2 for '
               'a usage error or a setting that cannot work '
               '(FLAGS2_LOCAL_URL and the like, HTTP_PROXY and the like), 130 when '
               'interrupted (Ctrl-C), 141 when a reader of the output went away (a closed '
               'pipe, as with | head), 143 when terminated (SIGTERM).')
    parser.add_argument('cc', metavar='CC', nargs='*',
                        help='country code or 1st letter (e.g. B for BA...BZ)')
    parser.add_argument('-a', '--all', action='store_true',
                        help='get all available flags (AD to ZW)')
    parser.add_argument('-e', '--every', action='store_true',
                        help='get flags for every possible code (AA...ZZ)')
    parser.add_argument('-l', '--limit', metavar='N', type=positive_int,
                        help='only the first N codes of the sorted selection '
                             '(so -e -l 3 means AA, AB and AC)')
    cap = '' if max_concur_req is None else f'at most {max_concur_req} in this script, and '
    parser.add_argument('-m', '--max_req', metavar='CONCURRENT', type=positive_int,
                        default=default_concur_req,
                        help=f'maximum concurrent requests (default={default_concur_req}); '
                             f'{cap}never more than the number of codes')
    servers = parser.add_argument_group('servers', servers_help(SERVERS, SERVER_URL_SETTING))
    servers.add_argument('-s', '--server', metavar='LABEL', default=DEFAULT_SERVER,
                         help=f'server to hit: one of {", ".join(SERVERS)} '
                              f'(default={DEFAULT_SERVER}), or a base URL such as '
                              'http://127.0.0.1:8000/flags')
    parser.add_argument('-o', '--dest', metavar='DIR', type=dest_folder, default=DEST_DIR,
                        help=f'folder to save flags in, created if missing '
                             f'(default={DEST_DIR}/ in the current folder)')
    parser.add_argument('--timeout', metavar='SECONDS', type=timeout_seconds,
                        default=DEFAULT_TIMEOUT,
                        help='time limit of each flag, redirects and body included, at most '
                             f'{MAX_TIMEOUT:.0f} (1 day) (default={DEFAULT_TIMEOUT})')
    parser.add_argument('--http2', action='store_true',
                        help='speak HTTP/2: the requests in flight share a connection (a '
                             'second one past 100), up to the server\'s own limit of streams; '
                             'h2c with prior knowledge for http://, ALPN for https://')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='output detailed progress info')
    return parser


@dataclass(frozen=True)
class Options:
    """A checked command line."""

    server_label: str
    base_url: str
    cc_list: list[str]
    verbose: bool
    max_req: int
    dest: Path
    timeout: float
    http2: bool


def process_args(parser: ArgumentParser, argv: list[str] | None) -> Options:
    """Parse and check ``argv`` and the settings the run will use (the server's
    URL, the proxies); every problem ends in ``parser.refuse``: one line, exit 2."""
    args = parser.parse_args(argv)
    try:
        label, base_url = resolve_server(args.server, SERVERS)
        cc_list = expand_cc_args(args.every, args.all, args.cc, args.limit)
        if not cc_list:
            raise UsageError('no country codes to fetch')
        check_proxy_settings(os.environ)
        check_dest(args.dest)
    except UsageError as exc:
        parser.refuse(exc)
    return Options(label, base_url, cc_list, args.verbose, args.max_req, args.dest,
                   args.timeout, args.http2)


def concurrency(max_req: int, max_concur_req: int, cc_count: int) -> int:
    """Connections to use: what -m asks, within the variant's cap and the codes' count."""
    return min(max_req, max_concur_req, cc_count)


# --------------------------------------------------------------- reports

def initial_report(cc_list: list[str], concur_req: int, server_label: str,
                   base_url: str, http2: bool = False) -> None:
    print(f'{server_label} site: {printable_url(base_url)}')
    codes = ', '.join(cc_list) if len(cc_list) <= 10 else f'from {cc_list[0]} to {cc_list[-1]}'
    print(f'Searching for {plural(len(cc_list), "flag")}: {codes}')
    if http2:
        print(f'{plural(concur_req, "concurrent request")} will be made over HTTP/2.')
    elif concur_req == 1:
        print('1 connection will be used.')
    else:
        print(f'{concur_req} concurrent connections will be used.')


def final_report(cc_list: list[str], counter: Counter[DownloadStatus], elapsed: float,
                 run: Run) -> None:
    # The run's record of flags saved and errors met is the truth: a stop may
    # end the variant's loop before it counts them.
    counter = Counter({**counter, DownloadStatus.OK: run.saved,
                       DownloadStatus.ERROR: run.causes.total()})
    print('-' * 20)
    if stopped := run.stopped_line(counter.total(), len(cc_list)):
        print(stopped)
    print(f'{plural(counter[DownloadStatus.OK], "flag")} downloaded.')
    if not_found := counter[DownloadStatus.NOT_FOUND]:
        print(f'{not_found} not found.')
    if errors := counter[DownloadStatus.ERROR]:
        print(f'{plural(errors, "error")}.')
        causes = run.causes.most_common()
        print('errors: ' + ', '.join(f'{n} {cause}' for cause, n in causes))
    if (peak := run.peak()) is not None:
        on = '' if peak.connections is None else f', on {plural(peak.connections, "connection")}'
        print(f'Peak requests in flight at the server: {peak.requests}{on}.')
    print(f'Elapsed time: {elapsed:.2f}s')
    if 0 < run.causes['connection refused'] == counter.total():
        print(f'*** {run.no_answer_hint()}', file=sys.stderr)
    run.note_not_found(cc_list, counter[DownloadStatus.NOT_FOUND])
    if not_flags := run.not_flags_hint():
        print(f'*** {not_flags}', file=sys.stderr)
    if run.advice:
        print(f'*** {run.advice}', file=sys.stderr)


def plural(n: int, word: str) -> str:
    return f'{n} {word}' if n == 1 else f'{n} {word}s'


# ------------------------------------------------------------------ main

def main(download_many: DownloadMany, default_concur_req: int, max_concur_req: int,
         argv: list[str] | None = None) -> NoReturn:
    """Parse, report, time one run of ``download_many``, report again, exit."""
    opts = process_args(build_parser(default_concur_req, max_concur_req), argv)
    actual_req = concurrency(opts.max_req, max_concur_req, len(opts.cc_list))
    with Run(opts.dest, opts.timeout, label=opts.server_label, base_url=opts.base_url,
             http2=opts.http2, command_line=argv is None) as run:  # signals, server, /stats
        initial_report(opts.cc_list, actual_req, opts.server_label, opts.base_url, opts.http2)
        counter: Counter[DownloadStatus] = Counter()
        t0 = time.perf_counter()
        with run.downloading():  # Ctrl-C, SIGTERM or no thread: on to the report
            counter = download_many(opts.cc_list, opts.base_url, opts.verbose, actual_req)
        final_report(opts.cc_list, counter, time.perf_counter() - t0, run)
    sys.exit(run.exit_status())
