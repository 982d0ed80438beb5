"""What the three flags2 variants share: the command line, reports, saving,
and the words for every failure.

Each variant only supplies ``download_many(cc_list, base_url, verbose,
concur_req)`` and calls ``main(download_many, DEFAULT_CONCUR_REQ,
MAX_CONCUR_REQ)``. Everything else lives here, once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from typing import Generic, NoReturn, TypeVar
from urllib.parse import urlsplit

import httpx

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / 'flags_server.py'
POP20_CC = 'CN IN US ID BR PK NG BD RU JP MX PH VN ET EG DE IR TR CD FR'.split()
DEFAULT_SERVER = 'LOCAL'
DEFAULT_SERVERS = {
    'REMOTE': 'https://www.fluentpython.com/data/flags',
    'LOCAL': 'http://localhost:8000/flags',
    'DELAY': 'http://localhost:8001/flags',
    'ERROR': 'http://localhost:8002/flags',
}
# FLAGS2_LOCAL_URL and friends move a label elsewhere: the tests use them to
# keep auto-started servers on ephemeral ports.
SERVERS = {label: os.environ.get(f'FLAGS2_{label}_URL', url)
           for label, url in DEFAULT_SERVERS.items()}
BUNDLED_MODES = {'LOCAL': 'local', 'DELAY': 'delay', 'ERROR': 'error'}
DEFAULT_DEST = Path('downloaded')
DEFAULT_TIMEOUT = 3.1
MAX_FLAG_BYTES = 1024 * 1024
GIF_MAGIC = (b'GIF87a', b'GIF89a')

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class DownloadStatus(Enum):
    OK = 'OK'
    NOT_FOUND = 'not found'
    ERROR = 'error'


@dataclass
class Settings:
    """Options that the book hard-codes and we take from the command line.

    ``download_many`` keeps the book's four parameters, so the destination,
    timeout and body cap reach the variants through this one object, which
    ``main`` fills in before the run.
    """

    dest: Path = DEFAULT_DEST
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = MAX_FLAG_BYTES
    error_causes: Counter[str] = field(default_factory=Counter)


settings = Settings()


# ------------------------------------------------------------ code lists

def country_codes() -> list[str]:
    return sorted((HERE / 'country_codes.txt').read_text().split())


def expand_cc_args(every_cc: bool, all_cc: bool, cc_args: list[str],
                   limit: int | None) -> list[str]:
    """The sorted, de-duplicated codes to fetch, cut to ``limit``."""
    codes: set[str] = set()
    if every_cc:
        codes.update(a + b for a in string.ascii_uppercase for b in string.ascii_uppercase)
    elif all_cc:
        codes.update(country_codes())
    elif cc_args:
        for cc in (arg.upper() for arg in cc_args):
            if not (1 <= len(cc) <= 2 and cc.isascii() and cc.isalpha()):
                raise UsageError(f'country code must be one or two ASCII letters, got {cc!r}')
            if len(cc) == 1:
                codes.update(cc + c for c in string.ascii_uppercase)
            else:
                codes.add(cc)
    else:
        codes.update(POP20_CC)
    return sorted(codes)[:limit]


# ---------------------------------------------------------- command line

class UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is below 1')
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0 < value < float('inf'):
        raise argparse.ArgumentTypeError(f'{text!r} is not a positive number of seconds')
    return value


def build_parser(default_concur_req: int) -> ArgumentParser:
    parser = ArgumentParser(
        description='Download flags for country codes. Default: top 20 countries by population.',
        epilog='Exit status: 0 when every flag was downloaded or not found, 1 when any '
               'download failed, 2 for a usage error, 130 when interrupted (Ctrl-C).')
    parser.add_argument(
        'cc', metavar='CC', nargs='*',
        help='country code or 1st letter (e.g. B for BA...BZ)')
    parser.add_argument(
        '-a', '--all', action='store_true',
        help='get all available flags (AD to ZW)')
    parser.add_argument(
        '-e', '--every', action='store_true',
        help='get flags for every possible code (AA...ZZ)')
    parser.add_argument(
        '-l', '--limit', metavar='N', type=positive_int,
        help='limit to N first codes')
    parser.add_argument(
        '-m', '--max_req', metavar='CONCURRENT', type=positive_int,
        default=default_concur_req,
        help=f'maximum concurrent requests (default={default_concur_req})')
    parser.add_argument(
        '-s', '--server', metavar='LABEL', default=DEFAULT_SERVER,
        help=f'server to hit: one of {", ".join(SERVERS)} (default={DEFAULT_SERVER}), '
             'or a base URL such as http://127.0.0.1:8000/flags')
    parser.add_argument(
        '-o', '--dest', metavar='DIR', type=Path, default=DEFAULT_DEST,
        help=f'folder to save flags in, created if missing (default={DEFAULT_DEST}/)')
    parser.add_argument(
        '--timeout', metavar='SECONDS', type=positive_float, default=DEFAULT_TIMEOUT,
        help=f'timeout of each request (default={DEFAULT_TIMEOUT})')
    parser.add_argument(
        '-v', '--verbose', action='store_true',
        help='output detailed progress info')
    return parser


@dataclass
class Run:
    """A validated command line."""

    server_label: str
    base_url: str
    cc_list: list[str]
    verbose: bool
    concur_req: int
    dest: Path
    timeout: float


def resolve_server(server: str) -> tuple[str, str]:
    """(label, base URL) for a label or a URL given with -s."""
    label = server.upper()
    if label in SERVERS:
        return label, SERVERS[label]
    parts = urlsplit(server)
    if '://' not in server:
        raise UsageError(f'unknown server {server!r}: use one of '
                         f'{", ".join(SERVERS)} or an http(s) URL')
    if parts.scheme not in ('http', 'https'):
        raise UsageError(f'server URL {server!r} must start with http:// or https://')
    try:
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise UsageError(f'server URL {server!r} has a bad port') from None
    if not parts.hostname:
        raise UsageError(f'server URL {server!r} has no host')
    return server, server.rstrip('/')


def check_dest(dest: Path) -> None:
    """Make sure flags can be saved in ``dest`` before anything is fetched."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f'destination {str(dest)!r} is a file, not a folder')
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dest):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f'cannot write to destination {str(dest)!r}: {reason}') from None


