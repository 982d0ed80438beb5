"""The bundled server's HTTP/2 (h2c with prior knowledge) on the HTTP/1.1 port:
the same answers, streams answered concurrently, --max-streams, flow control,
faults, /stats' connections and per-run figures, --linger, hostile clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx2
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hpack import Decoder
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from conftest import http_get
from flags_server import OVERSIZE_BYTES, Workload, flag_gif, main

from flags2.codes import country_codes
from flags2.servers import SERVER_SCRIPT, FlagsServer, running_server
from flags2.wire import PREFACE, gzip_bomb

IDLE_TIMEOUT = 2.0
needs_proc = pytest.mark.skipif(not Path('/proc/self/status').exists(),
                                reason='reads memory through /proc')
PROMPT = 2.0  # seconds another client may wait for a flag during an attack (goal: 1 s)


@pytest.fixture(scope='module')
def server() -> Iterator[FlagsServer]:
    with running_server('delay', '--delay-min', '0.01', '--delay-max', '0.05',
                        '--idle-timeout', str(IDLE_TIMEOUT), tied=True) as server:
        yield server


def root(server: FlagsServer) -> str:
    return f'http://127.0.0.1:{server.port}'


def h2_client(**kwargs: object) -> httpx2.Client:
    return httpx2.Client(http1=False, http2=True, timeout=10, **kwargs)  # type: ignore[arg-type]


def vm_kib(pid: int, field: str = 'VmRSS') -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(f'{field}:'):
            return int(line.split()[1])
    raise AssertionError(f'no {field}')


# ------------------------------------------------------------ a raw client

class RawH2:
    """A client driven frame by frame: h2's state machine on a blocking socket."""

    def __init__(self, port: int, *, settings: dict[int, int] | None = None,
                 validate: bool = True) -> None:
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        self.h2 = H2Connection(config=H2Configuration(
            client_side=True, header_encoding=None, validate_inbound_headers=validate))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.events: list[Event] = []
        self.wire = bytearray()  # all the server sent, to read frame by frame
        self.closed = False
        self.flush()

    def flush(self) -> None:
        if data := self.h2.data_to_send():
            self.sock.sendall(data)

    def get(self, path: str, *, end_stream: bool = True,
            headers: list[tuple[str, str]] | None = None, method: str = 'GET') -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, [(':method', method), (':path', path),
                                         (':scheme', 'http'), (':authority', 'x'),
                                         *(headers or [])], end_stream=end_stream)
        self.flush()
        return stream_id

    def pump(self, until: Callable[[list[Event]], bool], timeout: float = 10,
             ack: bool = True) -> list[Event]:
        """Read until ``until(all events so far)``, the server closes, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not until(self.events) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                data = b''
            if not data:
                self.closed = True
                break
            self.wire += data
            try:
                events = self.h2.receive_data(data)
            except ProtocolError as exc:
                self.events.append(ConnectionTerminated())
                self.error = exc
                break
            for event in events:
                if ack and isinstance(event, DataReceived) and event.stream_id:
                    self.h2.acknowledge_received_data(event.flow_controlled_length or 0,
                                                      event.stream_id)
            self.events.extend(events)
            with contextlib.suppress(OSError, ProtocolError):
                self.flush()
        return self.events

    def body(self, stream_id: int) -> bytes:
        return b''.join(e.data or b'' for e in self.events
                        if isinstance(e, DataReceived) and e.stream_id == stream_id)

    def response(self, stream_id: int) -> dict[bytes, bytes]:
        for event in self.events:
            if isinstance(event, ResponseReceived) and event.stream_id == stream_id:
                return dict(event.headers or [])
        raise AssertionError(f'no response on stream {stream_id}')

    def close(self) -> None:
        self.sock.close()


def ended(stream_id: int) -> Callable[[list[Event]], bool]:
    return lambda events: any(isinstance(e, StreamEnded | StreamReset)
                              and e.stream_id == stream_id for e in events)


def terminated(events: list[Event]) -> bool:
    return any(isinstance(e, ConnectionTerminated) for e in events)


def goaway(events: list[Event]) -> ConnectionTerminated:
    return next(e for e in events if isinstance(e, ConnectionTerminated))


@contextlib.contextmanager
def raw(server: FlagsServer, **kwargs: object) -> Iterator[RawH2]:
    client = RawH2(server.port, **kwargs)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        client.close()


def flag_elsewhere_within(server: FlagsServer, seconds: float, faulty: bool = False) -> float:
    """Fetch a flag over a new connection (HTTP/2); the seconds it took.

    ``faulty``: the server's every flag is a fault that still answers 200.
    """
    start = time.monotonic()
    with h2_client() as client:
        resp = client.get(f'{root(server)}/flags/br/br.gif', timeout=seconds)
    took = time.monotonic() - start
    assert resp.status_code == 200 and (faulty or resp.content == flag_gif('BR'))
    assert took < seconds
    return took


# ------------------------------------------------------ same port, same answers

def test_one_port_answers_http2_and_http11_alike(server: FlagsServer) -> None:
    with h2_client() as client:
        for path in ('/flags/br/br.gif', '/flags/br/metadata.json', '/flags/zz/zz.gif',
                     '/nothing', '/workload'):
            resp = client.get(root(server) + path)
            assert resp.http_version == 'HTTP/2'
            status, body, kind = http_get(root(server) + path)
            assert (resp.status_code, resp.content, resp.headers['content-type']) == (
                status, body, kind), path
            assert resp.headers['content-length'] == str(len(body))
        head = client.head(f'{root(server)}/flags/br/br.gif')
        assert head.content == b'' and head.headers['content-length'] == str(
            len(flag_gif('BR')))
        post = client.post(f'{root(server)}/flags/br/br.gif', content=b'x')
        assert (post.status_code, post.headers['allow']) == (405, 'GET, HEAD')


def test_error_mode_fails_the_same_codes_over_http2() -> None:
    with running_server('error', '--delay-min', '0', '--delay-max', '0') as server, \
            h2_client() as client:
        statuses = {cc: client.get(f'{server.url}/{cc.lower()}/{cc.lower()}.gif').status_code
                    for cc in country_codes()}
    assert {cc for cc, s in statuses.items() if s == 418} == {
        cc for cc in country_codes() if Workload('error').fails(cc)}
    assert set(statuses.values()) == {200, 418}


@pytest.mark.skipif(shutil.which('curl') is None, reason='curl is not installed')
def test_curl_gets_the_same_flag_with_either_protocol(server: FlagsServer) -> None:
    url = f'{server.url}/br/br.gif'
    for flag, version in (('--http2-prior-knowledge', '2'), ('--http1.1', '1.1')):
        proc = subprocess.run(['curl', '-sS', flag, '-w', '%{http_version}', '-o', '-', url],
                              capture_output=True, timeout=30)
        if flag == '--http2-prior-knowledge' and b'unsupported' in proc.stderr.lower():
            pytest.skip('this curl has no HTTP/2')  # pragma: no cover
        assert proc.stdout == flag_gif('BR') + version.encode()


# ------------------------------------------------ streams, one connection

def test_slow_answers_run_concurrently_on_one_connection() -> None:
    with running_server('delay', '--delay-min', '1.0', '--delay-max', '1.0') as server:
        async def fetch() -> list[int]:
            async with httpx2.AsyncClient(http1=False, http2=True, timeout=10) as client:
                await client.get(f'{server.url}/br/br.gif')  # the connection, settled
                server.reset()
                start = time.monotonic()
                resps = await asyncio.gather(*(
                    client.get(f'{server.url}/{cc.lower()}/{cc.lower()}.gif')
                    for cc in country_codes()[:40]))
                assert time.monotonic() - start < 1.0 * 2
                return [r.status_code for r in resps]

        assert asyncio.run(fetch()) == [200] * 40
        stats = server.stats()
    assert (stats['peak_in_flight'], stats['connections']) == (40, 1)


def test_max_streams_caps_each_connection() -> None:
    with running_server('delay', '--delay-min', '0.5', '--delay-max', '0.5',
                        '--max-streams', '50') as server:
        async def client_of_97(run: str, codes: list[str]) -> list[int]:
            async with httpx2.AsyncClient(http1=False, http2=True, timeout=30,
                                          headers={'x-flags2-run': run}) as client:
                resps = await asyncio.gather(*(
                    client.get(f'{server.url}/{cc.lower()}/{cc.lower()}.gif')
                    for cc in codes))
                return [r.status_code for r in resps]

        async def both() -> list[list[int]]:
            codes = list(country_codes())
            return list(await asyncio.gather(client_of_97('one', codes[:97]),
                                             client_of_97('two', codes[97:])))

        assert asyncio.run(both()) == [[200] * 97, [200] * 97]
        stats, one, two = (server.get_json(path) for path in (
            '/stats', '/stats?run=one', '/stats?run=two'))
    # 50 streams at a time on each of the two connections
    assert (one['peak_in_flight'], one['connections'], one['requests']) == (50, 1, {'200': 97})
    assert (two['peak_in_flight'], two['connections'], two['requests']) == (50, 1, {'200': 97})
    assert (stats['peak_in_flight'], stats['connections']) == (100, 2)


def test_a_stream_past_max_streams_ends_the_connection_as_h2_does() -> None:
    """h2 4.4.1 treats a HEADERS past SETTINGS_MAX_CONCURRENT_STREAMS as a
    connection error (TooManyStreamsError: GOAWAY PROTOCOL_ERROR), where RFC
    9113 5.1.2 allows a stream error (REFUSED_STREAM); other clients go on."""
    with running_server('delay', '--delay-min', '1', '--delay-max', '1',
                        '--max-streams', '3') as server, raw(server) as client:
        # sent before we read the server's SETTINGS (our h2 would refuse the 4th)
        streams = [client.get(f'/flags/{cc}/{cc}.gif') for cc in ('br', 'cn', 'de', 'fr')]
        events = client.pump(terminated)
        assert goaway(events).error_code == ErrorCodes.PROTOCOL_ERROR
        assert not any(isinstance(e, StreamReset) for e in events)
        assert streams[-1] == 7
        flag_elsewhere_within(server, PROMPT + 1)
        assert 'TooManyStreamsError' in server.log_text()


# ------------------------------------------- streams as curl and httpx2 open them
#
# curl 7.88.1 (Debian 12's) fails `--http2-prior-knowledge --parallel` with
# "(16) Error in the HTTP2 framing layer" after the first transfer, and two
# URLs in a row the same way: on any reuse of a prior-knowledge connection it
# stacks a second HTTP/2 layer on it (curl#10634, fixed in curl 8.0.0), and
# does so against a 20-line h2 server too; libcurl 8 multiplexes here. What
# our server sends on such a connection is checked below frame by frame.

CURL_SETTINGS = {SettingCodes.ENABLE_PUSH: 0, SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                 SettingCodes.INITIAL_WINDOW_SIZE: 32 * 1024 * 1024}
STREAM_FRAMES = (HeadersFrame, DataFrame, RstStreamFrame, WindowUpdateFrame)
CONNECTION_FRAMES = (SettingsFrame, WindowUpdateFrame, PingFrame, GoAwayFrame)


def frames_of(wire: bytes) -> list[Frame]:
    """The frames a server sent (it sends no preface), every one of them whole."""
    frames = []
    view = memoryview(wire)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        assert len(view) >= 9 + length, 'a frame cut short'
        frame.parse_body(view[9:9 + length])
        frames.append(frame)
        view = view[9 + length:]
    return frames


def assert_valid_sequence(frames: list[Frame]) -> set[int]:
    """What a strict peer checks beyond h2: SETTINGS first, each stream's HEADERS
    before its DATA, no frame of any kind on a stream after its END_STREAM, only
    connection frames on stream 0. The streams that ended."""
    assert isinstance(frames[0], SettingsFrame) and 'ACK' not in frames[0].flags
    ended: set[int] = set()
    headed: set[int] = set()
    for frame in frames:
        if frame.stream_id == 0:
            assert isinstance(frame, CONNECTION_FRAMES), frame
            continue
        assert isinstance(frame, STREAM_FRAMES), frame
        assert frame.stream_id not in ended, f'{frame} after END_STREAM'
        if isinstance(frame, HeadersFrame):
            headed.add(frame.stream_id)
        else:
            assert frame.stream_id in headed, f'{frame} before HEADERS'
        if 'END_STREAM' in frame.flags or isinstance(frame, RstStreamFrame):
            ended.add(frame.stream_id)
    return ended


def test_streams_opened_as_curl_does_get_only_valid_frames(server: FlagsServer) -> None:
    codes = [cc.lower() for cc in country_codes()[:4]]
    with raw(server, settings=CURL_SETTINGS) as client:
        client.h2.increment_flow_control_window(32 * 1024 * 1024)
        first = client.get(f'/flags/{codes[0]}/{codes[0]}.gif')  # before the server's SETTINGS
        client.pump(lambda events: any(isinstance(e, RemoteSettingsChanged) for e in events))
        more = [client.get(f'/flags/{cc}/{cc}.gif') for cc in codes[1:3]]  # multiplexed
        for stream_id in (first, *more):
            client.pump(ended(stream_id))
        last = client.get(f'/flags/{codes[3]}/{codes[3]}.gif')  # the connection, reused
        client.pump(ended(last))
        client.pump(lambda events: False, timeout=0.3)  # and nothing after the end
        # a ProtocolError in our strict client's h2 would be a ConnectionTerminated here
        assert not terminated(client.events) and not client.closed
        streams = [first, *more, last]
        assert assert_valid_sequence(frames_of(bytes(client.wire))) == set(streams)
        for stream_id, cc in zip(streams, codes, strict=True):
            assert client.response(stream_id)[b':status'] == b'200'
            assert client.body(stream_id) == flag_gif(cc.upper())


def curl_version() -> tuple[int, ...]:
    """curl's version, from the second field of the first line of ``curl --version``."""
    first = subprocess.run(['curl', '--version'], capture_output=True, text=True,
                           timeout=10).stdout.split('\n', 1)[0]
    return tuple(int(part) for part in first.split()[1].split('.') if part.isdigit())


