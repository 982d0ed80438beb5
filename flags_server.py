"""The bundled flag server: LOCAL, DELAY and ERROR on one asyncio event loop.

It replaces the book's flags.zip + ``python -m http.server`` + slow_server.py
trio. Every flag is drawn here, so nothing is read from disk, and every delay
and error decision is derived from a seed and the country code, so every run
of every variant sees exactly the same workload.

This file is the workload and the routes. The HTTP/1.1 under them is written
by hand in flags2/wire.py rather than taken from an ASGI server: the fault
modes the scripts are tested against (a reset before the response, a body cut
short, a lying Content-Length) need control of the bytes on the wire, which
an ASGI server exists to hide.

Besides each flag's GIF, it serves each country's metadata.json, as the
book's flags.zip does: flags3_asyncio.py, the book's next listing, asks for
every country's name along with its flag. A metadata request is a flag
request in all but its body: it waits the code's delay, counts in /stats,
and gets faults, drawn apart from the flag's.

Run ``python flags_server.py`` to serve all three modes on ports 8000-8002,
or ``python flags_server.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import io
import json
import random
import re
import string
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from flags2.codes import countries, country_codes
from flags2.h2wire import H2cConnections, Session, StreamRequest
from flags2.wire import (
    BACKLOG,
    FD_HEADROOM,
    WIRE_FAULTS,
    Activity,
    Limits,
    Response,
    default_max_connections,
    fd_limit,
    gzip_bomb,
    quiet_accept_errors,
    stop_on_signals,
    stop_when_stdin_closes,
    text_response,
)

MODES = ('local', 'delay', 'error')
DEFAULT_PORTS = {'local': 8000, 'delay': 8001, 'error': 8002}
DEFAULT_SEED = 'flags2'
DEFAULT_DELAY_MIN = 0.2  # seconds; the mean delay is 0.5 s and the maximum
DEFAULT_DELAY_MAX = 0.8  # stays far below the scripts' 3.1 s timeout
DEFAULT_ERROR_RATE = 0.25
# The two requests of a code, the book's URLs: /flags/br/br.gif and
# /flags/br/metadata.json (what flags3_asyncio.py asks for each name).
FLAG_PATH = re.compile(r'/flags/([a-z]{2})/\1\.gif')
METADATA_PATH = re.compile(r'/flags/([a-z]{2})/metadata\.json')
REQUEST_KINDS = {'flag': FLAG_PATH, 'metadata': METADATA_PATH}
OVERSIZE_BYTES = 1024 * 1024 + 64 * 1024  # past the scripts' 1 MiB cap
ALLOWED_METHODS = ('GET', 'HEAD')
# RFC 9110 9.3 and RFC 5789: a method known but not allowed here is a 405,
# which must say what is allowed; any other is a 501 (RFC 9110 9.1).
KNOWN_METHODS = frozenset({'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS',
                           'TRACE', 'PATCH'})
# A run names itself in a header of each request, so /stats?run=TOKEN can
# give it figures of its own, whatever other runs do meanwhile.
RUN_HEADER = 'x-flags2-run'
RUN_TOKEN = re.compile(r'[0-9a-z]{1,32}')

# What --fault can inject, with the words --help shows for each. ERROR mode
# answers 418 unless told otherwise; any mode takes a --fault.
FAULTS = {
    '418': "answer 418 I'm a Teapot",
    '500': 'answer 500 Internal Server Error',
    '503': 'answer 503 Service Unavailable',
    'reset': 'reset the connection (TCP RST) instead of answering',
    'truncate': 'send half the flag, then close the connection',
    'bad-length': 'send the whole flag with a Content-Length 1000 bytes too large, then close',
    'stall': 'send nothing until the client gives up and closes the connection',
    'trickle-headers': 'send a response head that never ends, one byte every 0.1 s',
    'trickle-body': 'send the head, then the flag one byte every 0.1 s',
    'endless-chunks': 'send a chunked body that never ends, one byte every 0.1 s',
    'gzip-bomb': 'answer 200 with under 1 MiB of gzip that inflates to 1000 MiB',
    'html': 'answer 200 with an HTML page instead of a GIF (or JSON)',
    'oversize': 'answer 200 with an image/gif (or JSON) body of 1 MiB + 64 KiB',
    'redirect-loop': 'answer 302 redirecting to the same URL, every time',
}


# ------------------------------------------------------------- the workload

@dataclass(frozen=True)
class Workload:
    """What a mode does with each code, the same on every run for a given seed."""

    mode: str
    seed: str = DEFAULT_SEED
    delay_min: float = DEFAULT_DELAY_MIN
    delay_max: float = DEFAULT_DELAY_MAX
    error_rate: float = DEFAULT_ERROR_RATE
    fault_kind: str | None = None  # one of FAULTS; ERROR mode defaults to '418'

    def delay(self, cc: str) -> float:
        """Seconds to wait before answering for ``cc`` (0 in LOCAL mode)."""
        if self.mode == 'local':
            return 0.0
        rng = random.Random(f'{self.seed}:delay:{cc.upper()}')
        return rng.uniform(self.delay_min, self.delay_max)

    def fault(self, cc: str, kind: str = 'flag') -> str | None:
        """The fault injected for ``cc``'s request of ``kind`` (a REQUEST_KINDS key), if any.

        The one place that decides. A metadata request draws from a key of its
        own, so a flag can arrive while its metadata fails, and the other way
        round; the flag's key is the one it always had.
        """
        injected = self.fault_kind or ('418' if self.mode == 'error' else None)
        if injected is None:
            return None
        which = '' if kind == 'flag' else f'{kind}:'
        rng = random.Random(f'{self.seed}:error:{which}{cc.upper()}')
        return injected if rng.random() < self.error_rate else None

    def fails(self, cc: str, kind: str = 'flag') -> bool:
        """True when ``cc``'s request of ``kind`` gets a fault (418 in ERROR mode)."""
        return self.fault(cc, kind) is not None


