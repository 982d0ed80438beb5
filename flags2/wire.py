"""The bundled server's HTTP/1.1, written out by hand.

A well-behaved server could sit on any HTTP library. flags_server.py must
also misbehave: reset a connection instead of answering, cut a body short,
send a Content-Length that lies. That takes control of the bytes on the wire,
which an HTTP library (or an ASGI server) exists to hide. This module has
that control, and the listening sockets and stop signals around it, so
flags_server.py can show only what each mode does with each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import struct
import sys
import threading
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

__all__ = [
    'WIRE_FAULTS',
    'App',
    'Connections',
    'Response',
    'gzip_bomb',
    'stop_on_signals',
    'stop_when_stdin_closes',
    'text_response',
]

BACKLOG = 2048  # http.server's backlog of 5 is what made -m 100 crawl
MAX_HEAD = 16 * 1024
WIRE_FAULTS = ('reset', 'truncate', 'bad-length', 'stall',  # not expressible as a Response
               'trickle-headers', 'trickle-body', 'endless-chunks', 'gzip-bomb')
TRICKLE_INTERVAL = 0.1  # seconds between bytes (or chunks): well inside any read timeout
BOMB_BYTES = 1000 * 1024 ** 2  # what the gzip bomb inflates to, from under 1 MiB


@dataclass
class Response:
    status: int  # 0 for a fault that sends no status line (reset, stall)
    body: bytes = b''
    content_type: str = 'text/plain; charset=utf-8'
    location: str | None = None
    wire_fault: str | None = None  # one of WIRE_FAULTS: see send_fault


class App(Protocol):
    """What the wire serves: a response for each request line."""

    async def respond(self, method: str, target: str) -> Response: ...


def text_response(status: HTTPStatus) -> Response:
    return Response(status, f'{status.value} {status.phrase}\n'.encode())


class Connections:
    """Serves one app over HTTP/1.1 with keep-alive, and can drop every open connection."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.Server] = []

    async def listen(self, bind: str, port: int) -> int:
        """Listen on ``bind`` (both loopbacks for 'localhost'); the port (0: the kernel's pick)."""
        socks = loopback_sockets(bind, port)
        for sock in socks:
            self.servers.append(await asyncio.start_server(
                self.handle, sock=sock, backlog=BACKLOG, limit=MAX_HEAD))
        bound: int = socks[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stop listening, then drop the open connections."""
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while await self.serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError,
                asyncio.CancelledError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def serve_one(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection should close."""
        try:
            head = await reader.readuntil(b'\r\n\r\n')
        except asyncio.IncompleteReadError:
            return False  # the client closed an idle connection
        except asyncio.LimitOverrunError:
            await send(writer, text_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
                       keep_alive=False)
            return False
        request_line, *header_lines = head.decode('latin-1').split('\r\n')
        parts = request_line.split(' ')
        if len(parts) != 3 or not parts[2].startswith('HTTP/1.'):
            await send(writer, text_response(HTTPStatus.BAD_REQUEST), keep_alive=False)
            return False
        method, target, version = parts
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(':')
            headers[name.strip().lower()] = value.strip().lower()
        length = headers.get('content-length', '0')
        if length.isdigit() and int(length):
            await reader.readexactly(int(length))  # a GET has none; drop it
        connection = headers.get('connection', '')
        keep_alive = (connection != 'close' if version == 'HTTP/1.1'
                      else connection == 'keep-alive')
        response = await self.app.respond(method, target)
        if response.wire_fault:
            await send_fault(reader, writer, response)
            return False
        await send(writer, response, keep_alive, head_only=method == 'HEAD')
        return keep_alive


async def send(writer: asyncio.StreamWriter, response: Response,
               keep_alive: bool, head_only: bool = False) -> None:
    head = response_head(response, len(response.body), keep_alive)
    writer.write(head if head_only else head + response.body)
    await writer.drain()


def response_head(response: Response, length: int, keep_alive: bool) -> bytes:
    status = HTTPStatus(response.status)
    location = f'Location: {response.location}\r\n' if response.location else ''
    return (
        f'HTTP/1.1 {status.value} {status.phrase}\r\n'
        f'Content-Type: {response.content_type}\r\n'
        f'Content-Length: {length}\r\n'
        f'{location}'
        f'Connection: {"keep-alive" if keep_alive else "close"}\r\n'
        '\r\n'
    ).encode('latin-1')


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
