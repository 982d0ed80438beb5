"""The bundled server's HTTP/1.1, written out by hand.

A well-behaved server could sit on any HTTP library. flags_server.py must
also misbehave: reset a connection instead of answering, cut a body short,
send a Content-Length that lies. That takes control of the bytes on the wire,
which an HTTP library (or an ASGI server) exists to hide. This module has
that control, and the listening sockets and stop signals around it, so
flags_server.py can show only what each mode does with each request.

It is also where a hostile or broken client is contained: a request that does
not parse gets a 4xx and a closed connection, a body is never held in memory,
an idle connection is closed, and past a cap new connections are turned away
before they can use up the process's file handles. Its log is one line per
event on stderr, and a line that a client could repeat at will (the cap) is
written at most once a second.

It answers as RFC 9112 asks of an origin server (and RFC 9110 of any): a
Host in every HTTP/1.1 request, request-targets in origin or absolute form,
Connection and Transfer-Encoding read as lists, a chunked body read (and
dropped), 505 for another major version, 414 for a request-target past the
limit, a 100 (Continue) when a client waits for one, a Date on every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import functools
import itertools
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

__all__ = [
    'PREFACE',
    'WIRE_FAULTS',
    'Activity',
    'App',
    'Connections',
    'Limits',
    'Response',
    'gzip_bomb',
    'quiet_accept_errors',
    'stop_on_signals',
    'stop_when_stdin_closes',
    'text_response',
]

BACKLOG = 2048  # http.server's backlog of 5 is what made -m 100 crawl
MAX_HEAD = 16 * 1024  # request line and headers together
MAX_BODY = 64 * 1024  # a flag request has no body; a bigger one gets 413
DISCARD_CHUNK = 64 * 1024
SEND_CHUNK = 64 * 1024  # a bigger body goes out a chunk at a time, awaiting the client
LINGER = 2.0  # seconds to drain a refused request before closing, so the client reads why
LOG_INTERVAL = 1.0  # seconds between two lines about the connection cap
FD_HEADROOM = 64  # file handles kept for listening sockets, stdio, the log

# RFC 9110/9112: what the parts of a request head may hold.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb'[!-~]+')  # visible ASCII: no space, control character or NUL
VERSION = re.compile(rb'HTTP/([0-9])\.([0-9])')
FIELD_VALUE = re.compile(rb'[\t\x20-\x7e\x80-\xff]*')  # no NUL, CR, LF or other controls
DIGITS = re.compile(rb'[0-9]+')
HEX_DIGITS = re.compile(rb'[0-9A-Fa-f]+')
# Host = uri-host [ ":" port ] (RFC 9110 7.2): an IP literal or a reg-name,
# which has no "@" (no user info) and no ":".
HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
# absolute-form (RFC 9112 3.2.2) of an http(s) URI, which has a host (RFC 9110 4.2).
ABSOLUTE_FORM = re.compile(rb'(?i:https?)://(?P<authority>[^/?#]+)(?P<rest>[/?][^#]*)?')
AUTHORITY_FORM = re.compile(rb'[^/?#@]+:[0-9]+')  # CONNECT's host:port (RFC 9112 3.2.3)
SINGLE_FIELDS = ('content-length', 'host')  # others may be a list over several lines
CONTINUE = b'HTTP/1.1 100 Continue\r\n\r\n'
WIRE_FAULTS = ('reset', 'truncate', 'bad-length', 'stall',  # not expressible as a Response
               'trickle-headers', 'trickle-body', 'endless-chunks', 'gzip-bomb')
TRICKLE_INTERVAL = 0.1  # seconds between bytes (or chunks): well inside any read timeout
BOMB_BYTES = 1000 * 1024 ** 2  # what the gzip bomb inflates to, from under 1 MiB
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'  # how an h2c client with prior knowledge begins


@dataclass
class Response:
    status: int  # 0 for a fault that sends no status line (reset, stall)
    body: bytes = b''
    content_type: str = 'text/plain; charset=utf-8'
    location: str | None = None
    wire_fault: str | None = None  # one of WIRE_FAULTS: see send_fault
    headers: tuple[tuple[str, str], ...] = ()  # more fields, such as a 405's Allow


class App(Protocol):
    """What the wire serves, over either protocol: a response for each request.

    ``headers`` has the names in lower case (an HTTP/2 request's ``:authority``
    as ``host``); ``connection`` tells apart the connections of one pool, so
    an app can count the connections that carried its requests.
    """

    async def respond(self, method: str, target: str, *, headers: Mapping[str, str],
                      connection: int) -> Response: ...


def text_response(status: HTTPStatus) -> Response:
    return Response(status, f'{status.value} {status.phrase}\n'.encode())


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # in origin form (path and query), whatever form it came in
    version: str
    headers: dict[str, str]  # names in lower case; a list's field lines joined by ', '
    body_length: int  # its Content-Length; 0 when the body is chunked
    keep_alive: bool  # False: close the connection after the answer
    chunked: bool = False  # the body is in chunks (Transfer-Encoding: chunked)
    expects_continue: bool = False  # the client waits for a 100 before the body


class Refused(Exception):
    """A request we will not serve: answer ``status``, log ``reason``, close."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(status, reason)
        self.status, self.reason = status, reason