# --------------------------------------------------------------- the routes

class FlagApp:
    """Maps one request to one response for one mode, keeping the stats."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.codes = frozenset(country_codes())
        self.stats = Stats()
        self.log = RequestLog()

    @functools.cached_property
    def workload_json(self) -> bytes:
        """GET /workload: the same bytes for as long as the server runs."""
        return json.dumps(workload_info(self.workload)).encode()

    async def respond(self, method: str, target: str, *, headers: Mapping[str, str],
                      connection: int) -> Response:
        path, _, query = target.partition('?')
        if method not in ALLOWED_METHODS:
            if method not in KNOWN_METHODS:
                return text_response(HTTPStatus.NOT_IMPLEMENTED)
            refused = text_response(HTTPStatus.METHOD_NOT_ALLOWED)
            refused.headers = (('Allow', ', '.join(ALLOWED_METHODS)),)
            return refused
        if path == '/stats':
            runs = parse_qs(query).get('run')
            if runs is None:
                return json_response(self.stats.as_dict())
            if not (len(runs) == 1 and RUN_TOKEN.fullmatch(runs[0])):
                return text_response(HTTPStatus.BAD_REQUEST)
            return json_response(self.stats.run_dict(runs[0]))
        if path == '/stats/reset':
            self.stats.reset()
            self.log.reset()
            return json_response(self.stats.as_dict())
        if path == '/workload':
            return Response(HTTPStatus.OK, self.workload_json, 'application/json')
        if path == '/stats/requests':
            return Response(HTTPStatus.OK, await self.log.json_body(), 'application/json')
        if not path.startswith('/flags/'):
            return text_response(HTTPStatus.NOT_FOUND)
        run = headers.get(RUN_HEADER, '')
        run_token = run if RUN_TOKEN.fullmatch(run) else None  # a malformed one is ignored
        # released by HeldConnections
        self.stats.hold(asyncio.current_task(), connection, run_token)
        start = time.monotonic()
        response = await self.flag(path)
        self.stats.count(response.status, run_token)
        self.log.add(start, path, response.status)
        return response

    async def flag(self, path: str) -> Response:
        """A flag or its metadata: same delay, same 404, faults drawn for each."""
        request, cc = parse_flag_path(path)
        if cc and (delay := self.workload.delay(cc)):
            await asyncio.sleep(delay)
        if cc not in self.codes:
            return text_response(HTTPStatus.NOT_FOUND)
        if request == 'metadata':
            answer = Response(HTTPStatus.OK, metadata_json(cc), 'application/json')
        else:
            answer = Response(HTTPStatus.OK, flag_gif(cc), 'image/gif')
        if fault := self.workload.fault(cc, request):
            return fault_response(fault, path, answer)
        return answer


def parse_flag_path(path: str) -> tuple[str, str]:
    """(request kind, upper-case code) of a flag or metadata path; ('', '') otherwise."""
    for request, pattern in REQUEST_KINDS.items():
        if match := pattern.fullmatch(path):
            return request, match.group(1).upper()
    return '', ''


def fault_response(kind: str, path: str, answer: Response) -> Response:
    """What the client gets for each fault kind, instead of ``answer`` (a GIF or JSON)."""
    if kind.isdigit():
        return text_response(HTTPStatus(int(kind)))
    if kind == 'html':
        page = b'<!DOCTYPE html>\n<html><body><h1>Flags are resting</h1></body></html>\n'
        return Response(HTTPStatus.OK, page, 'text/html; charset=utf-8')
    if kind == 'oversize':
        json_body = answer.content_type == 'application/json'
        return Response(HTTPStatus.OK, oversize_json() if json_body else oversize_gif(),
                        answer.content_type)
    if kind == 'redirect-loop':
        return Response(HTTPStatus.FOUND, b'', location=path)
    assert kind in WIRE_FAULTS, kind
    status = 0 if kind in ('reset', 'stall', 'trickle-headers') else HTTPStatus.OK
    return Response(status, answer.body, answer.content_type, wire_fault=kind)


@functools.cache
def oversize_gif() -> bytes:
    """A GIF header padded past the cap: only its size is wrong."""
    return b'GIF89a' + bytes(OVERSIZE_BYTES - 6)


@functools.cache
def oversize_json() -> bytes:
    """A JSON object padded past the cap: only its size is wrong."""
    head, tail = b'{"padding": "', b'"}'
    return head + b' ' * (OVERSIZE_BYTES - len(head) - len(tail)) + tail


@functools.cache
def metadata_json(cc: str) -> bytes:
    """The book's metadata.json of ``cc``, in real UTF-8 ("Côte d'Ivoire"), not \\u escapes."""
    return json.dumps(dict(countries()[cc]), ensure_ascii=False).encode('utf-8')


