"""What counts as a flag, and the words for every way a download can fail.

The cause of a failure is decided by exception types, status codes and
errno values, never by the text of a message: a new wording in httpx2,
httpcore2 or h11 must not silently move a failure to another cause. Where a
type alone says too little (h11 reports a body cut short and a garbled
response head with the same exception), the place where it was raised
decides: the transport's ``BodyCheck`` turns a protocol error met while
reading the body into ``IncompleteBody``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from http import HTTPStatus
from typing import Any, NoReturn, TypeVar

import httpx2

MAX_FLAG_BYTES = 1024 * 1024
GIF_MAGIC = (b'GIF87a', b'GIF89a')
T = TypeVar('T')


class BadFlagError(httpx2.HTTPError):
    """A response we refuse to save: not a GIF, too large, or redirecting to a
    URL we refuse to ask (one no base URL could be).

    A subclass of httpx2.HTTPError carrying its request, so the variants
    handle it (and recover its URL) like every other download failure.
    """

    def __init__(self, message: str, request: httpx2.Request) -> None:
        super().__init__(message)
        self.request = request


class IncompleteBody(httpx2.RemoteProtocolError):
    """The server closed the connection before the body was whole."""


class NoThreadError(OSError):
    """No thread could start (Python says RuntimeError; the OS said EAGAIN)."""

    def __init__(self) -> None:
        super().__init__(errno.EAGAIN, 'no thread to start')


class CodeFailure(Exception):
    """A failed download with the code it asked for.

    asyncio.as_completed hands back other awaitables than the tasks it was
    given, so the asyncio supervisor learns the code from the failure itself,
    whatever happened to the request (a redirect, a save that failed).
    """

    def __init__(self, cc: str, error: Exception) -> None:
        super().__init__(cc, error)
        self.cc, self.error = cc, error


# What one code's download may raise: the HTTP errors, a failed save, and
# what reading metadata a server got wrong raises (not JSON, no 'country').
DOWNLOAD_FAILURES = (httpx2.HTTPError, OSError, ValueError, LookupError, TypeError)


def code_on_failure(cc: str, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task for ``coro``, whose download failure comes out as a CodeFailure naming ``cc``.

    The task is created now, so the downloads take the semaphore in the order
    the supervisor lists them (as_completed would start them in a set's
    order); flags2_compare.py's ideal time assumes that order.
    """
    task = asyncio.create_task(naming_failures(cc, coro), name=cc)
    # Cancelled before it started (Ctrl-C at once), the task never awaits
    # ``coro``: close it, or Python warns that it was never awaited.
    task.add_done_callback(lambda _: coro.close())
    return task


async def naming_failures(cc: str, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except DOWNLOAD_FAILURES as exc:
        raise CodeFailure(cc, exc) from exc


class BodyCheck:
    """What every response body of a run must pass, checked chunk by chunk as
    the transport hands the body to httpx2.

    The cap counts decoded bytes: the transport inflates any content coding
    itself, in steps of at most STEP bytes (see clients.Decoded), so a small
    compressed body that inflates to gigabytes stops here at the cap. A 2xx
    answer to a ``.gif`` URL must start like a GIF.
    """

    def __init__(self, request: httpx2.Request, status_code: int,
                 headers: httpx2.Headers) -> None:
        self.request = request
        self.size = 0
        self.gif = 200 <= status_code < 300 and request.url.path.endswith('.gif')
        self.head = b''
        self.content_type = headers.get('content-type', 'no content type').split(';')[0]
        length = headers.get('content-length', '')
        if length.isascii() and length.isdigit() and int(length) > MAX_FLAG_BYTES:
            self.too_large()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_FLAG_BYTES:
            self.too_large()
        if self.gif and len(self.head) < len(GIF_MAGIC[0]):
            self.head += chunk[:len(GIF_MAGIC[0]) - len(self.head)]
            if len(self.head) == len(GIF_MAGIC[0]):
                self.check_gif()

    def end(self) -> None:
        if self.gif:
            self.check_gif()

    def check_gif(self) -> None:
        if not self.head.startswith(GIF_MAGIC):
            raise BadFlagError(f'not a GIF ({self.content_type})', self.request)

    def too_large(self) -> NoReturn:
        raise BadFlagError(f'response over {format_size(MAX_FLAG_BYTES)}', self.request)

    def incomplete(self, exc: httpx2.RemoteProtocolError) -> NoReturn:
        raise IncompleteBody(str(exc), request=self.request) from exc


def forget_traceback(exc: BaseException) -> None:
    """Drop the frames a recorded failure holds, and those of its causes.

    A failure's traceback holds the frames it went through, and they hold
    the body read so far: kept until the run ends (in a finished task, say),
    memory would grow with the number of failed codes.
    """
    pending, seen = [exc], set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)


