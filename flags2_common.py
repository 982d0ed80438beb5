"""What the three flags2 variants share: the command line, reports, saving,
and the words for every failure.

Each variant only supplies ``download_many(cc_list, base_url, verbose,
concur_req)`` and calls ``main(download_many, DEFAULT_CONCUR_REQ,
MAX_CONCUR_REQ)``. Everything else lives here, once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import json
import os
import signal
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import certifi
import httpx
import tqdm

if TYPE_CHECKING:  # httpx imports httpcore on first use; so do we, to keep --help quick
    import httpcore

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

T = TypeVar('T')


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
    interrupted: bool = False  # set on Ctrl-C by the variant's loop; main() exits 130

    def start_run(self, dest: Path, timeout: float) -> None:
        """Take a run's options and forget what an earlier run in this process noted."""
        self.dest, self.timeout = dest, timeout
        self.error_causes.clear()
        self.interrupted = False


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
        return f'protocol error: {details(exc)}'
    if isinstance(exc, httpx.TransportError):
        return transport_cause(exc)
    if isinstance(exc, OSError):
        return f'cannot save {Path(exc.filename or "flag").name}: {exc.strerror or details(exc)}'
    if isinstance(exc, httpx.DecodingError):
        return f'undecodable response body: {details(exc)}'
    return f'unexpected {type(exc).__name__}: {str(exc) or "no details"}'


def details(exc: BaseException) -> str:
    return str(exc) or f'{type(exc).__name__} with no details'


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
    text = details(exc)
    if 'Connection refused' in text:
        return 'connection refused'
    if 'reset' in text.lower():
        return 'connection reset'
    what = 'connection failed' if isinstance(exc, httpx.ConnectError) else 'network error'
    return f'{what}: {text}'


def short_cause(cause: str) -> str:
    """The cause without the HTTP reason phrase or timeout, for the summary line."""
    if cause.startswith('HTTP '):
        return ' '.join(cause.split()[:2])
    if cause.startswith('timed out after '):
        return 'timed out'
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
# Shards are built on first use, and the CA certificates (loading them costs
# ~35 ms) on the first TLS handshake: plain-http runs never pay for them.

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


class LazyCAContext(ssl.SSLContext):
    """A TLS context that loads the CA certificates when a first handshake needs them.

    Loading them costs ~35 ms, which a run against a plain-http server never
    needs to pay; a redirect to https still gets a verifying context.
    """

    lock = threading.Lock()
    loaded = False

    def load_cas(self) -> None:
        with self.lock:
            if not self.loaded:
                self.load_verify_locations(certifi.where())
                self.loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # sync httpcore
        self.load_cas()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # anyio, for asyncio
        self.load_cas()
        return super().wrap_bio(*args, **kwargs)


def lazy_ca_context() -> LazyCAContext:
    return LazyCAContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names


class AbortableStream:
    """A connection that another thread can cut short while a read waits on it.

    Duck-types httpcore.NetworkStream, which this module does not import until
    a client is built.
    """

    def __init__(self, stream: httpcore.NetworkStream, streams: OpenStreams) -> None:
        self.stream, self.streams = stream, streams
        streams.add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, timeout)

    def close(self) -> None:
        self.streams.discard(self)
        self.stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        self.streams.discard(self)  # the TLS stream takes over the socket
        tls = self.stream.start_tls(ssl_context, server_hostname, timeout)
        return cast('httpcore.NetworkStream', AbortableStream(tls, self.streams))

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)

    def abort(self) -> None:
        sock = self.get_extra_info('socket')
        with contextlib.suppress(OSError, AttributeError):
            sock.shutdown(socket.SHUT_RDWR)