def json_response(data: dict[str, Any]) -> Response:
    return Response(HTTPStatus.OK, json.dumps(data).encode(), 'application/json')


# ------------------------------------------------- the pages a run can read
#
# GET /stats, and /stats/reset, which starts the count and the log over.
# GET /workload: the mode's parameters and the delay of every two-letter code,
# so flags2_compare.py can compute the best possible time of a run.
# GET /stats/requests: start, end, code, status and kind ('flag', 'metadata',
# or null for another /flags/ path) of each flag request since the last
# /stats/reset, for flags2_compare.py's timeline chart.

@dataclass
class Figures:
    """What /stats shows, for the whole server or for one run."""

    by_status: Counter[int] = field(default_factory=Counter)
    held: set[object] = field(default_factory=set)  # one token per request held
    peak_in_flight: int = 0
    connections: set[int] = field(default_factory=set)  # ids of those that carried requests
    started: float = field(default_factory=time.time)

    @property
    def in_flight(self) -> int:
        return len(self.held)

    def hold(self, token: object, connection: int) -> None:
        self.held.add(token)
        self.peak_in_flight = max(self.peak_in_flight, len(self.held))
        if len(self.connections) < MAX_CONNECTION_IDS:
            self.connections.add(connection)

    def release(self, token: object) -> None:
        self.held.discard(token)

    def as_dict(self) -> dict[str, Any]:
        return {
            'requests': {str(int(k)): v for k, v in sorted(self.by_status.items())},
            'in_flight': self.in_flight,
            'peak_in_flight': self.peak_in_flight,
            'connections': len(self.connections),
            'since': self.started,
        }

    def reset(self) -> None:
        self.by_status.clear()
        self.peak_in_flight = self.in_flight
        self.connections.clear()
        self.started = time.time()