def default_max_connections(pools: int = 1) -> int:
    """Connections per pool that leave file handles to spare: at most 1024.

    Past the process's file-handle limit, accept() fails and asyncio logs
    every retry; turning connections away below it keeps the server serving.
    """
    return max(1, min(1024, (fd_limit() - FD_HEADROOM) // pools))


def fd_limit(wanted: int = 0) -> int:
    """Our soft limit of file handles, first raised toward ``wanted`` within the hard limit.

    Many systems start processes at 1024, too few for 1000 connections and
    the rest; the hard limit is often far higher, and ours to take.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to read
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft != infinite and wanted > soft:
        new_soft = wanted if hard == infinite else min(wanted, hard)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
    return 1 << 20 if soft == infinite else soft


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server."""

    idle_timeout: float = 15.0  # seconds a connection may wait for its next request
    max_connections: int = field(default_factory=default_max_connections)  # per pool
    max_streams: int = 100  # HTTP/2 streams open at once on one connection, as is common


def log(line: str) -> None:
    """One line on stderr: the server's whole log."""
    print(f'flags_server: {line}', file=sys.stderr, flush=True)


@dataclass
class Activity:
    """When the pool last saw a request begin or end, and how many are being served.

    So a server whose run has ended can tell when it has been quiet for long enough.
    """

    busy: int = 0
    last: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def exchange(self) -> Iterator[None]:
        self.busy += 1
        self.last = time.monotonic()
        try:
            yield
        finally:
            self.busy -= 1
            self.last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last request ended; 0 while one is being served."""
        return 0.0 if self.busy else time.monotonic() - self.last


class Sniffer(asyncio.StreamReaderProtocol):
    """Holds back a connection's first bytes until they show whether it opens with
    the HTTP/2 preface, then hands all of them on: nothing is lost for HTTP/1.1.

    At most len(PREFACE) bytes wait here; the first byte that differs from the
    preface (or an end of file) decides at once.
    """

    def __init__(self, reader: asyncio.StreamReader,
                 connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]],
                 preface: asyncio.Future[bool]) -> None:
        super().__init__(reader, connected)
        self.preface = preface
        self.first = b''

    def data_received(self, data: bytes) -> None:
        if self.preface.done():
            super().data_received(data)
            return
        self.first += data
        if len(self.first) < len(PREFACE) and PREFACE.startswith(self.first):
            return
        self.decide()

    def eof_received(self) -> bool:
        self.decide()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.decide()
        super().connection_lost(exc)

    def decide(self) -> None:
        if self.preface.done():
            return
        self.preface.set_result(self.first.startswith(PREFACE))
        first, self.first = self.first, b''
        if first:
            super().data_received(first)


class Connections:
    """Serves one app over HTTP/1.1 with keep-alive, and can drop every open connection.

    Each connection gets an id, for the app. A connection that opens with the
    HTTP/2 preface goes to ``serve_h2``, which a subclass (flags2/h2wire.py)
    gives a meaning; here it is HTTP/1.1 like any other, and gets a 505.
    """

    def __init__(self, app: App, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.Server] = []
        self.turned_away = 0  # since the last line about the cap
        self.last_cap_line = -LOG_INTERVAL
        self.ids = itertools.count(1)
        self.activity = Activity()

    async def listen(self, bind: str, port: int) -> int:
        """Listen on ``bind`` (both loopbacks for 'localhost'); the port (0: the kernel's pick)."""
        loop = asyncio.get_running_loop()

        def sniffer() -> Sniffer:
            preface = loop.create_future()
            return Sniffer(asyncio.StreamReader(limit=MAX_HEAD),
                           functools.partial(self.handle, preface=preface), preface)

        socks = loopback_sockets(bind, port)
        for sock in socks:
            self.servers.append(await loop.create_server(sniffer, sock=sock, backlog=BACKLOG))
        bound: int = socks[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stop listening, then drop the open connections."""
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     preface: asyncio.Future[bool]) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.tasks) >= self.limits.max_connections:
            self.turn_away(writer)
            return
        self.tasks.add(task)
        connection = next(self.ids)
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                h2 = await preface
            if not (h2 and await self.serve_h2(reader, writer, connection)):
                while await self.serve_one(reader, writer, connection):
                    pass
        except Refused as exc:
            log(f'{exc.status.value} {exc.status.phrase} to {peer(writer)}: {exc.reason}')
            await refuse(reader, writer, exc.status)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError,
                asyncio.CancelledError):
            pass  # the client left, went idle too long, or we are stopping
        finally:
            self.tasks.discard(task)
            writer.close()

    async def serve_h2(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       connection: int) -> bool:
        """Serve a connection that opened with the HTTP/2 preface; False: not spoken here."""
        return False

    def turn_away(self, writer: asyncio.StreamWriter) -> None:
        """Close a connection past the cap at once, saying so at most once a second."""
        self.turned_away += 1
        now = time.monotonic()
        if now - self.last_cap_line >= LOG_INTERVAL:
            log(f'{self.limits.max_connections} connections open, the most '
                f'--max-connections allows: turned away {self.turned_away} '
                'since the last such line')
            self.turned_away, self.last_cap_line = 0, now
        writer.write(response_head(text_response(HTTPStatus.SERVICE_UNAVAILABLE), 0,
                                   keep_alive=False))
        writer.close()

    async def serve_one(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, connection: int) -> bool:
        """Answer one request; False when the connection should close.

        Raises Refused for a request that must not be served, and TimeoutError
        when the client sends nothing for the idle timeout.
        """
        async with asyncio.timeout(self.limits.idle_timeout):
            request = await read_request(reader)
            if request is None:
                return False  # the client closed an idle connection
            if request.expects_continue:
                writer.write(CONTINUE)
                await writer.drain()
            if request.chunked:
                await discard_chunked(reader)
            else:
                await discard(reader, request.body_length)
        keep_alive = request.keep_alive
        with self.activity.exchange():
            response = await self.app.respond(request.method, request.target,
                                              headers=request.headers, connection=connection)
            if response.wire_fault:
                await send_fault(reader, writer, response)
                return False
            async with asyncio.timeout(self.limits.idle_timeout):
                await send(writer, response, keep_alive,
                           head_only=request.method == 'HEAD')
        return keep_alive


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read and check one request head; None when the client closed before one began."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b'\n')
        except asyncio.IncompleteReadError as exc:
            if lines or exc.partial.strip():
                raise Refused(HTTPStatus.BAD_REQUEST, 'request head cut short') from None
            return None
        except asyncio.LimitOverrunError:
            if not lines:  # RFC 9112 3: a request-target too long to parse is a 414
                raise Refused(HTTPStatus.REQUEST_URI_TOO_LONG,
                              f'a request line over {MAX_HEAD} bytes') from None
            raise Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                          f'a line over {MAX_HEAD} bytes') from None
        size += len(line)
        if size > MAX_HEAD:
            if not lines:
                raise Refused(HTTPStatus.REQUEST_URI_TOO_LONG,
                              f'a request line over {MAX_HEAD} bytes')
            raise Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                          f'request head over {MAX_HEAD} bytes')
        if not line.endswith(b'\r\n'):
            raise Refused(HTTPStatus.BAD_REQUEST, 'a line ends in a bare LF')
        if line == b'\r\n':
            if lines:
                return parse_head(lines)
            continue  # RFC 9112 2.2: ignore empty lines before a request line
        lines.append(line[:-2])


def parse_head(lines: list[bytes]) -> Request:
    """The request of a head, checked field by field (RFC 9112)."""
    request_line, *fields = lines
    parts = request_line.split(b' ')
    version = VERSION.fullmatch(parts[-1])
    if not (len(parts) == 3 and TOKEN.fullmatch(parts[0]) and TARGET.fullmatch(parts[1])
            and version):
        raise Refused(HTTPStatus.BAD_REQUEST, 'bad request line')
    if version[1] != b'1':
        raise Refused(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                      f'{parts[2].decode("ascii")} is not HTTP/1.x')
    http11 = version[2] != b'0'  # HTTP/1.2 and up are served as HTTP/1.1 (RFC 9110 2.5)
    method = parts[0].decode('ascii')
    target = origin_form(method, parts[1])
    headers = parse_fields(fields)
    if http11 and 'host' not in headers:
        raise Refused(HTTPStatus.BAD_REQUEST, 'no host in an HTTP/1.1 request')
    if not HOST.fullmatch(headers.get('host', '').encode('latin-1')):
        raise Refused(HTTPStatus.BAD_REQUEST, 'bad host')
    options = list_items(headers.get('connection', ''))
    keep_alive = 'close' not in options and (http11 or 'keep-alive' in options)
    chunked = 'transfer-encoding' in headers
    if chunked:  # RFC 9112 6.1, 6.3: framing by Transfer-Encoding alone, then close
        check_codings(list_items(headers['transfer-encoding']), http11)
        length = 0
        keep_alive = keep_alive and 'content-length' not in headers
    else:
        length = content_length(headers.get('content-length', '0'))
    expects_continue = (http11 and '100-continue' in list_items(headers.get('expect', ''))
                        and (chunked or length > 0))
    return Request(method, target, parts[2].decode('ascii'), headers, length, keep_alive,
                   chunked, expects_continue)


def parse_fields(fields: list[bytes]) -> dict[str, str]:
    """The header fields, names in lower case; a list field's lines joined by ', '."""
    headers: dict[str, str] = {}
    for line in fields:
        name, colon, value = line.partition(b':')
        value = value.strip(b' \t')
        if not (colon and TOKEN.fullmatch(name) and FIELD_VALUE.fullmatch(value)):
            raise Refused(HTTPStatus.BAD_REQUEST, 'bad header line')
        key = name.decode('ascii').lower()
        if key in headers and key in SINGLE_FIELDS:
            raise Refused(HTTPStatus.BAD_REQUEST, f'{key} given twice')
        text = value.decode('latin-1')
        headers[key] = f'{headers[key]}, {text}' if key in headers else text
    return headers


def origin_form(method: str, target: bytes) -> str:
    """The path and query a request-target names (RFC 9112 3.2), whatever its form."""
    if target.startswith(b'/'):
        return target.decode('ascii')
    if absolute := ABSOLUTE_FORM.fullmatch(target):
        if not HOST.fullmatch(absolute['authority']):
            raise Refused(HTTPStatus.BAD_REQUEST, 'bad host in an absolute-form target')
        rest = (absolute['rest'] or b'/').decode('ascii')
        return rest if rest.startswith('/') else '/' + rest
    if (method == 'OPTIONS' and target == b'*') or (
            method == 'CONNECT' and AUTHORITY_FORM.fullmatch(target)):
        return target.decode('ascii')  # the app answers them with a 405
    raise Refused(HTTPStatus.BAD_REQUEST, 'request-target in no form RFC 9112 allows')


def list_items(value: str) -> list[str]:
    """The items of a list field (RFC 9110 5.6.1), in lower case; empty ones dropped."""
    return [item for part in value.split(',') if (item := part.strip(' \t').lower())]


def check_codings(codings: list[str], http11: bool) -> None:
    """Refuse a Transfer-Encoding whose body we cannot read to its end (RFC 9112 6.1, 6.3)."""
    if not http11:
        raise Refused(HTTPStatus.BAD_REQUEST, 'transfer-encoding in an HTTP/1.0 request')
    if not codings or codings[-1] != 'chunked' or codings.count('chunked') > 1:
        raise Refused(HTTPStatus.BAD_REQUEST, 'chunked is not the last transfer coding, '
                                              'once')
    if len(codings) > 1:
        raise Refused(HTTPStatus.NOT_IMPLEMENTED,
                      f'transfer coding {codings[0]!r} is not supported')


def content_length(value: str) -> int:
    """The body length a Content-Length gives: digits only, at most MAX_BODY."""
    length = value.encode('latin-1')
    if not DIGITS.fullmatch(length):
        raise Refused(HTTPStatus.BAD_REQUEST, 'content-length is not a number')
    if len(length.lstrip(b'0')) > 18 or int(length) > MAX_BODY:  # int() of 5000 digits raises
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f'body over {MAX_BODY} bytes')
    return int(length)


async def discard(reader: asyncio.StreamReader, length: int) -> None:
    """Read ``length`` bytes of body and drop them, a chunk at a time."""
    while length > 0:
        chunk = await reader.read(min(length, DISCARD_CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b'', length)
        length -= len(chunk)


async def discard_chunked(reader: asyncio.StreamReader) -> None:
    """Read a chunked body (RFC 9112 7.1) and drop it: its sizes, extensions and
    trailer fields checked, MAX_BODY bytes of data at most."""
    total = 0
    while True:
        size_text, _, extension = (await read_line(reader)).partition(b';')
        size_text = size_text.rstrip(b' \t')
        if not (HEX_DIGITS.fullmatch(size_text) and FIELD_VALUE.fullmatch(extension)):
            raise Refused(HTTPStatus.BAD_REQUEST, 'bad chunk size line')
        size = int(size_text, 16) if len(size_text.lstrip(b'0')) <= 8 else MAX_BODY + 1
        total += size
        if total > MAX_BODY:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f'body over {MAX_BODY} bytes')
        if size == 0:
            break
        await discard(reader, size)
        if await reader.readexactly(2) != b'\r\n':
            raise Refused(HTTPStatus.BAD_REQUEST, 'a chunk longer than its size')
    trailers = 0
    while line := await read_line(reader):
        trailers += len(line)
        if trailers > MAX_HEAD:
            raise Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                          f'trailer section over {MAX_HEAD} bytes')
        parse_fields([line])


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One line of a chunked body, without its CRLF."""
    try:
        line = await reader.readuntil(b'\n')
    except asyncio.LimitOverrunError:
        raise Refused(HTTPStatus.BAD_REQUEST, f'a chunk line over {MAX_HEAD} bytes') from None
    if not line.endswith(b'\r\n'):
        raise Refused(HTTPStatus.BAD_REQUEST, 'a line ends in a bare LF')
    return line[:-2]


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 status: HTTPStatus) -> None:
    """Answer ``status``, then drain (never keep) what the client still sends.

    Closing a socket with unread data sends a reset, which can destroy the
    answer before the client reads it; a short drain lets it arrive.
    """
    with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError, OSError):
        async with asyncio.timeout(LINGER):
            await send(writer, text_response(status), keep_alive=False)
            if writer.can_write_eof():
                writer.write_eof()
            while await reader.read(DISCARD_CHUNK):
                pass


def peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info('peername')
    if isinstance(address, tuple) and len(address) >= 2:
        host = f'[{address[0]}]' if ':' in str(address[0]) else address[0]
        return f'{host}:{address[1]}'
    return 'a client'


async def send(writer: asyncio.StreamWriter, response: Response,
               keep_alive: bool, head_only: bool = False) -> None:
    """Write a response. A body over SEND_CHUNK goes a chunk at a time, with a
    turn of the event loop between two: a slow reader holds at most a chunk or
    two of our memory, never a copy of the whole, and hundreds of clients
    reading the same big answer take turns with everyone else (``drain``
    alone returns at once while the socket takes the data, so one answer of
    1.6 MB went out in one go, and 400 of them kept a flag request waiting)."""
    head = response_head(response, len(response.body), keep_alive)
    body = b'' if head_only else response.body
    if len(body) <= SEND_CHUNK:
        writer.write(head + body)
    else:
        writer.write(head)
        view = memoryview(body)
        for start in range(0, len(view), SEND_CHUNK):
            await writer.drain()
            await asyncio.sleep(0)
            writer.write(view[start:start + SEND_CHUNK])
    await writer.drain()


def response_head(response: Response, length: int, keep_alive: bool) -> bytes:
    status = HTTPStatus(response.status)
    location = f'Location: {response.location}\r\n' if response.location else ''
    more = ''.join(f'{name}: {value}\r\n' for name, value in response.headers)
    return (
        f'HTTP/1.1 {status.value} {status.phrase}\r\n'
        f'Date: {http_date(int(time.time()))}\r\n'
        f'Content-Type: {response.content_type}\r\n'
        f'Content-Length: {length}\r\n'
        f'{location}{more}'
        f'Connection: {"keep-alive" if keep_alive else "close"}\r\n'
        '\r\n'
    ).encode('latin-1')


@functools.lru_cache(maxsize=2)
def http_date(second: int) -> str:
    """The Date of an answer (RFC 9110 6.6.1), in IMF-fixdate form: written once a second."""
    return email.utils.formatdate(second, usegmt=True)


async def send_fault(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     response: Response) -> None:
    """Put a wire fault on the connection; the caller then closes it."""
    body, kind = response.body, response.wire_fault
    if kind == 'reset':
        sock = writer.get_extra_info('socket')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        writer.transport.abort()  # with a zero linger, close() sends RST, not FIN
        return
    if kind == 'truncate':
        writer.write(response_head(response, len(body), keep_alive=False)
                     + body[:len(body) // 2])
    elif kind == 'bad-length':
        writer.write(response_head(response, len(body) + 1000, keep_alive=False) + body)
    elif kind == 'stall':
        await reader.read()  # until the client closes: its timeout, not ours
    elif kind in TRICKLES:
        await TRICKLES[kind](writer, response)
    elif kind == 'gzip-bomb':
        writer.write(encoded_head(response, 'gzip', len(gzip_bomb())) + gzip_bomb())
    await writer.drain()


# The slow faults never time out on their own: each byte comes well within
# any read timeout, so only a limit on the whole request ends them. Each
# loop ends when the client has gone (drain raises ConnectionError).

async def trickle_headers(writer: asyncio.StreamWriter, response: Response) -> None:
    """A response head that never ends: a status line, then a header a byte at a time."""
    await trickle(writer, b'HTTP/1.1 200 OK\r\nX-Trickle: ')
    while True:
        await trickle(writer, b'a')


async def trickle_body(writer: asyncio.StreamWriter, response: Response) -> None:
    """The whole head at once, then the body a byte at a time (it does end, much later)."""
    writer.write(response_head(response, len(response.body), keep_alive=False))
    await trickle(writer, response.body)


async def endless_chunks(writer: asyncio.StreamWriter, response: Response) -> None:
    """A chunked body that never ends: a GIF header, then one small chunk at a time."""
    status = HTTPStatus(response.status)
    writer.write(f'HTTP/1.1 {status.value} {status.phrase}\r\n'
                 f'Content-Type: {response.content_type}\r\n'
                 'Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
                 '6\r\nGIF89a\r\n'.encode('latin-1'))
    while True:
        writer.write(b'1\r\n\x00\r\n')
        await writer.drain()
        await asyncio.sleep(TRICKLE_INTERVAL)


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
        await asyncio.sleep(TRICKLE_INTERVAL)


TRICKLES = {'trickle-headers': trickle_headers, 'trickle-body': trickle_body,
            'endless-chunks': endless_chunks}


def encoded_head(response: Response, encoding: str, length: int) -> bytes:
    status = HTTPStatus(response.status)
    return (f'HTTP/1.1 {status.value} {status.phrase}\r\n'
            f'Content-Type: {response.content_type}\r\n'
            f'Content-Encoding: {encoding}\r\n'
            f'Content-Length: {length}\r\n'
            'Connection: close\r\n\r\n').encode('latin-1')


@functools.cache
def gzip_bomb() -> bytes:
    """Under 1 MiB of gzip that inflates to a GIF header and BOMB_BYTES of zeros.

    Compressing 1 GiB takes seconds; with a full flush after each MiB every
    block of zeros compresses to the same bytes, so one block is repeated.
    """
    mib = bytes(1024 * 1024)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(b'GIF89a') + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()
    crc = zlib.crc32(b'GIF89a')
    for _ in range(BOMB_BYTES // len(mib)):
        crc = zlib.crc32(mib, crc)
    size = (6 + BOMB_BYTES) % 2 ** 32
    header = b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff'
    return (header + first + block * (BOMB_BYTES // len(mib)) + end
            + struct.pack('<II', crc, size))


def loopback_sockets(bind: str, port: int) -> list[socket.socket]:
    """Listening sockets on one port: 127.0.0.1 and ::1 for 'localhost'."""
    hosts = ['127.0.0.1', '::1'] if bind == 'localhost' else [bind]
    sockets: list[socket.socket] = []
    for host in hosts:
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            if sockets and bind == 'localhost':
                continue  # no IPv6 loopback here, or its port is taken: IPv4 will do
            for other in sockets:
                other.close()
            raise
        sock.setblocking(False)
        sockets.append(sock)
        port = sock.getsockname()[1]  # with port 0, ::1 takes the port 127.0.0.1 got
    return sockets


RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Report accept() running out of file handles in one line, at most once a second.

    asyncio reports it with a traceback for every connection still waiting
    (CPython 3.11 keeps calling accept() after the first failure), which made
    1,100 idle connections write 100 MB of log in 15 s. Other errors keep
    asyncio's full report.
    """
    default = loop.default_exception_handler
    state = {'last': -LOG_INTERVAL, 'count': 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get('exception')
        if not (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS):
            default(context)
            return
        state['count'] += 1
        now = time.monotonic()
        if now - state['last'] >= LOG_INTERVAL:
            log(f'cannot accept connections: {os.strerror(exc.errno)}; retrying '
                f'(failures since the last such line: {state["count"]})')
            state['last'], state['count'] = now, 0

    loop.set_exception_handler(handler)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (where the loop can take signal handlers)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)


def stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Tie our life to a parent's: when its end of our stdin closes, stop.

    The watcher reads the raw descriptor, not ``sys.stdin.buffer``: a daemon
    thread blocked in that object holds its lock, and if SIGTERM ends us first,
    interpreter shutdown waits a second for the lock and then aborts.
    """
    fd = sys.stdin.fileno()

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=watch, daemon=True).start()