def format_size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f'{n // (1024 * 1024)} MiB'
    if n >= 1024 and n % 1024 == 0:
        return f'{n // 1024} KiB'
    return f'{n} bytes'


# ------------------------------------------------------------- the words

def error_cause(exc: BaseException) -> str:
    """Words a reader understands for why one download failed. Never empty."""
    if isinstance(exc, httpx2.HTTPStatusError):
        return http_error_text(exc.response)
    if isinstance(exc, BadFlagError):
        return str(exc)
    if isinstance(exc, httpx2.TimeoutException):
        return timeout_text(exc)
    if isinstance(exc, httpx2.TooManyRedirects):
        return 'too many redirects'
    if isinstance(exc, IncompleteBody):
        return 'incomplete response body'
    if isinstance(exc, httpx2.TransportError) and (cause := os_error_cause(exc)):
        return cause
    if isinstance(exc, httpx2.TransportError) and (cause := http2_cause(exc)):
        return cause
    if isinstance(exc, httpx2.RemoteProtocolError):
        return f'protocol error: {details(exc)}'
    if isinstance(exc, httpx2.ConnectError):
        return f'connection failed: {details(exc)}'
    if isinstance(exc, httpx2.TransportError):
        return f'network error: {details(exc)}'
    if isinstance(exc, NoThreadError):
        return 'no thread to start'
    if isinstance(exc, OSError):  # saving: the cause, not the file, so failures group
        return f'cannot save: {os.strerror(exc.errno) if exc.errno else details(exc)}'
    if isinstance(exc, json.JSONDecodeError):
        return 'metadata is not JSON'
    if isinstance(exc, httpx2.DecodingError):
        return f'undecodable response body: {details(exc)}'
    return f'unexpected {type(exc).__name__}: {str(exc) or "no details"}'


def http2_event(exc: BaseException) -> object | None:
    """The h2 event behind an HTTP/2 failure: httpcore2 raises its
    RemoteProtocolError with the StreamReset or ConnectionTerminated as its one
    argument."""
    import h2.events  # loaded with the HTTP stack, once a run starts: not at import

    for seen in chain(exc):
        if seen.args and isinstance(seen.args[0], h2.events.Event):
            return seen.args[0]
    return None


def http2_cause(exc: BaseException) -> str | None:
    import h2.events
    import h2.exceptions

    if broken := next((seen for seen in chain(exc)
                       if isinstance(seen, h2.exceptions.ProtocolError)), None):
        return f'HTTP/2 protocol error: {details(broken)}'
    event = http2_event(exc)
    if isinstance(event, h2.events.StreamReset):
        return f'stream reset by the server ({error_code_name(event.error_code)})'
    if isinstance(event, h2.events.ConnectionTerminated):
        return f'connection ended by the server (GOAWAY {error_code_name(event.error_code)})'
    return None


def stream_reset(exc: BaseException) -> bool:
    """Whether an HTTP/2 failure ended one stream only, its connection still fine."""
    import h2.events

    return isinstance(http2_event(exc), h2.events.StreamReset)