# Bounds on what /stats remembers: a run's figures beyond the most recent
# MAX_RUNS are forgotten, and a figure counts at most MAX_CONNECTION_IDS
# connections (a run has one per concurrent request, a few hundred at most).
MAX_RUNS = 64
MAX_CONNECTION_IDS = 100_000


class Stats:
    """Counters behind GET /stats, so a run can show real concurrency.

    A flag request (a metadata request counts as one) is *in flight* from
    the moment its request line has been read until the server has written
    the whole answer, or has noticed that the client closed the connection,
    whichever comes first. So a request whose client gave up (a timeout,
    Ctrl-C) still counts while the server sleeps its delay, and a stalled one
    counts until the client hangs up: ``peak_in_flight`` is the most requests
    the server held at once since the last reset, abandoned ones included.

    Each figure is kept for the whole server (since the last reset) and for
    each run that named itself (since its first request): two runs at once
    each see their own peak, whoever resets.
    """

    def __init__(self) -> None:
        self.total = Figures()
        self.runs: OrderedDict[str, Figures] = OrderedDict()
        self.held_runs: dict[object, Figures] = {}  # the run of each request held

    @property
    def in_flight(self) -> int:
        return self.total.in_flight

    @property
    def peak_in_flight(self) -> int:
        return self.total.peak_in_flight

    def hold(self, token: object, connection: int, run: str | None = None) -> None:
        self.total.hold(token, connection)
        if run is not None:
            figures = self.runs.get(run)
            if figures is None:
                figures = self.runs[run] = Figures()
                if len(self.runs) > MAX_RUNS:
                    self.runs.popitem(last=False)
            figures.hold(token, connection)
            self.held_runs[token] = figures

    def release(self, token: object) -> None:
        self.total.release(token)
        if (figures := self.held_runs.pop(token, None)) is not None:
            figures.release(token)

    def count(self, status: int, run: str | None = None) -> None:
        self.total.by_status[status] += 1
        if run is not None and (figures := self.runs.get(run)) is not None:
            figures.by_status[status] += 1

    def as_dict(self) -> dict[str, Any]:
        return self.total.as_dict()

    def run_dict(self, run: str) -> dict[str, Any]:
        """/stats?run=RUN: that run's figures; zeros for a run never seen (or forgotten)."""
        figures = self.runs.get(run)
        return (figures or Figures()).as_dict()

    def reset(self) -> None:
        """/stats/reset: the server's figures start over; each run's stay its own."""
        self.total.reset()


class HeldConnections(H2cConnections):
    """The wire, releasing each flag request's hold only when its exchange is over.

    ``serve_one`` (HTTP/1.1) and ``serve_stream`` (HTTP/2) return (or raise)
    once the answer is written, the fault is on the wire, a stall has seen
    the client close, or the connection broke; the app took the hold when it
    began on the flag.
    """

    def __init__(self, app: FlagApp, limits: Limits | None = None) -> None:
        super().__init__(app, limits)
        self.stats = app.stats

    async def serve_one(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, connection: int) -> bool:
        try:
            return await super().serve_one(reader, writer, connection)
        finally:
            self.stats.release(asyncio.current_task())

    async def serve_stream(self, session: Session, stream_id: int,
                           request: StreamRequest) -> None:
        try:
            await super().serve_stream(session, stream_id, request)
        finally:
            self.stats.release(asyncio.current_task())