def parse_args(argv: list[str] | None, default_concur_req: int,
               max_concur_req: int) -> Run:
    parser = build_parser(default_concur_req)
    args = parser.parse_args(argv)
    label, base_url = resolve_server(args.server)
    cc_list = expand_cc_args(args.every, args.all, args.cc, args.limit)
    if not cc_list:
        raise UsageError('no country codes to fetch')
    check_dest(args.dest)
    concur_req = min(args.max_req, max_concur_req, len(cc_list))
    return Run(label, base_url, cc_list, args.verbose, concur_req, args.dest, args.timeout)


def usage_exit(message: str, default_concur_req: int) -> NoReturn:
    print(f'*** Usage error: {message}', file=sys.stderr)
    build_parser(default_concur_req).print_usage(sys.stderr)
    sys.exit(EXIT_USAGE)


# --------------------------------------------------------------- saving

def save_flag(img: bytes, filename: str) -> None:
    """Write atomically: a reader never sees a truncated flag, even after Ctrl-C."""
    path = settings.dest / filename
    try:
        fd, tmp_name = tempfile.mkstemp(dir=settings.dest, prefix=f'.{filename}.', suffix='.part')
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, 'wb') as tmp:
            tmp.write(img)
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):  # name the flag, not the temporary file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


# ------------------------------------------------- responses and failures

class BadFlagError(httpx.HTTPError):
    """A response we refuse to save: not a GIF, or too large.

    It subclasses httpx.HTTPError and carries the request, so callers can
    handle it (and recover its URL) like every other download failure.
    """

    def __init__(self, message: str, request: httpx.Request) -> None:
        super().__init__(message)
        self.request = request


def flag_url(base_url: str, cc: str) -> str:
    return f'{base_url}/{cc.lower()}/{cc.lower()}.gif'