class OpenStreams:
    """The network backend of a ShardedTransport, which remembers its connections.

    Closing a socket does not wake a thread blocked reading it: after Ctrl-C,
    threadpool workers waiting on a slow server kept the process alive until
    their reads timed out. ``abort`` shuts the sockets down, which ends those
    reads at once. Duck-types httpcore.SyncBackend.
    """

    def __init__(self) -> None:
        import httpcore

        self.backend = httpcore.SyncBackend()
        self.streams: set[AbortableStream] = set()
        self.aborted = False
        self.lock = threading.Lock()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return cast('httpcore.NetworkStream', AbortableStream(stream, self))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        stream = self.backend.connect_unix_socket(path, timeout, socket_options)
        return cast('httpcore.NetworkStream', AbortableStream(stream, self))

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)

    def add(self, stream: AbortableStream) -> None:
        with self.lock:
            if not self.aborted:
                self.streams.add(stream)
                return
        # A worker that connected after abort() would otherwise block in its
        # first read until the server answered, and hold up the executor's join.
        stream.abort()

    def discard(self, stream: AbortableStream) -> None:
        with self.lock:
            self.streams.discard(stream)

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            streams = list(self.streams)
        for stream in streams:
            stream.abort()


Shard = TypeVar('Shard', httpx.HTTPTransport, httpx.AsyncHTTPTransport)


class Shards(Generic[Shard]):
    """The small pools of one client, each built when a request first needs it."""

    def __init__(self, concur_req: int, build: Callable[[int], Shard]) -> None:
        self.sizes = shard_sizes(concur_req)
        self.build: Callable[[int], Shard] = build
        self.load = ShardLoad(self.sizes)
        self.built: list[Shard | None] = [None] * len(self.sizes)
        self.lock = threading.Lock()

    def pick(self) -> tuple[Shard, Callable[[], None]]:
        """A shard with a free connection, and the call that frees it again."""
        index = self.load.take()
        shard = self.built[index]
        if shard is None:
            with self.lock:  # two threadpool workers may reach an unbuilt shard at once
                shard = self.built[index]
                if shard is None:
                    shard = self.built[index] = self.build(self.sizes[index])
        return shard, self.load.release_once(index)

    def all(self) -> list[Shard]:
        return [shard for shard in self.built if shard is not None]


class ShardedTransport(httpx.BaseTransport):
    def __init__(self, concur_req: int) -> None:
        self.backend = OpenStreams()
        self.tls = lazy_ca_context()
        self.shards = Shards(concur_req, self.build)

    def build(self, size: int) -> httpx.HTTPTransport:
        shard = httpx.HTTPTransport(limits=shard_limits(size), verify=self.tls)
        # httpx.HTTPTransport takes no network backend; its httpcore pool does.
        shard._pool._network_backend = cast('httpcore.NetworkBackend', self.backend)
        return shard

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        shard, release = self.shards.pick()
        try:
            response = shard.handle_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = ReleasingStream(response.stream, release)
        return response

    def close(self) -> None:
        """Close every connection, ending reads that other threads still wait on."""
        self.backend.abort()
        for shard in self.shards.all():
            shard.close()


class AsyncShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, concur_req: int) -> None:
        self.tls = lazy_ca_context()
        self.shards = Shards(concur_req, self.build)

    def build(self, size: int) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(limits=shard_limits(size), verify=self.tls)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard, release = self.shards.pick()
        try:
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


# ------------------------------------------------------------- Ctrl-C
#
# Ctrl-C must end a run within a second, with the counts so far and exit
# status 130. Each variant's loop notices it (KeyboardInterrupt, or in asyncio
# a cancelled download), calls interrupted(), counts what had finished and
# returns its counter to main().

def interrupted(progress: Iterable[Any], counter: Counter[DownloadStatus]) -> None:
    """Note a Ctrl-C, and stop the progress bar at the count so far.

    Closing the bar ends its line, so the report starts on a fresh one, and
    freezes it: the cancellations that follow do not move it.
    """
    settings.interrupted = True
    if isinstance(progress, tqdm.tqdm) and not progress.disable:
        progress.n = sum(counter.values())  # tqdm updates n only when it redraws
        progress.close()


def cancel_pending(executor: Executor) -> None:
    """Threadpool: drop the downloads no thread has started; don't wait for the rest.

    Closing the client (see ShardedTransport.close) then ends the reads that
    running threads are blocked in, so the executor's own join is quick.
    """
    executor.shutdown(wait=False, cancel_futures=True)