def error_code_name(code: int | None) -> str:
    import h2.errors

    try:
        return h2.errors.ErrorCodes(code or 0).name
    except ValueError:
        return f'error code {code}'


def http_error_text(response: httpx2.Response) -> str:
    code = response.status_code
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = response.reason_phrase
    return f'HTTP {code} {phrase}'.strip()


def timeout_text(exc: httpx2.TimeoutException) -> str:
    """'timed out after 3.1 s': the limit comes from the request that timed out."""
    try:
        limits = exc.request.extensions.get('timeout', {})
    except RuntimeError:  # an exception made without its request
        limits = {}
    kind = {httpx2.ConnectTimeout: 'connect', httpx2.WriteTimeout: 'write',
            httpx2.PoolTimeout: 'pool'}.get(type(exc), 'read')
    limit = limits.get(kind)
    return f'timed out after {limit:g} s' if isinstance(limit, (int, float)) else 'timed out'


NO_FILE_ERRNOS = (errno.EMFILE, errno.ENFILE)
RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE)
OS_ERROR_CAUSES = {
    errno.ECONNREFUSED: 'connection refused',
    **dict.fromkeys(RESET_ERRNOS, 'connection reset'),
    **dict.fromkeys(NO_FILE_ERRNOS, 'too many open files'),
}
NO_THREAD_ADVICE = 'No thread to start: lower -m, or give the process more memory.'
NO_FILE_ADVICE = 'Too many open files: lower -m, or raise the limit with ulimit -n.'


def exhaustion_advice(exc: BaseException) -> str | None:
    """What to do when ``exc`` says a resource every download needs ran out, else None.

    Every other download would fail the same way, so the run stops.
    """
    for seen in chain(exc):
        if isinstance(seen, NoThreadError):
            return NO_THREAD_ADVICE
        if isinstance(seen, OSError) and seen.errno in NO_FILE_ERRNOS:
            return NO_FILE_ADVICE
    return None


def os_error_cause(exc: BaseException) -> str | None:
    """Name a connection failure by the OSError httpx2 chains below it, if any."""
    for seen in chain(exc):
        if isinstance(seen, socket.gaierror):
            return 'host name not found'
        if isinstance(seen, OSError) and seen.errno in OS_ERROR_CAUSES:
            return OS_ERROR_CAUSES[seen.errno]
    return None


def closed_unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` says the server closed or reset the connection, rather than
    answered: a RemoteProtocolError that h11 did not raise (httpcore2's own, for
    an end of stream where a response head should be), or a reset. Over HTTP/2,
    a GOAWAY, or a stream reset as REFUSED_STREAM (RFC 9113: not processed);
    not a stream reset otherwise: the server answered that request.
    """
    import h2.errors
    import h2.events
    import h11  # loaded with the HTTP stack, once a run starts: not at import

    event = http2_event(exc)
    if isinstance(event, h2.events.StreamReset):
        return event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM

    for seen in chain(exc):
        if isinstance(seen, h11.RemoteProtocolError):  # bytes came, and were wrong
            return False
        if isinstance(seen, OSError) and seen.errno in RESET_ERRNOS:
            return True
    return isinstance(exc, httpx2.RemoteProtocolError)


def raised_by_thread_start(exc: BaseException) -> bool:
    """True when ``exc`` came out of threading.Thread.start: no thread could start.

    Python says RuntimeError for that and for much else; where it was raised
    tells them apart, not its words.
    """
    start = threading.Thread.start.__code__
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is start:
            return True
        tb = tb.tb_next
    return False


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from: httpx2 chains the OSError below its own."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def details(exc: BaseException) -> str:
    return str(exc) or f'{type(exc).__name__} with no details'


def short_cause(cause: str) -> str:
    """The cause without the HTTP reason phrase or the time limit, for the summary."""
    if cause.startswith('HTTP '):
        return ' '.join(cause.split()[:2])
    if cause.startswith('timed out'):
        return 'timed out'
    return cause