class FlagBody:
    """Collects a response body, refusing anything over the cap or not a GIF."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.chunks: list[bytes] = []
        self.size = 0
        length = response.headers.get('content-length', '')
        if length.isdigit() and int(length) > settings.max_bytes:
            self.too_large()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > settings.max_bytes:
            self.too_large()
        self.chunks.append(chunk)

    def too_large(self) -> NoReturn:
        raise BadFlagError(f'response over {format_size(settings.max_bytes)}',
                           self.response.request)

    def image(self) -> bytes:
        body = b''.join(self.chunks)
        if not body.startswith(GIF_MAGIC):
            kind = self.response.headers.get('content-type', 'no content type')
            raise BadFlagError(f'not a GIF ({kind.split(";")[0]})', self.response.request)
        return body


def format_size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f'{n // (1024 * 1024)} MiB'
    if n >= 1024 and n % 1024 == 0:
        return f'{n // 1024} KiB'
    return f'{n} bytes'


def http_error_text(response: httpx.Response) -> str:
    code = response.status_code
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = response.reason_phrase
    return f'HTTP {code} {phrase}'.strip()


def error_cause(exc: BaseException) -> str:
    """Words a reader understands for why one download failed. Never empty."""
    if isinstance(exc, httpx.HTTPStatusError):
        return http_error_text(exc.response)
    if isinstance(exc, BadFlagError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f'timed out after {settings.timeout:g} s'
    if isinstance(exc, httpx.TooManyRedirects):
        return 'too many redirects'
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if 'complete message body' in text:
            return 'incomplete response body'
        if 'without sending' in text:
            return 'connection closed before any response'
        return f'protocol error: {text}'
    if isinstance(exc, httpx.TransportError):
        return transport_cause(exc)
    if isinstance(exc, OSError):
        return f'cannot save {Path(exc.filename or "flag").name}: {exc.strerror or exc}'
    text = str(exc)
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def transport_cause(exc: BaseException) -> str:
    """Name connection failures by errno, found anywhere in the exception chain."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, 'errno', None)
        if isinstance(seen, ConnectionRefusedError) or code == errno.ECONNREFUSED:
            return 'connection refused'
        if isinstance(seen, ConnectionResetError) or code == errno.ECONNRESET:
            return 'connection reset'
        if isinstance(seen, socket.gaierror):
            return 'host name not found'
        seen = seen.__cause__ or seen.__context__
    text = str(exc) or type(exc).__name__
    if 'Connection refused' in text:
        return 'connection refused'
    if 'reset' in text.lower():
        return 'connection reset'
    what = 'connection failed' if isinstance(exc, httpx.ConnectError) else 'network error'
    return f'{what}: {text}'


def short_cause(cause: str) -> str:
    """The cause without the HTTP reason phrase, for the summary line."""
    if cause.startswith('HTTP '):
        return ' '.join(cause.split()[:2])
    return cause


def code_from_error(exc: BaseException) -> str:
    """The country code of a failed download, from the URL it requested.

    asyncio.as_completed may hand back other awaitables than the ones it was
    given, so the asyncio variant cannot look a result up by its awaitable;
    every failure it sees carries its request, whose URL ends in ``cc.gif``.
    """
    if isinstance(exc, httpx.HTTPError):
        return Path(exc.request.url.path).stem.upper()
    if isinstance(exc, OSError) and exc.filename:  # save_flag names the flag
        return Path(exc.filename).stem.upper()
    return '??'


def record_error(cc: str, exc: BaseException, verbose: bool) -> DownloadStatus:
    """Count and (with -v) print one failed download; return its status."""
    cause = error_cause(exc)
    settings.error_causes[short_cause(cause)] += 1
    if verbose:
        say(f'{cc} error: {cause}')
    return DownloadStatus.ERROR


def report_ok(cc: str, status: DownloadStatus, verbose: bool) -> DownloadStatus:
    if verbose:
        say(f'{cc} {status.value}')
    return status


def say(line: str) -> None:
    """Print a whole line in one write, so lines from worker threads never interleave."""
    sys.stdout.write(line + '\n')


# ------------------------------------------------------------- clients
#
# One client per run, with room for exactly concur_req connections, so the
# semaphore (asyncio) or the executor (threadpool) is the only throttle: httpx's
# default pool of 100 connections silently capped -m 1000.
#
# The connections are split over small pools ("shards"). httpcore 1.0 rescans
# every connection of a pool each time a request starts or ends, and probes
# each idle one's socket (anyio builds a dict of its attributes and calls
# getpeername, then poll): quadratic in the pool size, which made one pool of
# 676 connections slower than the sequential script. Measured side by side
# (medians of 5, in turns), shards of 4 beat 16: asyncio -a -m 30 on LOCAL
# 0.66 s vs 0.94 s, and -e -m 1000 on DELAY 2.32 s vs 2.63 s; shards of 1 were
# no faster there (0.59 s, 2.70 s) and cost 62 MiB of RSS instead of 56 MiB.
# A request goes to a free connection, the most recently freed first, so a
# fast server is served by a few warm connections; as the caller never has
# more than concur_req requests open, a free connection always exists.
#
# Shards are built on first use, and the TLS context (loading the CA
# certificates costs ~35 ms) on the first https request: LOCAL runs never pay it.

SHARD_SIZE = 4