def completed(futures: Iterable[Future[DownloadStatus]]) -> Iterator[DownloadStatus]:
    """Threadpool, after Ctrl-C: the downloads that ended well but were not counted.

    Their flags are saved, so the report counts them. Failures are left out:
    closing the client is what cut most of them short.
    """
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            yield future.result()


@contextlib.contextmanager
def ctrl_c_cancels(tasks: list[asyncio.Task[Any]]) -> Iterator[None]:
    """asyncio: while the supervisor collects results, Ctrl-C cancels every download.

    Left alone, asyncio.run turns Ctrl-C into KeyboardInterrupt (in 3.10
    wherever the loop happens to be, in 3.11+ after cancelling the supervisor),
    and the counts so far are lost. With the downloads cancelled instead, the
    supervisor's loop still sees every one of them end: it counts those that
    finished and returns.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread gets signals
        return
    loop = asyncio.get_running_loop()

    def cancel_all() -> None:
        for task in tasks:
            task.cancel()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(cancel_all)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def unless_started(aw: Awaitable[T]) -> T:
    """asyncio: let ``aw`` finish even if Ctrl-C cancels the task awaiting it.

    For saving a flag: once the write has started in its thread, it completes
    whatever the task does, so the download is counted as done, not cancelled.
    """
    inner = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        result = await inner
        task = asyncio.current_task()
        if task is not None and hasattr(task, 'uncancel'):  # Python 3.11+
            task.uncancel()
        return result


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


def stop_process(proc: subprocess.Popen[Any]) -> None:
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


def server_json(base_url: str, path: str, timeout: float = 1) -> dict[str, Any] | None:
    """GET ``path`` from the root of a server on loopback, as a JSON object.

    None for a remote server (only the bundled one has these pages) and for
    anything that is not an answer in JSON.
    """
    parts = urlsplit(base_url)
    if parts.hostname not in ('localhost', '127.0.0.1', '::1'):
        return None
    try:
        with urllib.request.urlopen(f'{parts.scheme}://{parts.netloc}{path}',
                                    timeout=timeout) as resp:
            data = json.load(resp)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def server_stats(base_url: str, action: str = 'stats') -> dict[str, object] | None:
    """GET /stats (or /stats/reset) from a bundled server on loopback; None otherwise."""
    data = server_json(base_url, '/stats' if action == 'stats' else '/stats/reset')
    return data if data is not None and 'peak_in_flight' in data else None


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
    if settings.interrupted:
        done = sum(counter.values())
        print(f'Interrupted by Ctrl-C: {done} of {len(cc_list)} codes done, '
              'the rest cancelled.')
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
    settings.start_run(run.dest, run.timeout)
    counter: Counter[DownloadStatus] = Counter()
    stats = None
    t0 = time.perf_counter()
    try:
        with bundled_server(run.server_label):
            initial_report(run.cc_list, run.concur_req, run.server_label, run.base_url)
            preload_http_stack()
            server_stats(run.base_url, 'reset')
            t0 = time.perf_counter()
            counter = download_many(run.cc_list, run.base_url, run.verbose, run.concur_req)
            elapsed = time.perf_counter() - t0
            if not settings.interrupted:
                stats = server_stats(run.base_url)
    except KeyboardInterrupt:  # outside download_many's loop: while starting, say
        settings.interrupted = True
        elapsed = time.perf_counter() - t0
    except ServerStartError as exc:
        print(f'*** Could not start the bundled flags server: {exc}', file=sys.stderr)
        sys.exit(EXIT_ERRORS)
    final_report(run.cc_list, counter, elapsed, stats and stats['peak_in_flight'])
    if all_unreachable(counter):
        print('*** No server answered. Start the bundled one with: '
              'python flags_server.py', file=sys.stderr)
    sys.exit(exit_status(counter))


def exit_status(counter: Counter[DownloadStatus]) -> int:
    if settings.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_ERRORS if counter[DownloadStatus.ERROR] else EXIT_OK


def all_unreachable(counter: Counter[DownloadStatus]) -> bool:
    refused = settings.error_causes['connection refused']
    return refused > 0 and refused == sum(counter.values())