class RequestLog:
    """A bounded record of the flag requests of one run.

    The hot path appends one tuple; everything else happens when the record is
    read. Past MAX_ENTRIES requests only the count of dropped ones grows.

    Reading it must not take the event loop from everyone else: 400 clients
    asking at once for a log of 20,000 requests (1.6 MB of JSON) used to make
    a flag request wait a minute. So each entry is encoded once, in batches
    with a turn of the loop between them, and the whole answer is kept until
    the log changes: every reader of the same log shares the same bytes.
    """

    MAX_ENTRIES = 20_000
    ENCODE_BATCH = 500  # entries encoded between two turns of the event loop

    def __init__(self) -> None:
        self.entries: list[tuple[float, float, str, int]] = []
        self.dropped = 0
        self.origin = time.monotonic()
        self.encoded: list[bytes] = []  # the JSON of entries[:len(encoded)]
        self.body: tuple[tuple[int, int], bytes] | None = None  # (its state, the JSON)

    def add(self, start: float, path: str, status: int) -> None:
        if len(self.entries) < self.MAX_ENTRIES:
            self.entries.append((start, time.monotonic(), path, status))
        else:
            self.dropped += 1

    def reset(self) -> None:
        self.entries = []
        self.dropped = 0
        self.origin = time.monotonic()
        self.encoded = []
        self.body = None

    def entry_json(self, entry: tuple[float, float, str, int]) -> bytes:
        """One request, times in seconds since the last reset."""
        start, end, path, status = entry
        request, cc = parse_flag_path(path)
        return json.dumps({
            'start': round(start - self.origin, 6),
            'end': round(end - self.origin, 6),
            'code': cc or path,
            'status': status,
            'kind': request or None,
        }).encode()

    async def json_body(self) -> bytes:
        """GET /stats/requests: ``{"requests": [...], "dropped": N}``."""
        while len(self.encoded) < len(self.entries):  # a reset may come at any await
            done = len(self.encoded)
            self.encoded.extend(map(self.entry_json,
                                    self.entries[done:done + self.ENCODE_BATCH]))
            await asyncio.sleep(0)
        state = (len(self.encoded), self.dropped)
        if self.body is None or self.body[0] != state:
            self.body = state, (b'{"requests": [' + b', '.join(self.encoded)
                                + b'], "dropped": %d}' % self.dropped)
        return self.body[1]


def workload_info(workload: Workload) -> dict[str, Any]:
    letters = string.ascii_uppercase
    return {
        'mode': workload.mode,
        'seed': workload.seed,
        'delay_min': workload.delay_min,
        'delay_max': workload.delay_max,
        'error_rate': workload.error_rate,
        'fault': workload.fault_kind,
        'delays': {a + b: workload.delay(a + b) for a in letters for b in letters},
    }


# ---------------------------------------------------------------- the flags

PALETTE = [
    (206, 17, 38), (0, 56, 147), (0, 122, 61), (252, 209, 22),
    (255, 255, 255), (0, 0, 0), (255, 130, 0), (0, 156, 222),
    (128, 0, 64), (94, 53, 177), (0, 100, 100), (160, 160, 160),
]