@pytest.mark.skipif(shutil.which('curl') is None, reason='curl is not installed')
def test_curl_multiplexes_transfers_on_one_connection(server: FlagsServer,
                                                      tmp_path: Path) -> None:
    if curl_version() < (8, 0):
        pytest.skip(f'curl {".".join(map(str, curl_version()))} fails any reuse of a '
                    'prior-knowledge connection, whatever the server (curl#10634, '
                    'fixed in curl 8.0.0)')
    codes = [cc.lower() for cc in country_codes()[:3]]
    outputs = []
    for cc in codes:
        outputs += ['-o', str(tmp_path / cc), f'{server.url}/{cc}/{cc}.gif']
    proc = subprocess.run(['curl', '-sS', '--http2-prior-knowledge', '--parallel',
                           '--parallel-max', '5', '-w', '%{num_connects}\n', *outputs],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert sum(map(int, proc.stdout.split())) == 1  # one connection carried all three
    for cc in codes:
        assert (tmp_path / cc).read_bytes() == flag_gif(cc.upper())


class AsyncH2:
    """An h2c client with one reader task that ends each stream's future as its
    END_STREAM arrives: a finished answer is seen at once, never queued behind
    another stream's read (as httpcore2's HTTP/2 read lock queues it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = H2Connection(config=H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.writer.write(self.h2.data_to_send())
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.reading = asyncio.create_task(self.read())

    async def read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.h2.receive_data(data):
                if isinstance(event, DataReceived) and event.stream_id:
                    self.h2.acknowledge_received_data(event.flow_controlled_length or 0,
                                                      event.stream_id)
                if isinstance(event, StreamEnded) and event.stream_id in self.waiting:
                    self.waiting.pop(event.stream_id).set_result(None)
            self.writer.write(self.h2.data_to_send())

    async def get(self, path: str) -> None:
        stream_id = self.h2.get_next_available_stream_id()
        done = self.waiting[stream_id] = asyncio.get_running_loop().create_future()
        self.h2.send_headers(stream_id, [(':method', 'GET'), (':path', path),
                                         (':scheme', 'http'), (':authority', 'x')],
                             end_stream=True)
        self.writer.write(self.h2.data_to_send())
        await done

    async def close(self) -> None:
        self.reading.cancel()
        self.writer.close()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self.reading


def test_sequential_requests_on_one_connection_are_answered_at_once() -> None:
    with running_server('local') as server, raw(server) as client:
        took = []
        for cc in country_codes()[:10]:
            start = time.monotonic()
            stream_id = client.get(f'/flags/{cc.lower()}/{cc.lower()}.gif')
            client.pump(ended(stream_id))
            took.append(time.monotonic() - start)
            assert client.body(stream_id) == flag_gif(cc)
    assert max(took) < 0.05 * 2, took  # a few ms each here


def test_concurrent_streams_are_answered_as_their_delay_ends() -> None:
    """5 streams at a time on one connection, each opened as another ends: each
    answer comes within a few ms of its delay, as over HTTP/1.1, whatever the
    other streams are doing. (httpx2 over HTTP/2 sees 50-100 ms more on average,
    400 ms at worst, from its own read lock, not from us.)"""
    with running_server('delay', '--delay-min', '0.2', '--delay-max', '0.4') as server:
        delays = server.get_json('/workload')['delays']
        codes = country_codes()[:20]

        async def run() -> list[float]:
            client = AsyncH2(*await asyncio.open_connection('127.0.0.1', server.port))
            late: list[float] = []

            async def worker(mine: list[str]) -> None:
                for cc in mine:
                    start = time.monotonic()
                    await client.get(f'/flags/{cc.lower()}/{cc.lower()}.gif')
                    late.append(time.monotonic() - start - delays[cc])
            try:
                async with asyncio.timeout(20):
                    await asyncio.gather(*(worker(list(codes[k::5])) for k in range(5)))
            finally:
                await client.close()
            return late

        late = sorted(asyncio.run(run()))
    assert len(late) == 20
    assert late[-1] < 0.05 * 2, late  # 5-25 ms here; a held answer waits 100s of ms


# ------------------------------------------------------------- flow control

def test_a_big_body_follows_the_window_and_the_frame_size() -> None:
    with running_server('local', '--fault', 'oversize', '--fault-rate', '1') as server, \
            raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        client.pump(ended(stream_id))
    sizes = [len(e.data or b'') for e in client.events if isinstance(e, DataReceived)]
    assert sum(sizes) == OVERSIZE_BYTES
    assert max(sizes) <= 16384  # the default SETTINGS_MAX_FRAME_SIZE
    # 1 MiB through a window of 64 KiB: the server waited for our WINDOW_UPDATEs


@needs_proc
def test_a_client_that_never_reads_holds_one_window_of_our_memory() -> None:
    with running_server('local', '--fault', 'oversize', '--fault-rate', '1',
                        '--idle-timeout', '3') as server:
        before = vm_kib(server.proc.pid)
        clients = [RawH2(server.port, settings={4: 2 ** 31 - 1}) for _ in range(5)]
        try:
            for client in clients:  # a huge stream window; the connection's stays 64 KiB
                client.h2.increment_flow_control_window(2 ** 31 - 1 - 65535)
                for _ in range(20):
                    client.get('/flags/br/br.gif')
            time.sleep(1)
            grown = vm_kib(server.proc.pid) - before
            flag_elsewhere_within(server, PROMPT, faulty=True)
        finally:
            for client in clients:
                client.close()
    # 100 streams of 1 MiB + 64 KiB asked for: 106 MiB if queued
    assert grown < 16 * 1024, grown


def test_an_upload_past_the_first_window_is_acknowledged(server: FlagsServer) -> None:
    with raw(server) as client:
        stream_id = client.get('/flags/br/br.gif', method='POST', end_stream=False,
                               headers=[('content-length', '65536')])
        data = bytes(65536)
        while data:  # the stream's window opens only as the server acknowledges
            window = client.h2.local_flow_control_window(stream_id)
            if window == 0:
                client.pump(lambda events: client.h2.local_flow_control_window(stream_id) > 0,
                            timeout=5)
                assert client.h2.local_flow_control_window(stream_id) > 0, 'stalled'
                continue
            size = min(window, 16384, len(data))
            client.h2.send_data(stream_id, data[:size], end_stream=size == len(data))
            client.flush()
            data = data[size:]
        client.pump(ended(stream_id))
        assert client.response(stream_id)[b':status'] == b'405'


def test_an_upload_over_64_kib_gets_413_and_a_reset(server: FlagsServer) -> None:
    with raw(server) as client:
        stream_id = client.get('/flags/br/br.gif', method='POST', end_stream=False)
        for _ in range(50):
            if any(isinstance(e, StreamReset) for e in client.events):
                break
            if window := min(client.h2.local_flow_control_window(stream_id), 16384):
                client.h2.send_data(stream_id, bytes(window))
                client.flush()
            client.pump(lambda events: False, timeout=0.1)
    assert client.response(stream_id)[b':status'] == b'413'
    assert [e.error_code for e in client.events if isinstance(e, StreamReset)] == [
        ErrorCodes.NO_ERROR]


# ------------------------------------------------- PING, GOAWAY, idle

def test_ping_is_answered(server: FlagsServer) -> None:
    with raw(server) as client:
        client.h2.ping(b'flags2!!')
        client.flush()
        events = client.pump(lambda events: any(isinstance(e, PingAckReceived)
                                                for e in events))
    assert [e.ping_data for e in events if isinstance(e, PingAckReceived)] == [b'flags2!!']


def test_the_clients_goaway_ends_its_streams_and_the_hold() -> None:
    with running_server('local', '--fault', 'stall', '--fault-rate', '1') as server, \
            raw(server) as client:
        client.get('/flags/br/br.gif')
        deadline = time.monotonic() + 5
        while server.stats()['in_flight'] != 1:
            assert time.monotonic() < deadline
        client.h2.close_connection()
        client.flush()
        client.sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while client.sock.recv(65536):  # the server closes the connection
                pass
        assert server.stats()['in_flight'] == 0


def test_an_idle_connection_gets_goaway_after_the_idle_timeout(server: FlagsServer) -> None:
    with raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        client.pump(ended(stream_id))
        start = time.monotonic()
        events = client.pump(terminated, timeout=IDLE_TIMEOUT * 3)
        waited = time.monotonic() - start
    assert goaway(events).error_code == ErrorCodes.NO_ERROR
    assert IDLE_TIMEOUT * 0.9 <= waited < IDLE_TIMEOUT * 2


# ------------------------------------------------------------------ faults

def fault_server(kind: str) -> contextlib.AbstractContextManager[FlagsServer]:
    return running_server('local', '--fault', kind, '--fault-rate', '1')


def test_fault_reset_is_rst_stream() -> None:
    with fault_server('reset') as server, raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        events = client.pump(ended(stream_id))
        assert [e.error_code for e in events if isinstance(e, StreamReset)] == [
            ErrorCodes.INTERNAL_ERROR]
        other = client.get('/stats')  # the connection serves on
        client.pump(ended(other))
        assert client.response(other)[b':status'] == b'200'


@pytest.mark.parametrize('kind', ['stall', 'trickle-headers'])
def test_fault_stall_never_answers_the_stream(kind: str) -> None:
    # trickle-headers has no HTTP/2 meaning (a header block goes in one piece): a stall
    with fault_server(kind) as server, raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        other = client.get('/workload')
        events = client.pump(ended(stream_id), timeout=1.5)
        assert not any(getattr(e, 'stream_id', None) == stream_id for e in events)
        assert client.response(other)[b':status'] == b'200'
        assert server.stats()['in_flight'] == 1
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        deadline = time.monotonic() + 2
        while server.stats()['in_flight']:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_fault_truncate_is_half_the_body_then_goaway() -> None:
    with fault_server('truncate') as server, raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        events = client.pump(terminated)
    assert client.response(stream_id)[b'content-length'] == str(len(flag_gif('BR'))).encode()
    assert client.body(stream_id) == flag_gif('BR')[:len(flag_gif('BR')) // 2]
    assert goaway(events).error_code == ErrorCodes.INTERNAL_ERROR
    assert not any(isinstance(e, StreamEnded) for e in events)


def test_fault_bad_length_ends_the_stream_short_of_its_length() -> None:
    # h2 on the client side refuses such a stream whole, so the frames are read here
    with fault_server('bad-length') as server, raw(server) as client:
        client.get('/flags/br/br.gif')
        client.sock.settimeout(1.5)
        data = b''
        with contextlib.suppress(TimeoutError):
            while chunk := client.sock.recv(65536):
                data += chunk
    frames = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9:9 + length])
        frames.append(frame)
        view = view[9 + length:]
    block = next(f for f in frames if isinstance(f, HeadersFrame)).data
    headers = dict(Decoder().decode(block, raw=True))
    body = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == 1]
    assert int(headers[b'content-length']) == len(flag_gif('BR')) + 1000
    assert b''.join(f.data for f in body) == flag_gif('BR')
    assert 'END_STREAM' in body[-1].flags


def test_fault_trickle_body_is_a_byte_a_frame() -> None:
    with fault_server('trickle-body') as server, raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        start = time.monotonic()
        client.pump(lambda events: len(client.body(stream_id)) >= 5)
        took = time.monotonic() - start
    sizes = {len(e.data or b'') for e in client.events if isinstance(e, DataReceived)}
    assert sizes == {1}
    assert took >= 0.4
    assert client.body(stream_id) == flag_gif('BR')[:len(client.body(stream_id))]


def test_fault_endless_chunks_is_a_body_without_length_or_end() -> None:
    with fault_server('endless-chunks') as server, raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        events = client.pump(ended(stream_id), timeout=1.5)
    assert b'content-length' not in client.response(stream_id)
    body = client.body(stream_id)
    assert body.startswith(b'GIF89a\x00') and len(body) >= 8
    assert not any(isinstance(e, StreamEnded) for e in events)


def test_fault_gzip_bomb_is_the_same_body() -> None:
    with fault_server('gzip-bomb') as server, raw(server) as client:
        stream_id = client.get('/flags/br/br.gif')
        client.pump(ended(stream_id), timeout=30)
    assert client.response(stream_id)[b'content-encoding'] == b'gzip'
    assert client.body(stream_id) == gzip_bomb()


@pytest.mark.parametrize(('kind', 'status'), [('500', 500), ('html', 200),
                                              ('redirect-loop', 302)])
def test_faults_that_are_answers_are_the_same_answers(kind: str, status: int) -> None:
    with fault_server(kind) as server, h2_client() as client:
        resp = client.get(f'{server.url}/br/br.gif')
        assert resp.status_code == status
        assert (resp.content, resp.headers.get('location')) == (
            http_get(f'{server.url}/br/br.gif')[1], resp.headers.get('location'))


# ------------------------------------------------------------------- stats

def test_connections_counts_http11_connections(server: FlagsServer) -> None:
    server.reset()
    for _ in range(3):
        assert http_get(f'{server.url}/br/br.gif')[0] == 200  # a connection each
    server.get_json('/stats')  # pages that are not flags count no connection
    assert server.stats()['connections'] == 3


def test_connections_counts_one_http2_connection_for_many_requests(
        server: FlagsServer) -> None:
    server.reset()
    with h2_client() as client:
        for cc in country_codes()[:30]:
            assert client.get(f'{server.url}/{cc.lower()}/{cc.lower()}.gif').status_code == 200
    stats = server.stats()
    assert (stats['connections'], stats['requests']) == (1, {'200': 30})


def test_each_run_sees_its_own_figures(server: FlagsServer) -> None:
    with h2_client(headers={'x-flags2-run': 'run1'}) as one, \
            h2_client(headers={'x-flags2-run': 'run2'}) as two:
        for cc in country_codes()[:10]:
            for client in (one, two, one):
                client.get(f'{server.url}/{cc.lower()}/{cc.lower()}.gif')
        server.reset()  # another run's reset: each run's figures stay its own
        two.get(f'{server.url}/zz/zz.gif')
    assert http_get(f'{server.url}/br/br.gif')[0] == 200  # no run: only the total
    run1 = server.get_json('/stats?run=run1')
    run2 = server.get_json('/stats?run=run2')
    assert (run1['requests'], run1['connections'], run1['in_flight']) == ({'200': 20}, 1, 0)
    assert (run2['requests'], run2['connections']) == ({'200': 10, '404': 1}, 1)
    assert run1['peak_in_flight'] == run2['peak_in_flight'] == 1
    assert set(run1) == set(server.stats()) == {
        'requests', 'in_flight', 'peak_in_flight', 'connections', 'since'}
    assert server.stats()['requests'] == {'200': 1, '404': 1}
    never = server.get_json('/stats?run=nosuchrun')
    assert {k: v for k, v in never.items() if k != 'since'} == {
        'requests': {}, 'in_flight': 0, 'peak_in_flight': 0, 'connections': 0}


@pytest.mark.parametrize('token', ['UPPER', 'a' * 33, '', 'a-b', 'é'])
def test_a_malformed_run_token_is_ignored(token: str, server: FlagsServer) -> None:
    with h2_client(headers={'x-flags2-run': token.encode()}) as client:
        assert client.get(f'{server.url}/br/br.gif').status_code == 200
    assert http_get(f'{root(server)}/stats?run={quote(token)}')[0] == 400
    near = ''.join(c for c in token.lower() if c.isascii() and c.isalnum())[:32]
    if near:  # not taken for a run of a token like it
        assert server.get_json(f'/stats?run={near}')['requests'] == {}


def test_only_the_last_64_runs_are_remembered(server: FlagsServer) -> None:
    with h2_client() as client:
        for i in range(70):
            client.get(f'{server.url}/br/br.gif', headers={'x-flags2-run': f'many{i}'})
    forgotten = [server.get_json(f'/stats?run=many{i}')['requests'] for i in range(70)]
    assert forgotten[:6] == [{}] * 6 and forgotten[6:] == [{'200': 1}] * 64


# ------------------------------------------------------------------ linger

def tied_server(*options: str) -> contextlib.AbstractContextManager[FlagsServer]:
    return running_server('local', *options, tied=True)


def test_linger_serves_on_until_quiet_then_exits() -> None:
    with tied_server('--linger', '1.5') as server:
        assert server.proc.stdin is not None
        server.proc.stdin.close()
        for _ in range(4):  # each request puts the exit off by another 1.5 s
            time.sleep(0.75)
            assert http_get(f'{server.url}/br/br.gif')[0] == 200
        closed = time.monotonic()
        server.proc.wait(timeout=1.5 * 2 + 2)
        waited = time.monotonic() - closed
        assert server.proc.returncode == 0
        assert 1.5 * 0.9 <= waited < 1.5 * 2 + 1


def test_without_linger_the_server_exits_when_stdin_closes() -> None:
    with tied_server() as server:
        assert server.proc.stdin is not None
        server.proc.stdin.close()
        server.proc.wait(timeout=2)
        assert server.proc.returncode == 0


def test_help_says_both_protocols_and_the_new_options(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'HTTP/1.1 and' in text and 'HTTP/2' in text and 'h2c' in text
    assert '--max-streams N' in text and '--linger SECONDS' in text


# ----------------------------------------------------------- hostile HTTP/2



@needs_proc
def test_rapid_reset_gets_enhance_your_calm_and_others_are_served() -> None:
    with running_server('delay', '--delay-min', '0.5', '--delay-max', '0.5',
                        tied=True) as server, raw(server) as client:
        before = vm_kib(server.proc.pid)
        client.pump(lambda events: False, timeout=0.3)
        with contextlib.suppress(OSError, ProtocolError):
            for _ in range(20_000):  # HEADERS, then RST_STREAM, in a loop
                stream_id = client.get('/flags/br/br.gif')
                client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
                client.flush()
        events = client.pump(terminated)
        assert goaway(events).error_code == ErrorCodes.ENHANCE_YOUR_CALM
        flag_elsewhere_within(server, PROMPT)
        assert vm_kib(server.proc.pid) - before < 16 * 1024
        assert server.stats()['in_flight'] == 0
        assert server.log_text().count('ENHANCE_YOUR_CALM') == 1


def test_a_settings_flood_gets_enhance_your_calm(server: FlagsServer) -> None:
    with raw(server) as client:
        with contextlib.suppress(OSError):
            for _ in range(5000):
                client.sock.sendall(b'\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x04\x00\x01\x00\x00')
        events = client.pump(terminated)
    assert goaway(events).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    flag_elsewhere_within(server, PROMPT)


def continuation_flood(stream_id: int, frames: int) -> bytes:
    """A HEADERS frame without END_HEADERS, then CONTINUATION frames of 16 KiB of
    literal headers (never indexed, 'x-a: aaa…') that never end the block."""
    field = b'\x10\x03x-a\x7f\x81\x7f' + b'a' * 16000  # 0x7f 0x81 0x7f: a length of 16_384
    field = field[:16384]
    headers = b'\x00\x00\x00\x01\x00' + stream_id.to_bytes(4, 'big')  # empty, no END_HEADERS
    frame = len(field).to_bytes(3, 'big') + b'\x09\x00' + stream_id.to_bytes(4, 'big') + field
    return headers + frame * frames


@needs_proc
def test_a_continuation_flood_is_cut_off(server: FlagsServer) -> None:
    before = vm_kib(server.proc.pid)
    with raw(server) as client:
        with contextlib.suppress(OSError):
            client.sock.sendall(continuation_flood(1, 1000))  # 16 MiB of one header block
        events = client.pump(terminated)
    assert goaway(events).error_code == ErrorCodes.PROTOCOL_ERROR  # past 64 CONTINUATIONs
    flag_elsewhere_within(server, PROMPT)
    assert vm_kib(server.proc.pid) - before < 16 * 1024


def test_a_huge_header_block_is_refused(server: FlagsServer) -> None:
    with raw(server, validate=False) as client:
        client.pump(lambda events: False, timeout=0.3)
        client.get('/flags/br/br.gif', headers=[(f'x-{i}', 'a' * 1000) for i in range(100)])
        events = client.pump(terminated)
    assert goaway(events).error_code in (ErrorCodes.ENHANCE_YOUR_CALM,
                                         ErrorCodes.PROTOCOL_ERROR)
    flag_elsewhere_within(server, PROMPT)


@pytest.mark.parametrize(('after', 'code'), [
    # read as a frame header: 4.6 MB long, over the 16 KiB allowed
    (b'GET / HTTP/1.1\r\n\r\n', ErrorCodes.FRAME_SIZE_ERROR),
    # a WINDOW_UPDATE where the client's SETTINGS must come first
    (b'\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x01\x00', ErrorCodes.PROTOCOL_ERROR),
    # a SETTINGS frame of 5 bytes: no whole number of settings
    (b'\x00\x00\x05\x04\x00\x00\x00\x00\x00' + bytes(5), ErrorCodes.FRAME_SIZE_ERROR),
], ids=['garbage', 'not SETTINGS first', 'bad SETTINGS'])
def test_garbage_after_the_preface_is_goaway_and_one_log_line(
        after: bytes, code: ErrorCodes, server: FlagsServer) -> None:
    log_before = server.log_text()
    with socket.create_connection(('127.0.0.1', server.port), timeout=5) as sock:
        sock.sendall(PREFACE + after)
        data = b''
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    client = H2Connection(config=H2Configuration(client_side=True))
    client.initiate_connection()
    events = client.receive_data(data)
    assert [e.error_code for e in events if isinstance(e, ConnectionTerminated)] == [code]
    new_lines = server.log_text()[len(log_before):].splitlines()
    assert len(new_lines) == 1 and code.name in new_lines[0], new_lines
    flag_elsewhere_within(server, PROMPT)


@needs_proc
def test_a_frame_header_saying_16_mib_is_refused_before_its_body(server: FlagsServer) -> None:
    before = vm_kib(server.proc.pid)
    clients = [RawH2(server.port) for _ in range(20)]
    try:
        for client in clients:
            client.pump(lambda events: False, timeout=0.1)
            with contextlib.suppress(OSError):  # DATA on stream 1, 16 MiB - 1 long
                client.sock.sendall(b'\xff\xff\xff\x00\x00\x00\x00\x00\x01'
                                    + bytes(1024 * 1024))
        for client in clients:
            assert goaway(client.pump(terminated)).error_code == ErrorCodes.FRAME_SIZE_ERROR
    finally:
        for client in clients:
            client.close()
    assert vm_kib(server.proc.pid) - before < 16 * 1024  # 20 MiB sent, none held


def test_stats_json_is_one_shape(server: FlagsServer) -> None:
    text = http_get(f'{root(server)}/stats?run=abc')[1]
    assert set(json.loads(text)) == {'requests', 'in_flight', 'peak_in_flight',
                                     'connections', 'since'}
    assert SERVER_SCRIPT.exists()
