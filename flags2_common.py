"""What the three flags2 variants share: the command line, saving, the reports
and main.

Each variant supplies ``download_many(cc_list, base_url, verbose,
concur_req)`` and calls ``main(download_many, DEFAULT_CONCUR_REQ,
MAX_CONCUR_REQ)``. The plumbing a reader of the book can skip (the HTTP
client, Ctrl-C, the bundled server, the words for failures, checking options)
lives in the ``flags2`` package beside this file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import NoReturn, Protocol

from flags2.clients import preload_http_stack
from flags2.codes import country_codes
from flags2.failures import error_cause, exhaustion_advice, forget_traceback, short_cause
from flags2.files import write_atomically
from flags2.interrupts import interruptible, signal_name, signals_caught, stop_run
from flags2.options import (
    MAX_TIMEOUT,
    ArgumentParser,
    UsageError,
    check_dest,
    positive_int,
    printable_url,
    resolve_server,
    timeout_seconds,
)
from flags2.servers import ServerStartError, bundled_server, server_stats

POP20_CC = 'CN IN US ID BR PK NG BD RU JP MX PH VN ET EG DE IR TR CD FR'.split()
DEFAULT_SERVER = 'LOCAL'
DEFAULT_SERVERS = {
    'REMOTE': 'https://www.fluentpython.com/data/flags',
    'LOCAL': 'http://localhost:8000/flags',
    'DELAY': 'http://localhost:8001/flags',
    'ERROR': 'http://localhost:8002/flags',
}
# FLAGS2_LOCAL_URL and friends move a label (the tests' servers use ephemeral ports).
SERVERS = {label: os.environ.get(f'FLAGS2_{label}_URL', url)
           for label, url in DEFAULT_SERVERS.items()}
BUNDLED_MODES = {'LOCAL': 'local', 'DELAY': 'delay', 'ERROR': 'error'}
DEST_DIR = Path('downloaded')
DEFAULT_TIMEOUT = 3.1

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class DownloadStatus(Enum):
    OK = 'OK'
    NOT_FOUND = 'not found'
    ERROR = 'error'


class DownloadCounter(Counter[DownloadStatus]):
    """The results of a run: downloads by status, errors by cause, and
    whether a signal (or a resource running out) cut the run short."""

    def __init__(self) -> None:
        super().__init__()
        self.causes: Counter[str] = Counter()
        self.interrupted = False
        self.signum = signal.SIGINT  # which signal, when interrupted
        self.advice = ''  # what to do, when a resource ran out


class DownloadMany(Protocol):
    def __call__(self, cc_list: list[str], base_url: str, verbose: bool, concur_req: int, /,
                 *, dest: Path = ..., timeout: float = ...) -> DownloadCounter: ...


# ---------------------------------------------------------- downloading

def flag_url(base_url: str, cc: str) -> str:
    return f'{base_url}/{cc.lower()}/{cc.lower()}.gif'


def save_flag(img: bytes, path: Path) -> None:
    """Write atomically (a reader never sees half a flag), with the umask's mode."""
    write_atomically(path, img)


def say(line: str) -> None:
    """Print a whole line in one write, so lines from worker threads never interleave."""
    sys.stdout.write(line + '\n')


def record_error(counter: DownloadCounter, cc: str, exc: BaseException,
                 verbose: bool) -> DownloadStatus:
    """Note why ``cc`` failed (and say so with -v); return the ERROR status to count.

    A failure every other download would meet too (no thread, no file handle)
    stops the run as a signal would. The traceback is dropped: it would keep
    the frames, and the body, of a finished download until the run ends.
    """
    if advice := exhaustion_advice(exc):
        stop_run(advice)
    cause = error_cause(exc)
    forget_traceback(exc)
    counter.causes[short_cause(cause)] += 1
    if verbose:
        say(f'{cc} error: {cause}')
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


def build_parser(default_concur_req: int) -> ArgumentParser:
    parser = ArgumentParser(
        description='Download flags for country codes. Default: top 20 countries by population.',
        epilog='Exit status: 0 when every flag was downloaded or not found, 1 when any '
               'download failed, the bundled server could not start or threads or file '
               'handles ran out, 2 for a usage error, 130 when interrupted (Ctrl-C), 143 '
               'when terminated (SIGTERM).')
    parser.add_argument('cc', metavar='CC', nargs='*',
                        help='country code or 1st letter (e.g. B for BA...BZ)')
    parser.add_argument('-a', '--all', action='store_true',
                        help='get all available flags (AD to ZW)')
    parser.add_argument('-e', '--every', action='store_true',
                        help='get flags for every possible code (AA...ZZ)')
    parser.add_argument('-l', '--limit', metavar='N', type=positive_int,
                        help='limit to N first codes')
    parser.add_argument('-m', '--max_req', metavar='CONCURRENT', type=positive_int,
                        default=default_concur_req,
                        help=f'maximum concurrent requests (default={default_concur_req})')
    parser.add_argument('-s', '--server', metavar='LABEL', default=DEFAULT_SERVER,
                        help=f'server to hit: one of {", ".join(SERVERS)} '
                             f'(default={DEFAULT_SERVER}), or a base URL such as '
                             'http://127.0.0.1:8000/flags')
    parser.add_argument('-o', '--dest', metavar='DIR', type=Path, default=DEST_DIR,
                        help=f'folder to save flags in, created if missing '
                             f'(default={DEST_DIR}/ in the current folder)')
    parser.add_argument('--timeout', metavar='SECONDS', type=timeout_seconds,
                        default=DEFAULT_TIMEOUT,
                        help='time limit of each flag, redirects and body included, at most '
                             f'{MAX_TIMEOUT:.0f} (1 day) (default={DEFAULT_TIMEOUT})')
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