@functools.cache
def flag_gif(cc: str) -> bytes:
    """Draw the flag of ``cc``: colours and layout from a hash, the code on top."""
    from PIL import Image, ImageDraw, ImageFont  # only the server needs Pillow

    digest = hashlib.sha256(cc.encode()).digest()
    colours = []
    for byte in digest[1:]:
        colour = PALETTE[byte % len(PALETTE)]
        if colour not in colours:
            colours.append(colour)
        if len(colours) == 3:
            break
    a, b, c = colours
    width, height = 120, 80
    img = Image.new('RGB', (width, height), a)
    draw = ImageDraw.Draw(img)
    layout = digest[0] % 4
    if layout == 0:  # horizontal tricolour
        draw.rectangle((0, height // 3, width, 2 * height // 3), fill=b)
        draw.rectangle((0, 2 * height // 3, width, height), fill=c)
    elif layout == 1:  # vertical tricolour
        draw.rectangle((width // 3, 0, 2 * width // 3, height), fill=b)
        draw.rectangle((2 * width // 3, 0, width, height), fill=c)
    elif layout == 2:  # bicolour with a disc
        draw.rectangle((0, height // 2, width, height), fill=b)
        draw.ellipse((35, 15, 85, 65), fill=c)
    else:  # Nordic cross
        draw.rectangle((30, 0, 50, height), fill=b)
        draw.rectangle((0, 30, width, 50), fill=b)
        draw.rectangle((36, 0, 44, height), fill=c)
        draw.rectangle((0, 36, width, 44), fill=c)
    font = ImageFont.load_default(size=36)
    draw.text((width / 2, height / 2), cc, font=font, anchor='mm',
              fill='white', stroke_width=3, stroke_fill='black')
    buffer = io.BytesIO()
    img.convert('P', palette=Image.Palette.ADAPTIVE, colors=32).save(buffer, 'GIF')
    return buffer.getvalue()


# ------------------------------------------------------------------ serving

@dataclass
class ServerSpec:
    workload: Workload
    port: int


async def serve(specs: list[ServerSpec], bind: str, ready_message: bool = True,
                stop: asyncio.Event | None = None, limits: Limits | None = None,
                stdin_closed: asyncio.Event | None = None, linger: float = 0.0) -> None:
    """Serve every spec until ``stop`` is set (SIGINT and SIGTERM set it), or until
    ``stdin_closed`` is set and no request has come or been in flight for ``linger``
    seconds."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    quiet_accept_errors(asyncio.get_running_loop())
    pools: list[HeldConnections] = []
    watcher = None
    try:
        for spec in specs:
            pool = HeldConnections(FlagApp(spec.workload), limits)
            pools.append(pool)
            port = await pool.listen(bind, spec.port)
            host = f'[{bind}]' if ':' in bind else bind
            label = spec.workload.mode.upper()
            print(f'{label} mode serving http://{host}:{port}/flags', flush=True)
        if ready_message:
            print('Ready. Press Ctrl-C to stop.', flush=True)
        if stdin_closed is not None:
            watcher = asyncio.create_task(
                stop_when_quiet(stdin_closed, [p.activity for p in pools], linger, stop))
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        for held in pools:
            await held.close()


async def stop_when_quiet(stdin_closed: asyncio.Event, activities: list[Activity],
                          linger: float, stop: asyncio.Event) -> None:
    """Once stdin has closed, set ``stop`` when every pool has been quiet for ``linger``.

    The run that started us has ended; another may be about to start, and can
    find us still serving if it comes within ``linger`` seconds.
    """
    await stdin_closed.wait()
    while (quiet := min(activity.quiet_for() for activity in activities)) < linger:
        await asyncio.sleep(linger - quiet if quiet else min(linger, 0.1))
    stop.set()


# ---------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Serve generated flag GIFs for the flags2 scripts '
                    '(LOCAL, DELAY and ERROR modes). Each port speaks HTTP/1.1 and, '
                    'to a client that opens with the HTTP/2 preface, HTTP/2 '
                    'in clear text (h2c with prior knowledge).',
        epilog='fault kinds for --fault:\n' + '\n'.join(
            f'  {kind:16}{text}' for kind, text in FAULTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--mode', choices=('all', *MODES), default='all',
                        help='which server to run (default: all three, '
                             'on ports 8000, 8001 and 8002)')
    parser.add_argument('--port', type=int, default=None,
                        help='port for a single mode (0 picks a free one); '
                             'with --mode all, the first of three ports')
    parser.add_argument('--bind', default='localhost',
                        help='address to listen on (default: localhost, '
                             'meaning 127.0.0.1 and ::1)')
    parser.add_argument('--seed', default=DEFAULT_SEED,
                        help='seed for delays and errors (default: %(default)s)')
    parser.add_argument('--delay-min', type=float, default=DEFAULT_DELAY_MIN,
                        metavar='SECONDS', help='shortest delay (default: %(default)s)')
    parser.add_argument('--delay-max', type=float, default=DEFAULT_DELAY_MAX,
                        metavar='SECONDS', help='longest delay (default: %(default)s)')
    parser.add_argument('--fault', choices=FAULTS, metavar='KIND',
                        help='fault to inject on a seeded share of flag requests, in any '
                             "mode (ERROR mode's default: 418); kinds below")
    parser.add_argument('--fault-rate', '--error-rate', dest='error_rate', type=float,
                        default=DEFAULT_ERROR_RATE, metavar='SHARE',
                        help='share of flag requests that get the fault, chosen by seed '
                             'and code (default: %(default)s)')
    parser.add_argument('--idle-timeout', type=float, default=Limits.idle_timeout,
                        metavar='SECONDS',
                        help='close a connection that sends no request for this long '
                             '(default: %(default)s)')
    parser.add_argument('--max-connections', type=int, default=None, metavar='N',
                        help='connections open at once per mode; more are turned away '
                             'with 503 (default: 1024, or fewer to stay below the '
                             'file-handle limit)')
    parser.add_argument('--max-streams', type=int, default=Limits.max_streams, metavar='N',
                        help='HTTP/2 requests (streams) open at once on one connection: '
                             'SETTINGS_MAX_CONCURRENT_STREAMS (default: %(default)s)')
    parser.add_argument('--exit-with-stdin', action='store_true',
                        help=argparse.SUPPRESS)  # used by the scripts' auto-start
    parser.add_argument('--linger', type=float, default=0.0, metavar='SECONDS',
                        help='with --exit-with-stdin (the auto-started server): once stdin '
                             'closes, serve on until no request has come or been in flight '
                             'for this long, then exit (default: 0, exit at once)')
    return parser


def specs_from_args(args: argparse.Namespace) -> list[ServerSpec]:
    modes = MODES if args.mode == 'all' else (args.mode,)
    specs = []
    for offset, mode in enumerate(modes):
        if args.port is None:
            port = DEFAULT_PORTS[mode]
        else:
            port = args.port + offset if args.port else 0
        workload = Workload(mode, args.seed, args.delay_min, args.delay_max,
                            args.error_rate, args.fault)
        specs.append(ServerSpec(workload, port))
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.delay_min <= args.delay_max:
        parser.error('need 0 <= --delay-min <= --delay-max')
    if not 0 <= args.error_rate <= 1:
        parser.error('--fault-rate is a share between 0 and 1')
    if not 0 < args.idle_timeout <= 24 * 60 * 60:
        parser.error('--idle-timeout is a number of seconds above 0, at most a day')
    if args.max_connections is not None and args.max_connections < 1:
        parser.error('--max-connections is at least 1')
    if not 1 <= args.max_streams <= 2 ** 31 - 1:
        parser.error('--max-streams is at least 1')
    if not 0 <= args.linger <= 24 * 60 * 60:
        parser.error('--linger is a number of seconds from 0 to a day')
    specs = specs_from_args(args)
    # Room for the connections, plus a backlog's worth accepted in one go
    # before any can be turned away.
    fd_limit(len(specs) * (args.max_connections or 1024) + BACKLOG + FD_HEADROOM)
    limits = Limits(args.idle_timeout,
                    args.max_connections or default_max_connections(len(specs)),
                    args.max_streams)
    for cc in country_codes():  # draw every flag (and its metadata) before saying "ready"
        flag_gif(cc)
        metadata_json(cc)
    if args.fault == 'gzip-bomb':
        gzip_bomb()  # a third of a second: not inside the first request's time limit

    async def run() -> None:
        stdin_closed = None
        if args.exit_with_stdin:
            stdin_closed = asyncio.Event()
            stop_when_stdin_closes(asyncio.get_running_loop(), stdin_closed)
        await serve(specs, args.bind, limits=limits, stdin_closed=stdin_closed,
                    linger=args.linger)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f'flags_server: cannot listen: {exc}', file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == '__main__':
    cli()