def shard_sizes(concur_req: int) -> list[int]:
    """Split ``concur_req`` connections into pools of at most SHARD_SIZE."""
    count = -(-concur_req // SHARD_SIZE)
    return [concur_req // count + (i < concur_req % count) for i in range(count)]


def shard_limits(size: int) -> httpx.Limits:
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)


class ShardLoad:
    """Which shard takes the next request; thread-safe for the threadpool.

    ``free`` holds one entry per idle connection, the most recently freed
    last, so ``take`` is O(1) and reuses warm connections first.
    """

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.open = [0] * len(sizes)
        self.free = [i for i in reversed(range(len(sizes))) for _ in range(sizes[i])]
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            if self.free:
                index = self.free.pop()
            else:  # more requests than connections: queue at the least busy shard
                index = min(range(len(self.open)), key=self.open.__getitem__)
            self.open[index] += 1
        return index

    def release_once(self, index: int) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            with self.lock:
                if not released:
                    released = True
                    self.open[index] -= 1
                    if self.open[index] < self.sizes[index]:
                        self.free.append(index)
        return release


class ReleasingStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, release: Callable[[], None]) -> None:
        self.stream, self.release = stream, release

    def __iter__(self) -> Iterator[bytes]:
        yield from self.stream

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.release()


class AsyncReleasingStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self.stream, self.release = stream, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.release()


Shard = TypeVar('Shard', httpx.HTTPTransport, httpx.AsyncHTTPTransport)


class Shards(Generic[Shard]):
    """The shards of one client, built on first use."""

    def __init__(self, concur_req: int, build: Callable[..., Shard]) -> None:
        sizes = shard_sizes(concur_req)
        self.build: Callable[..., Shard] = build
        self.load = ShardLoad(sizes)
        self.built: list[tuple[Shard, bool] | None] = [None] * len(sizes)  # (shard, has CAs)
        self.tls: ssl.SSLContext | None = None

    def pick(self, request: httpx.Request) -> tuple[Shard, Callable[[], None], Shard | None]:
        """A shard for ``request``, its release, and a shard it replaces (to close)."""
        index = self.load.take()
        entry = self.built[index]
        https = request.url.scheme == 'https'
        if entry is not None and (entry[1] or not https):
            return entry[0], self.load.release_once(index), None
        if https and self.tls is None:
            self.tls = httpx.create_ssl_context()
        # Without a CA bundle, a plain-http shard could never verify a server:
        # if a redirect leads it to https, it fails safe until rebuilt here.
        tls = self.tls or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        shard = self.build(limits=shard_limits(self.load.sizes[index]), verify=tls)
        self.built[index] = (shard, self.tls is not None)
        return shard, self.load.release_once(index), entry and entry[0]

    def all(self) -> list[Shard]:
        return [entry[0] for entry in self.built if entry is not None]


class ShardedTransport(httpx.BaseTransport):
    def __init__(self, concur_req: int) -> None:
        self.shards: Shards[httpx.HTTPTransport] = Shards(concur_req, httpx.HTTPTransport)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        shard, release, replaced = self.shards.pick(request)
        try:
            if replaced is not None:
                replaced.close()
            response = shard.handle_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = ReleasingStream(response.stream, release)
        return response

    def close(self) -> None:
        for shard in self.shards.all():
            shard.close()


class AsyncShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, concur_req: int) -> None:
        self.shards: Shards[httpx.AsyncHTTPTransport] = Shards(
            concur_req, httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard, release, replaced = self.shards.pick(request)
        try:
            if replaced is not None:
                await replaced.aclose()
            response = await shard.handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = AsyncReleasingStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self.shards.all():
            await shard.aclose()


def preload_http_stack() -> None:
    """Import now what httpx imports on first use, so Elapsed times downloads.

    httpx 0.28 imports httpcore when it builds the first transport, and
    httpcore imports anyio's asyncio backend and its socket streams on the
    first async request: ~0.1 s a run on a 2-core VM, which the book's Elapsed
    (httpx then imported httpcore up front) never included. Called after the
    command line is parsed, so ``--help`` and usage errors stay quick.
    """
    import httpcore  # noqa: F401
    if 'asyncio' in sys.modules:  # only the asyncio variant goes through anyio
        for name in ('anyio._backends._asyncio', 'httpcore._backends.anyio'):
            with contextlib.suppress(ImportError):  # private names: best effort
                importlib.import_module(name)


def make_client(concur_req: int) -> httpx.Client:
    return httpx.Client(transport=ShardedTransport(concur_req), timeout=settings.timeout)


def make_async_client(concur_req: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncShardedTransport(concur_req),
                             timeout=settings.timeout)


# ---------------------------------------------------- the bundled server

def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerStartError(Exception):
    pass


@contextlib.contextmanager
def bundled_server(label: str) -> Iterator[None]:
    """Start flags_server.py for LOCAL, DELAY or ERROR when nothing answers there.

    The child reads its stdin until we close it, so it exits with us even if
    we are killed outright.
    """
    mode = BUNDLED_MODES.get(label)
    parts = urlsplit(SERVERS.get(label, ''))
    port = parts.port
    if mode is None or port is None or port_answers(parts.hostname or 'localhost', port):
        yield
        return
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), '--mode', mode, '--port', str(port),
         '--exit-with-stdin'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)  # Ctrl-C reaches us; we stop the child ourselves
    try:
        wait_until_ready(proc)
        print(f'Started the bundled flags server for {label} on port {port}; '
              'it stops when this run ends.')
        yield
    finally:
        stop_process(proc)


