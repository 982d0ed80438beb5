"""The bundled server's HTTP/2 (h2c, prior knowledge), the twin of wire.py's HTTP/1.1.

A connection whose first bytes are the HTTP/2 preface is served here, on the
same port as HTTP/1.1 (wire.py's Sniffer tells them apart). The framing is
the ``h2`` package's, a sans-IO state machine: bytes in, events and bytes
out; the sockets, the tasks, the timeouts and the faults are ours. The app,
the limits and the log are wire.py's, so both protocols answer alike.

Each stream is answered by a task of its own, so slow answers overlap on one
connection. A body goes out no faster than the client's flow-control window
opens and never in frames over its maximum size, and what a client uploads is
acknowledged (then dropped) at once, so an upload cannot stall the connection.

A hostile client is contained as on HTTP/1.1: what we write waits on the
client reading it before we read more from it, so a client that never reads
holds a window's worth of our memory and then only its own stalled streams;
a header block is capped (h2 refuses one over SETTINGS_MAX_HEADER_LIST_SIZE,
and more than 64 CONTINUATION frames); frames that cost us work but ask for
nothing (resets of unanswered streams, SETTINGS, PINGs, PRIORITY) draw on a
budget, and a client that spends it faster than it refills gets GOAWAY
ENHANCE_YOUR_CALM. A protocol error gets GOAWAY with h2's error code and one
line of log.

Faults mean over HTTP/2 what they mean over HTTP/1.1, for the one stream:
``reset`` is RST_STREAM (INTERNAL_ERROR) instead of an answer; ``stall``
never answers; ``truncate`` sends half the body, then GOAWAY (INTERNAL_ERROR)
and closes the connection, as over HTTP/1.1, so the other streams on it fail
too; ``bad-length`` sends the whole body under a content-length 1000 bytes
too large, then END_STREAM; ``trickle-body`` sends one byte a DATA frame
every 0.1 s; ``endless-chunks`` sends a body without a length, a byte every
0.1 s, that never ends; ``gzip-bomb`` is the same body as over HTTP/1.1.
``trickle-headers`` has no HTTP/2 meaning (h2 sends a header block whole, in
one go): the stream gets no response head at all, as with ``stall``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from flags2.wire import (
    LINGER,
    MAX_BODY,
    MAX_HEAD,
    SEND_CHUNK,
    TARGET,
    TOKEN,
    TRICKLE_INTERVAL,
    Connections,
    Response,
    gzip_bomb,
    http_date,
    log,
    peer,
    text_response,
)

__all__ = ['H2cConnections', 'Session', 'StreamRequest']

READ_CHUNK = 64 * 1024
# Frames that ask for nothing: a client may send a burst of BUDGET, then
# REFILL a second; past that it is flooding us (rapid reset, SETTINGS floods).
BUDGET = 1000
REFILL = 200.0


@dataclass(frozen=True)
class StreamRequest:
    """What a stream asked for, checked, in the shapes the app takes."""

    method: str
    target: str
    headers: Mapping[str, str]  # lower-case names; :authority as 'host'


class H2cConnections(Connections):
    """Serves one app over HTTP/1.1 and, on the same port, over h2c with prior knowledge."""

    async def serve_h2(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       connection: int) -> bool:
        await Session(self, reader, writer, connection).run()
        return True

    async def serve_stream(self, session: Session, stream_id: int,
                           request: StreamRequest) -> None:
        """One stream's exchange, from the request to the last byte of the answer.

        A subclass may wrap it: flags_server.py releases its hold on the request here.
        """
        await session.answer(stream_id, request)


class Session:
    """One HTTP/2 connection: the h2 state machine, a task per stream, flow control."""

    def __init__(self, pool: H2cConnections, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, connection: int) -> None:
        self.pool = pool
        self.reader, self.writer = reader, writer
        self.connection = connection
        self.h2 = H2Connection(config=H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: pool.limits.max_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD,
        })
        self.requests: dict[int, StreamRequest] = {}  # head received, body not yet ended
        self.uploaded: dict[int, int] = {}  # body bytes received so far, per stream
        self.streams: dict[int, asyncio.Task[None]] = {}  # being answered
        self.windows: dict[int, asyncio.Event] = {}  # streams waiting for flow control
        self.last_active = time.monotonic()
        self.budget, self.budget_time = float(BUDGET), time.monotonic()
        self.closing = False

    async def run(self) -> None:
        """Read frames until the client leaves, goes idle, says GOAWAY, or breaks the rules."""
        self.h2.initiate_connection()
        try:
            await self.flush()
            while data := await self.read():
                try:
                    events = self.h2.receive_data(data)
                except ProtocolError as exc:  # h2 has queued its GOAWAY
                    log(f'HTTP/2 {ErrorCodes(exc.error_code).name} from {peer(self.writer)}: '
                        f'{type(exc).__name__}; sent GOAWAY')
                    await self.last_words()
                    return
                for event in events:
                    self.dispatch(event)
                if self.closing:  # the client's GOAWAY, or ours
                    await self.last_words()
                    return
                await self.flush()
        finally:
            for task in self.streams.values():
                task.cancel()
            await asyncio.gather(*self.streams.values(), return_exceptions=True)

    async def read(self) -> bytes:
        """The next bytes from the client; b'' at its end, or when the connection has
        been idle (no stream being answered) for the idle timeout: then GOAWAY."""
        idle_timeout = self.pool.limits.idle_timeout
        while True:
            idle_for = 0.0 if self.streams else time.monotonic() - self.last_active
            try:
                async with asyncio.timeout(max(0.0, idle_timeout - idle_for)):
                    data = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                if self.streams or time.monotonic() - self.last_active < idle_timeout:
                    continue
                self.h2.close_connection(ErrorCodes.NO_ERROR)
                await self.last_words()
                return b''
            self.last_active = time.monotonic()
            return data

    def dispatch(self, event: Event) -> None:
        if isinstance(event, RequestReceived) and event.stream_id is not None:
            self.requests[event.stream_id] = stream_request(event.headers or [])
            self.uploaded[event.stream_id] = 0
        elif isinstance(event, DataReceived) and event.stream_id is not None:
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0,
                                              event.stream_id)
            if event.stream_id in self.uploaded:
                self.uploaded[event.stream_id] += len(event.data or b'')
                if self.uploaded[event.stream_id] > MAX_BODY:
                    self.start(event.stream_id, too_large=True)
        elif isinstance(event, StreamEnded) and event.stream_id is not None:
            self.start(event.stream_id)
        elif isinstance(event, StreamReset) and event.stream_id is not None:
            self.forget(event.stream_id)
            if task := self.streams.get(event.stream_id):
                task.cancel()
                self.spend()
        elif isinstance(event, WindowUpdated):
            for stream_id, opened in self.windows.items():
                if event.stream_id in (None, 0, stream_id):
                    opened.set()
        elif isinstance(event, RemoteSettingsChanged):
            for opened in self.windows.values():  # a new initial window size, maybe
                opened.set()
            self.spend()
        elif isinstance(event, PingReceived | PriorityUpdated):
            self.spend()  # h2 has queued the PING's ACK
        elif isinstance(event, ConnectionTerminated):
            # h2 takes no frame either way after a GOAWAY: the streams end with it.
            self.closing = True

    def spend(self) -> None:
        """Take one frame's worth of the budget; past it, GOAWAY ENHANCE_YOUR_CALM."""
        now = time.monotonic()
        self.budget = min(BUDGET, self.budget + (now - self.budget_time) * REFILL) - 1
        self.budget_time = now
        if self.budget < 0 and not self.closing:
            log(f'HTTP/2 ENHANCE_YOUR_CALM to {peer(self.writer)}: over {BUDGET:d} resets, '
                f'SETTINGS, PINGs or PRIORITY frames at once, {REFILL:.0f} a second; '
                'sent GOAWAY')
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self.closing = True

    def forget(self, stream_id: int) -> None:
        self.requests.pop(stream_id, None)
        self.uploaded.pop(stream_id, None)

    def start(self, stream_id: int, too_large: bool = False) -> None:
        """Answer a stream whose request is whole (or whose body is over the cap)."""
        request = self.requests.pop(stream_id, None)
        self.uploaded.pop(stream_id, None)
        if request is None or self.closing:
            return
        task = asyncio.create_task(self.stream(stream_id, request, too_large))
        self.streams[stream_id] = task

    async def stream(self, stream_id: int, request: StreamRequest, too_large: bool) -> None:
        try:
            if too_large:
                await self.send(stream_id, text_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE))
                self.reset(stream_id, ErrorCodes.NO_ERROR)  # stop the upload (RFC 9113 8.1)
                await self.flush()
            else:
                with self.pool.activity.exchange():
                    await self.pool.serve_stream(self, stream_id, request)
        except TimeoutError:  # the client let its window stay shut for the idle timeout
            self.reset(stream_id, ErrorCodes.CANCEL)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self.flush()
        except (ConnectionError, ProtocolError):
            pass  # the client reset the stream, said GOAWAY or left
        finally:
            self.streams.pop(stream_id, None)
            self.windows.pop(stream_id, None)
            self.last_active = time.monotonic()

    async def answer(self, stream_id: int, request: StreamRequest) -> None:
        """The app's response to one stream, or its fault."""
        if not (TOKEN.fullmatch(request.method.encode())
                and TARGET.fullmatch(request.target.encode())):
            await self.send(stream_id, text_response(HTTPStatus.BAD_REQUEST))
            return
        response = await self.pool.app.respond(request.method, request.target,
                                               headers=request.headers,
                                               connection=self.connection)
        if response.wire_fault:
            await self.send_fault(stream_id, response)
        else:
            await self.send(stream_id, response, head_only=request.method == 'HEAD')

    async def send(self, stream_id: int, response: Response, head_only: bool = False,
                   length: int | None = None) -> None:
        """The head, then the body as the client's window allows, then END_STREAM."""
        body = b'' if head_only else response.body
        self.h2.send_headers(stream_id, response_headers(
            response, len(response.body) if length is None else length),
            end_stream=not body)
        await self.flush()
        await self.send_body(stream_id, body, end_stream=True)

    async def send_body(self, stream_id: int, body: bytes, end_stream: bool,
                        frame: int = SEND_CHUNK) -> None:
        """DATA frames of at most ``frame`` bytes, none past the window or the frame size."""
        view = memoryview(body)
        while view:
            size = min(await self.window(stream_id), self.h2.max_outbound_frame_size,
                       frame, len(view))
            self.h2.send_data(stream_id, view[:size].tobytes(),
                              end_stream=end_stream and size == len(view))
            view = view[size:]
            await self.flush()
            await asyncio.sleep(0)  # other streams and connections take their turn

    async def window(self, stream_id: int) -> int:
        """The bytes we may send on the stream now, once the client has opened its window.

        TimeoutError when it stays shut for the idle timeout.
        """
        async with asyncio.timeout(self.pool.limits.idle_timeout):
            while (open_bytes := self.h2.local_flow_control_window(stream_id)) < 1:
                opened = self.windows[stream_id] = asyncio.Event()
                await opened.wait()
        return open_bytes

    async def flush(self) -> None:
        """Write what h2 has queued; wait (up to the idle timeout) for the client to take it.

        The wait is what keeps a client that never reads from filling our memory.
        """
        if data := self.h2.data_to_send():
            self.writer.write(data)
        async with asyncio.timeout(self.pool.limits.idle_timeout):
            await self.writer.drain()

    async def last_words(self) -> None:
        """Send the GOAWAY h2 has queued, briefly, then close."""
        self.closing = True
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(LINGER):
                if data := self.h2.data_to_send():
                    self.writer.write(data)
                await self.writer.drain()
        self.writer.transport.abort()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(ProtocolError):  # StreamClosedError among them
            self.h2.reset_stream(stream_id, code)

    async def send_fault(self, stream_id: int, response: Response) -> None:
        """Put a fault on the stream (see the module's docstring for each)."""
        kind, body = response.wire_fault, response.body
        if kind == 'reset':
            self.reset(stream_id, ErrorCodes.INTERNAL_ERROR)
            await self.flush()
        elif kind in ('stall', 'trickle-headers'):
            await asyncio.Future()  # until the client resets the stream or leaves
        elif kind == 'truncate':
            self.h2.send_headers(stream_id, response_headers(response, len(body)))
            await self.send_body(stream_id, body[:len(body) // 2], end_stream=False)
            self.h2.close_connection(ErrorCodes.INTERNAL_ERROR)
            await self.last_words()
        elif kind == 'bad-length':
            await self.send(stream_id, response, length=len(body) + 1000)
        elif kind == 'trickle-body':
            self.h2.send_headers(stream_id, response_headers(response, len(body)))
            for i in range(len(body)):
                await self.send_body(stream_id, body[i:i + 1], end_stream=i == len(body) - 1)
                await asyncio.sleep(TRICKLE_INTERVAL)
        elif kind == 'endless-chunks':
            self.h2.send_headers(stream_id, response_headers(response, None))
            await self.send_body(stream_id, b'GIF89a', end_stream=False)
            while True:
                await asyncio.sleep(TRICKLE_INTERVAL)
                await self.send_body(stream_id, b'\x00', end_stream=False)
        elif kind == 'gzip-bomb':
            bomb = gzip_bomb()
            self.h2.send_headers(stream_id, response_headers(
                response, len(bomb), (('content-encoding', 'gzip'),)))
            await self.send_body(stream_id, bomb, end_stream=True)


def stream_request(fields: list[tuple[bytes, bytes]] | list[tuple[str, str]]) -> StreamRequest:
    """The request a stream's header block makes (h2 has checked its form)."""
    pseudo: dict[str, str] = {}
    headers: dict[str, str] = {}
    for raw_name, raw_value in fields:
        name = raw_name.decode('latin-1') if isinstance(raw_name, bytes) else raw_name
        value = raw_value.decode('latin-1') if isinstance(raw_value, bytes) else raw_value
        if name.startswith(':'):
            pseudo[name] = value
        else:
            headers[name] = f'{headers[name]}, {value}' if name in headers else value
    if ':authority' in pseudo:
        headers.setdefault('host', pseudo[':authority'])
    return StreamRequest(pseudo.get(':method', ''), pseudo.get(':path', ''), headers)


def response_headers(response: Response, length: int | None,
                     more: tuple[tuple[str, str], ...] = ()) -> list[tuple[bytes, bytes]]:
    """A response's header block; no content-length when ``length`` is None."""
    fields = [(':status', str(HTTPStatus(response.status).value)),
              ('date', http_date(int(time.time()))),
              ('content-type', response.content_type)]
    if length is not None:
        fields.append(('content-length', str(length)))
    if response.location:
        fields.append(('location', response.location))
    fields.extend((name.lower(), value) for name, value in (*response.headers, *more))
    return [(name.encode('latin-1'), value.encode('latin-1')) for name, value in fields]