def process_args(parser: ArgumentParser, argv: list[str] | None) -> Options:
    """Parse and check ``argv``; every problem ends in ``parser.error``: one line, exit 2."""
    args = parser.parse_args(argv)
    try:
        label, base_url = resolve_server(args.server, SERVERS)
        cc_list = expand_cc_args(args.every, args.all, args.cc, args.limit)
        if not cc_list:
            raise UsageError('no country codes to fetch')
        check_dest(args.dest)
    except UsageError as exc:
        parser.error(str(exc))
    return Options(label, base_url, cc_list, args.verbose, args.max_req, args.dest,
                   args.timeout)


def concurrency(max_req: int, max_concur_req: int, cc_count: int) -> int:
    """Connections to use: what -m asks, within the variant's cap and the codes' count."""
    return min(max_req, max_concur_req, cc_count)


# --------------------------------------------------------------- reports

def initial_report(cc_list: list[str], concur_req: int, server_label: str,
                   base_url: str) -> None:
    print(f'{server_label} site: {printable_url(base_url)}')
    codes = ', '.join(cc_list) if len(cc_list) <= 10 else f'from {cc_list[0]} to {cc_list[-1]}'
    print(f'Searching for {plural(len(cc_list), "flag")}: {codes}')
    if concur_req == 1:
        print('1 connection will be used.')
    else:
        print(f'{concur_req} concurrent connections will be used.')


def final_report(cc_list: list[str], counter: DownloadCounter, elapsed: float,
                 peak: object = None) -> None:
    print('-' * 20)
    if counter.interrupted:
        how = 'Stopped' if counter.advice else f'Interrupted by {signal_name(counter.signum)}'
        print(f'{how}: {counter.total()} of {len(cc_list)} codes done, the rest cancelled.')
    print(f'{plural(counter[DownloadStatus.OK], "flag")} downloaded.')
    if not_found := counter[DownloadStatus.NOT_FOUND]:
        print(f'{not_found} not found.')
    if errors := counter[DownloadStatus.ERROR]:
        print(f'{plural(errors, "error")}.')
        causes = counter.causes.most_common()
        print('errors: ' + ', '.join(f'{n} {cause}' for cause, n in causes))
    if peak is not None:
        print(f'Peak requests in flight at the server: {peak}.')
    print(f'Elapsed time: {elapsed:.2f}s')


def plural(n: int, word: str) -> str:
    return f'{n} {word}' if n == 1 else f'{n} {word}s'


# ------------------------------------------------------------------ main

def main(download_many: DownloadMany, default_concur_req: int, max_concur_req: int,
         argv: list[str] | None = None) -> NoReturn:
    """Parse, report, time one run of ``download_many``, report again, exit."""
    opts = process_args(build_parser(default_concur_req), argv)
    cc_list, base_url = opts.cc_list, opts.base_url
    actual_req = concurrency(opts.max_req, max_concur_req, len(cc_list))
    counter = DownloadCounter()
    stats = None
    t0 = time.perf_counter()
    with signals_caught(argv is None) as run:  # signals raise only in interruptible()
        try:
            with contextlib.ExitStack() as stack:
                with interruptible():  # starting may be cut short
                    started = stack.enter_context(
                        bundled_server(base_url, BUNDLED_MODES.get(opts.server_label)))
                    if started is not None:
                        print(f'Started the bundled flags server for {opts.server_label} '
                              f'on port {started.port}; it stops when this run ends.')
                    initial_report(cc_list, actual_req, opts.server_label, base_url)
                    preload_http_stack()
                    server_stats(base_url, reset=True)
                t0 = time.perf_counter()
                counter = download_many(cc_list, base_url, opts.verbose, actual_req,
                                        dest=opts.dest, timeout=opts.timeout)
                elapsed = time.perf_counter() - t0
                if not run.stopping:
                    with interruptible():
                        stats = server_stats(base_url)
        except KeyboardInterrupt:  # outside download_many's loop: while starting, say
            elapsed = time.perf_counter() - t0
        except ServerStartError as exc:
            print(f'*** Could not start the bundled flags server: {exc}', file=sys.stderr)
            sys.exit(EXIT_ERRORS)
        if run.stopping:  # however late the signal came, the report says so
            counter.interrupted = True
            counter.signum, counter.advice = run.signum or signal.SIGINT, run.advice
        final_report(cc_list, counter, elapsed, stats and stats['peak_in_flight'])
        if all_refused(counter):
            print('*** No server answered. Start the bundled one with: '
                  'python flags_server.py', file=sys.stderr)
        if counter.advice:
            print(f'*** {counter.advice}', file=sys.stderr)
        sys.exit(exit_status(counter))


def exit_status(counter: DownloadCounter) -> int:
    if counter.interrupted and not counter.advice:  # advice: a resource ran out
        return EXIT_TERMINATED if counter.signum == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_ERRORS if counter.advice or counter[DownloadStatus.ERROR] else EXIT_OK


def all_refused(counter: DownloadCounter) -> bool:
    refused = counter.causes['connection refused']
    return refused > 0 and refused == counter.total()