def wait_until_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        if raw.startswith(b'Ready'):
            return
    stop_process(proc)
    assert proc.stderr is not None
    lines = proc.stderr.read().decode(errors='replace').strip().splitlines()
    raise ServerStartError(lines[-1] if lines else f'exit status {proc.returncode}')


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def server_stats(base_url: str, action: str = 'stats') -> dict[str, object] | None:
    """GET /stats (or /stats/reset) from a bundled server on loopback; None otherwise."""
    parts = urlsplit(base_url)
    if parts.hostname not in ('localhost', '127.0.0.1', '::1'):
        return None
    path = '/stats' if action == 'stats' else '/stats/reset'
    try:
        with urllib.request.urlopen(f'{parts.scheme}://{parts.netloc}{path}', timeout=1) as resp:
            data = json.load(resp)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and 'peak_in_flight' in data else None


# -------------------------------------------------------------- reports

def initial_report(cc_list: list[str], concur_req: int, server_label: str,
                   base_url: str) -> None:
    print(f'{server_label} site: {base_url}')
    if len(cc_list) <= 10:
        codes = ', '.join(cc_list)
    else:
        codes = f'from {cc_list[0]} to {cc_list[-1]}'
    print(f'Searching for {plural(len(cc_list), "flag")}: {codes}')
    if concur_req == 1:
        print('1 connection will be used.')
    else:
        print(f'{concur_req} concurrent connections will be used.')


def final_report(cc_list: list[str], counter: Counter[DownloadStatus],
                 elapsed: float, peak: object = None) -> None:
    print('-' * 20)
    print(f'{plural(counter[DownloadStatus.OK], "flag")} downloaded.')
    if not_found := counter[DownloadStatus.NOT_FOUND]:
        print(f'{not_found} not found.')
    if errors := counter[DownloadStatus.ERROR]:
        print(f'{plural(errors, "error")}.')
        causes = settings.error_causes.most_common()
        print('errors: ' + ', '.join(f'{n} {cause}' for cause, n in causes))
    if peak is not None:
        print(f'Peak requests in flight at the server: {peak}.')
    print(f'Elapsed time: {elapsed:.2f}s')


def plural(n: int, word: str) -> str:
    return f'{n} {word}' if n == 1 else f'{n} {word}s'


# ----------------------------------------------------------------- main

DownloadMany = Callable[[list[str], str, bool, int], Counter[DownloadStatus]]


def main(download_many: DownloadMany, default_concur_req: int, max_concur_req: int,
         argv: list[str] | None = None) -> NoReturn:
    """Parse, report, time one run of ``download_many``, report again, exit."""
    try:
        run = parse_args(argv, default_concur_req, max_concur_req)
    except UsageError as exc:
        usage_exit(str(exc), default_concur_req)
    settings.dest, settings.timeout = run.dest, run.timeout
    settings.error_causes.clear()
    try:
        with bundled_server(run.server_label):
            initial_report(run.cc_list, run.concur_req, run.server_label, run.base_url)
            preload_http_stack()
            server_stats(run.base_url, 'reset')
            t0 = time.perf_counter()
            counter = download_many(run.cc_list, run.base_url, run.verbose, run.concur_req)
            elapsed = time.perf_counter() - t0
            stats = server_stats(run.base_url)
    except ServerStartError as exc:
        print(f'*** Could not start the bundled flags server: {exc}', file=sys.stderr)
        sys.exit(EXIT_ERRORS)
    final_report(run.cc_list, counter, elapsed, stats and stats['peak_in_flight'])
    if all_unreachable(counter):
        print('*** No server answered. Start the bundled one with: '
              'python flags_server.py', file=sys.stderr)
    sys.exit(EXIT_ERRORS if counter[DownloadStatus.ERROR] else EXIT_OK)


def all_unreachable(counter: Counter[DownloadStatus]) -> bool:
    refused = settings.error_causes['connection refused']
    return refused > 0 and refused == sum(counter.values())
