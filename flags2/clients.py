"""The one HTTP client of a run, with room for exactly concur_req connections.

The semaphore (asyncio) or the executor (threadpool) must be the only
throttle: httpx's default pool of 100 connections silently capped ``-m 1000``
in the book's asyncio script. So each run has one client whose connections
add up to concur_req.

They are spread over small clients ("shards") of SHARD_SIZE connections (one
connection each for the sync variants, whose deadlines must know the socket
of a request: see ShardedTransport):
httpcore2's pool still walks every connection of a pool, and polls each idle
socket, whenever a request starts or ends, so one pool of 676 connections
costs time quadratic in its size (docs/performance.md has the figures, and
``python benchmarks/plumbing.py`` measures them again). That can go once
httpx2 ships incremental pool bookkeeping (pydantic/httpx2 pull request
#1169): when the benchmark shows one plain pool within 10% of the shards,
``make_client`` becomes ``httpx2.Client(limits=..., timeout=...)``.

Each shard is a whole ``httpx2.Client``, built with httpx2's defaults, so a
run honours the environment as httpx2 does: HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY and NO_PROXY, SSL_CERT_FILE and SSL_CERT_DIR.

The transports also hold the run's guarantees, so the variants can read a
response as the book does (``resp.content``):

- each request is bounded as a whole: httpx2's timeout bounds each read, so a
  server trickling a byte at a time never times out. A request (with its
  redirects and its body) ends by ``timeout`` seconds after it started, as
  an ``httpx2.ReadTimeout``;
- every URL (a redirect's too) passes the checks of a base URL, before it
  is sent (``check_url``);
- every body (a redirect's too) passes ``failures.BodyCheck``: at most 1 MiB
  once decoded, a GIF where a flag was asked; the transport inflates content
  codings itself, a step at a time, and hands httpx2 the decoded bytes;
- a stopping run cuts requests short: in the main thread at once (the
  run's signal handler raises), in worker threads by shutting their sockets
  down; either way the request raises ``runs.RunStopped``;
- a kept-alive connection carries nothing from one answer to the next: one
  that holds bytes past a complete answer is closed, and a GET that meets
  one the server closed while it was idle goes again on a new connection.

With ``--http2`` (``Run.http2``) each shard is one HTTP/2 connection
carrying up to 100 requests at once (httpcore2's cap), as few as the
requests in flight need: one where the server's own limit of streams is
lower (``h2settings``). The sync variants' requests go through the async
transport, on an event loop of its own (``LoopTransport``); a connection
that breaks is dropped, and the GETs it carried go again on a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import socket
import ssl
import threading
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx2

from flags2.failures import BadFlagError, BodyCheck, closed_unanswered, stream_reset
from flags2.h2settings import CLIENT_STREAMS
from flags2.options import url_problem
from flags2.runs import RUN_HEADER, Run, RunStopped, current_run

if TYPE_CHECKING:  # at run time loaded with the HTTP stack, once a run starts
    import httpcore2

SHARD_SIZE = 4
# A GIF gains nothing from compression; asking for none keeps a server from
# sending a compressed body; one that does anyway is inflated here, a step at
# a time, within the cap (Body).
HEADERS = {'Accept-Encoding': 'identity'}
# The request extension holding when a request must end: redirects share
# their first request's extensions, so every hop of a flag has one deadline.
DEADLINE = 'flags2.deadline'
# Set once a request went again after its HTTP/2 connection broke: once only.
RETRIED = 'flags2.retried'


def make_client(concur_req: int) -> httpx2.Client:
    """The run's client for ``concur_req`` threads (1 for the sequential script)."""
    run = current_run()
    transport = LoopTransport(concur_req, run) if run.http2 else ShardedTransport(concur_req, run)
    return httpx2.Client(transport=transport, timeout=run.timeout,
                         headers={**HEADERS, RUN_HEADER: run.run_id})


def make_async_client(concur_req: int) -> httpx2.AsyncClient:
    """The run's AsyncClient for ``concur_req`` requests at once; call it in the
    supervisor coroutine: the run attaches to its event loop."""
    run = current_run()
    run.attach_loop(asyncio.get_running_loop())
    return httpx2.AsyncClient(transport=AsyncShardedTransport(concur_req, run),
                              timeout=run.timeout, headers={**HEADERS, RUN_HEADER: run.run_id})


# ------------------------------------------------------------ the shards

def shard_sizes(concur_req: int, size: int = SHARD_SIZE) -> list[int]:
    """Split ``concur_req`` connections into shards of at most ``size``, evenly."""
    count = -(-concur_req // size)
    return [concur_req // count + (i < concur_req % count) for i in range(count)]


def shard_limits(size: int) -> httpx2.Limits:
    return httpx2.Limits(max_connections=size, max_keepalive_connections=size)


def http2_sizes(concur_req: int, run: Run) -> list[int]:
    """Requests per HTTP/2 connection: a second connection only for the client's
    own cap, never past the server's (its throttle holds the rest back)."""
    if run.server_streams < CLIENT_STREAMS:
        return [concur_req]
    return shard_sizes(concur_req, CLIENT_STREAMS)


class ShardLoad:
    """Which shard takes the next request; thread-safe for the threadpool.

    ``free`` holds one entry per idle connection, the most recently freed
    last, so ``take`` is O(1) and a fast server is served by a few warm
    connections. The caller never has more than concur_req requests open,
    so a free connection always exists.
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


Shard = TypeVar('Shard', httpx2.Client, httpx2.AsyncClient)


class Shards(Generic[Shard]):
    """The small clients of one transport, each built when a request first needs it."""

    def __init__(self, sizes: list[int], build: Callable[[int], Shard]) -> None:
        self.sizes = sizes
        self.build: Callable[[int], Shard] = build
        self.load = ShardLoad(self.sizes)
        self.built: list[Shard | None] = [None] * len(self.sizes)
        self.lock = threading.Lock()

    def pick(self) -> tuple[int, Shard, Callable[[], None]]:
        """A shard with a free connection, its index, and the call that frees it again."""
        index = self.load.take()
        shard = self.built[index]
        if shard is None:
            with self.lock:  # two threadpool workers may reach an unbuilt shard at once
                shard = self.built[index]
                if shard is None:
                    shard = self.built[index] = self.build(self.sizes[index])
        return index, shard, self.load.release_once(index)

    def all(self) -> list[Shard]:
        return [shard for shard in self.built if shard is not None]

    def retire(self, index: int, shard: Shard, exc: BaseException) -> Shard | None:
        """Forget an HTTP/2 shard whose connection broke (not one stream reset), so
        the next request builds a new one; the caller closes what this returns.

        httpcore2 keeps a failed HTTP/2 connection in its pool, and a shard has
        room for one: the shard's next requests would wait for it until their
        deadlines.
        """
        if not isinstance(exc, httpx2.TransportError) or stream_reset(exc):
            return None
        with self.lock:
            if self.built[index] is not shard:  # retired already
                return None
            self.built[index] = None
        return shard


# ------------------------------------------------------------- the bodies

STEP = 1024 * 1024  # the most bytes one step of inflating may produce
CODINGS = {'gzip': zlib.MAX_WBITS | 16, 'x-gzip': zlib.MAX_WBITS | 16, 'deflate': zlib.MAX_WBITS}


class Body:
    """One response body as the transport hands it on: inflated, checked.

    A server may send a content coding though none was asked: the codings
    are undone here, each in steps of at most STEP bytes, so BodyCheck sees
    (and caps) the decoded size, and httpx2 gets plain bytes and headers
    without Content-Encoding.
    """

    def __init__(self, response: httpx2.Response, request: httpx2.Request) -> None:
        self.request = request
        self.check = BodyCheck(request, response.status_code, response.headers)
        codings = [c.strip().lower() for c in
                   response.headers.get('content-encoding', '').split(',')]
        codings = [c for c in codings if c not in ('', 'identity')]
        for coding in codings:
            if coding not in CODINGS:
                raise BadFlagError(f'unsupported content coding {coding!r}', request)
        self.inflaters = [zlib.decompressobj(CODINGS[c]) for c in reversed(codings)]
        if codings:
            del response.headers['content-encoding']
            response.headers.pop('content-length', None)

    def feed(self, data: bytes) -> Iterator[bytes]:
        for chunk in self.inflated(data, 0):
            self.check.add(chunk)
            yield chunk

    def end(self) -> Iterator[bytes]:
        yield from self.feed(b'')
        self.check.end()

    def inflated(self, data: bytes, level: int) -> Iterator[bytes]:
        if level == len(self.inflaters):
            if data:
                yield data
            return
        inflater = self.inflaters[level]
        try:
            while True:
                out = inflater.decompress(data, STEP)
                yield from self.inflated(out, level + 1)
                data = inflater.unconsumed_tail
                if not data:
                    break
        except zlib.error as exc:
            raise httpx2.DecodingError(f'bad compressed body: {exc}',
                                       request=self.request) from exc

    def failed(self, exc: Exception, cut: bool) -> BaseException:
        """What a failed read raises: a timeout if the deadline ``cut`` it, a
        body cut short for a protocol error, else ``exc`` itself."""
        if cut:
            return timed_out(self.request)
        if isinstance(exc, httpx2.RemoteProtocolError):
            try:
                self.check.incomplete(exc)
            except httpx2.HTTPError as incomplete:
                return incomplete
        return exc


class CheckedStream(httpx2.SyncByteStream):
    """A response body read within the run's rules; closing it frees its shard's slot.

    ``watch``: the request's deadline, if it has one (benchmarks/checked.py
    wraps httpx2's own transport, with none).
    """

    def __init__(self, stream: httpx2.SyncByteStream, body: Body, release: Callable[[], None],
                 watch: Watch | None, run: Run) -> None:
        self.stream, self.body, self.release, self.watch = stream, body, release, watch
        self.run = run

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self.stream)
        while True:
            try:
                with self.run.interruptible():
                    data = next(chunks, None)
            except httpx2.TransportError as exc:
                if self.run.stopping:
                    raise RunStopped from exc
                raise self.body.failed(exc, self.watch is not None and self.watch.fired) from exc
            if data is None:
                break
            yield from self.body.feed(data)
        yield from self.body.end()

    def close(self) -> None:
        from httpcore2 import HTTP11Connection  # loaded: the response came through it

        try:
            self.stream.close()
            if overfull := holding_excess(self.stream, HTTP11Connection):
                overfull.close()
        finally:
            if self.watch is not None:
                self.watch.end()
            self.release()


class AsyncCheckedStream(httpx2.AsyncByteStream):
    """A response body read within the run's rules and its request's deadline."""

    def __init__(self, stream: httpx2.AsyncByteStream, body: Body,
                 release: Callable[[], None]) -> None:
        self.stream, self.body, self.release = stream, body, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self.stream)
        deadline = self.body.request.extensions.get(DEADLINE)  # None: no deadline
        while True:
            try:  # the timeout around each read, never across a yield
                async with asyncio.timeout_at(deadline):
                    data = await anext(chunks, None)
            except TimeoutError as exc:
                raise self.body.failed(exc, True) from exc
            except httpx2.TransportError as exc:
                raise self.body.failed(exc, False) from exc
            if data is None:
                break
            for chunk in self.body.feed(data):
                yield chunk
        for chunk in self.body.end():
            yield chunk

    async def aclose(self) -> None:
        from httpcore2 import AsyncHTTP11Connection  # loaded: the response came through it

        try:
            await self.stream.aclose()
            if overfull := holding_excess(self.stream, AsyncHTTP11Connection):
                await overfull.aclose()
        finally:
            self.release()


# httpcore2 puts a kept-alive connection back in its pool without looking at
# what h11 read past the response: with the next request, those bytes are
# taken for its response (an extra answer was saved as the next flag). h11
# shows them (``trailing_data``, public), but no public API of httpx2 or
# httpcore2 leads to the h11 connection: the sockets are empty, so a
# readable check (httpcore2 makes one before reusing a connection) sees
# nothing. These private names do (with runs.ANYIO_ASYNCIO_BACKEND, the only
# ones of a dependency in flags2), from the stream of a shard's response:
# httpx2's client and transport streams, httpcore2's pool and HTTP/1.1
# streams, its HTTP/1.1 connection, h11. tests/test_keep_alive.py fails if
# the path moves.
H11_PATH = ('_stream', '_httpcore_stream', '_stream', '_connection', '_h11_state')
Connection = TypeVar('Connection', 'httpcore2.HTTP11Connection',
                      'httpcore2.AsyncHTTP11Connection')


def holding_excess(stream: object, kind: type[Connection]) -> Connection | None:
    """The connection under a finished response's ``stream``, if it is kept alive
    with bytes past that response; None otherwise (or if the path moved)."""
    import h11  # loaded: the response came through it

    path = [stream]
    for name in H11_PATH:
        path.append(getattr(path[-1], name, None))
    connection, state = path[-2:]
    if (isinstance(connection, kind) and connection.is_idle()
            and isinstance(state, h11.Connection) and state.trailing_data[0]):
        return connection
    return None


def check_url(request: httpx2.Request) -> None:
    """Refuse a URL that could not be a base URL (``options.url_problem``): the
    base URL was checked before the run, a redirect's target is checked here.

    A redirect hop has the flag's deadline already: its words say redirect.
    """
    if problem := url_problem(str(request.url)):
        what = 'bad redirect: the new URL' if DEADLINE in request.extensions else 'bad URL: the URL'
        raise BadFlagError(f'{what} {problem}', request)


def goes_again(request: httpx2.Request, exc: BaseException) -> bool:
    """Whether a GET whose HTTP/2 connection broke under it goes once more, on a new
    connection: the break may be another stream's doing, and a GET is
    idempotent (RFC 9110). A stream the server reset was answered: no."""
    if (request.method != 'GET' or not isinstance(exc, httpx2.TransportError)
            or stream_reset(exc) or request.extensions.get(RETRIED)):
        return False
    request.extensions[RETRIED] = True
    return True


def timed_out(request: httpx2.Request) -> httpx2.ReadTimeout:
    """What a request cut at its deadline raises: a read timeout, as httpx2's own."""
    return httpx2.ReadTimeout('the whole request took longer than its timeout',
                              request=request)


class ShardedTransport(httpx2.BaseTransport):
    """Shards of one connection each, so a request's socket is its shard's:
    a read blocked past the deadline, or in a run that stops, is ended by
    shutting that socket down."""

    def __init__(self, concur_req: int, run: Run) -> None:
        self.run, self.timeout = run, run.timeout
        self.tls = LazyTLSContext()
        self.sockets = OpenSockets()
        self.shards = Shards([1] * concur_req, self.build)
        self.lines = [Line(self.sockets) for _ in self.shards.sizes]
        self.deadlines = Deadlines()
        run.on_stop(self.sockets.shut_down)

    def build(self, size: int) -> httpx2.Client:
        return httpx2.Client(limits=shard_limits(size), verify=self.tls, timeout=self.timeout)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.run.bind_thread()  # save_flag, later in this thread, finds the run
        check_url(request)
        deadline = request.extensions.setdefault(DEADLINE, time.monotonic() + self.timeout)
        if time.monotonic() >= deadline:  # a redirect after the time was up
            raise timed_out(request)
        index, shard, release = self.shards.pick()
        line = self.lines[index]
        watch = self.deadlines.watch(deadline, line, request)
        try:
            with self.run.interruptible():
                response = self.send(shard, request, line, watch)
        except BaseException as exc:
            watch.end()
            release()
            if isinstance(exc, httpx2.TransportError):
                if self.run.stopping:
                    raise RunStopped from exc
                if watch.fired:
                    raise timed_out(request) from exc
            raise
        try:
            body = Body(response, request)
        except BaseException:  # refused on its head: the connection goes back first
            response.close()
            watch.end()
            release()
            raise
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = CheckedStream(response.stream, body, release, watch, self.run)
        return response

    def send(self, shard: httpx2.Client, request: httpx2.Request, line: Line,
             watch: Watch) -> httpx2.Response:
        """Send on the shard's one connection: a GET that met it closed by the server
        goes once more, on a new one (not when the deadline or a stop closed it)."""
        attempt = Attempt()
        request.extensions['trace'] = line.tracer(attempt, watch)
        try:
            return shard.send(request, stream=True)
        except httpx2.TransportError as exc:
            if (watch.fired or self.run.stopping
                    or not attempt.met_closed(request, exc, first=True)):
                raise
        request.extensions['trace'] = line.tracer(Attempt(), watch)
        return shard.send(request, stream=True)

    def close(self) -> None:
        """Close every connection, ending reads that other threads still wait on."""
        self.sockets.shut_down()
        self.deadlines.close()
        for shard in self.shards.all():
            shard.close()


class LoopTransport(httpx2.BaseTransport):
    """HTTP/2 for the sync variants: each request is a stream of an
    AsyncShardedTransport on an event loop of its own thread.

    httpcore2's sync HTTP/2 connection is not safe to share between threads
    (pydantic/httpx2 issue 908; pull request 1153 is open): its h2 state
    machine gets corrupted, and 1 run in 5 of threadpool ``-a -m 194 --http2``
    ended in a RuntimeError traceback. Here only the loop's thread touches it.
    The async transport holds the deadlines, the checks and the retries; the
    body is read there, within the cap, so a thread gets a whole answer.
    """

    def __init__(self, concur_req: int, run: Run) -> None:
        self.run = run
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name='flags2-http2',
                                       daemon=True)
        self.thread.start()
        self.transport = AsyncShardedTransport(concur_req, run)
        run.on_stop(self.cancel_requests)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.run.bind_thread()  # save_flag, later in this thread, finds the run
        future = asyncio.run_coroutine_threadsafe(self.fetch(request), self.loop)
        try:
            with self.run.interruptible():
                return future.result()
        except concurrent.futures.CancelledError as exc:  # the run is stopping
            raise RunStopped from exc
        except KeyboardInterrupt:  # the main thread's wait, cut by a stop
            future.cancel()
            raise

    async def fetch(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return httpx2.Response(response.status_code, headers=response.headers,
                               stream=httpx2.ByteStream(content),
                               extensions=response.extensions)

    def cancel_requests(self) -> None:
        def cancel() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
            self.loop.call_soon_threadsafe(cancel)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):  # a stop may have cancelled it: closed anyway
            asyncio.run_coroutine_threadsafe(self.transport.aclose(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class AsyncShardedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, concur_req: int, run: Run) -> None:
        self.run, self.timeout = run, run.timeout
        self.tls = LazyTLSContext()
        sizes = http2_sizes(concur_req, run) if run.http2 else shard_sizes(concur_req)
        self.shards = Shards(sizes, self.build)
        # A server that takes fewer streams than -m asks (and than one connection
        # carries: see http2_sizes): the rest wait here, for a stream, before
        # their clocks start (the deadline is the request's, not its wait in the
        # server's queue).
        throttled = run.http2 and run.server_streams < min(concur_req, CLIENT_STREAMS)
        self.streams = asyncio.Semaphore(run.server_streams) if throttled else None

    def build(self, size: int) -> httpx2.AsyncClient:
        if self.run.http2:
            return httpx2.AsyncClient(http1=False, http2=True, limits=shard_limits(1),
                                      verify=self.tls, timeout=self.timeout)
        return httpx2.AsyncClient(limits=shard_limits(size), verify=self.tls,
                                  timeout=self.timeout)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        check_url(request)
        if self.streams is not None:
            await self.streams.acquire()
        loop = asyncio.get_running_loop()
        deadline = request.extensions.setdefault(DEADLINE, loop.time() + self.timeout)
        index, shard, release_shard = self.shards.pick()
        release = self.with_stream(release_shard)
        try:
            async with asyncio.timeout_at(deadline):
                connections = 1 if self.run.http2 else self.shards.sizes[index]
                response = await self.send(shard, request, connections)
        except BaseException as exc:
            release()
            if self.run.http2 and (broken := self.shards.retire(index, shard, exc)):
                await broken.aclose()
            if isinstance(exc, RuntimeError) and shard.is_closed:  # retired as this one began
                return await self.handle_async_request(request)
            if isinstance(exc, TimeoutError):
                raise timed_out(request) from exc
            if self.run.http2 and goes_again(request, exc):
                return await self.handle_async_request(request)
            raise
        try:
            body = Body(response, request)
        except BaseException:  # refused on its head: the connection goes back first
            await response.aclose()
            release()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = AsyncCheckedStream(response.stream, body, release)
        return response

    def with_stream(self, release_shard: Callable[[], None]) -> Callable[[], None]:
        """``release_shard``, and the stream taken from ``self.streams``, once."""
        streams = self.streams
        if streams is None:
            return release_shard
        released = False

        def release() -> None:
            nonlocal released
            release_shard()
            if not released:
                released = True
                streams.release()
        return release

    async def send(self, shard: httpx2.AsyncClient, request: httpx2.Request,
                   connections: int) -> httpx2.Response:
        """Send on the shard of ``connections``: a GET that met a kept-alive one
        closed by the server goes again. The pool may hand it another idle one
        (a server that stops closes them all); each such try drops one, so the
        last of ``connections`` + 1 tries opens a new connection."""
        for tries in range(connections):
            attempt = Attempt()
            request.extensions['trace'] = attempt.atrace
            try:
                return await shard.send(request, stream=True)
            except httpx2.TransportError as exc:
                if not attempt.met_closed(request, exc, first=tries == 0):
                    raise
        request.extensions['trace'] = Attempt().atrace
        return await shard.send(request, stream=True)

    async def aclose(self) -> None:
        for shard in self.shards.all():
            await shard.aclose()


# ------------------------------------------------- kept-alive connections

ANSWERED = ('http11.receive_response_headers.complete',
            'http2.receive_response_headers.complete')


class Attempt:
    """What httpcore2's documented ``trace`` request extension tells of one try
    at sending a request: whether it opened a connection, whether a response
    head came back."""

    def __init__(self) -> None:
        self.connected = self.answered = False

    def seen(self, event: str) -> None:
        if event in CONNECTED:
            self.connected = True
        elif event in ANSWERED:
            self.answered = True

    async def atrace(self, event: str, info: dict[str, Any]) -> None:
        self.seen(event)

    def met_closed(self, request: httpx2.Request, exc: httpx2.TransportError,
                   first: bool) -> bool:
        """Whether a GET met a connection the server closed as idle, so it may
        safely go again on a new one: a kept-alive one, or, on its ``first``
        try only, a new one. A server's idle timeout runs from the accept: at
        --idle-timeout 0.002 the bundled server closed most new connections of
        a threadpool run before their request came (busy threads are slow to
        send it). So a GET goes at most once more on a new connection.

        The server closed or reset the connection before a response head came.
        A part of a head cannot be told from none (httpcore2 says 'Server
        disconnected without sending a response' for both); RFC 9112 (9.3.1)
        lets a client retry an idempotent request either way.
        """
        return (request.method == 'GET' and (first or not self.connected)
                and not self.answered and closed_unanswered(exc))


# ------------------------------------------- deadlines in the sync variants

class Line:
    """The one connection of a one-connection shard: its socket, learnt from
    httpcore2's documented ``trace`` request extension when it connects.

    A kept-alive connection serves its next request with no connect event;
    its socket is still this one, because the shard has no other.
    """

    def __init__(self, sockets: OpenSockets) -> None:
        self.sockets = sockets
        self.sock: socket.socket | None = None

    def tracer(self, attempt: Attempt, watch: Watch) -> Callable[[str, dict[str, Any]], None]:
        """The ``trace`` of one try at a request: what it met, and its socket."""
        def trace(event: str, info: dict[str, Any]) -> None:
            attempt.seen(event)
            if event in CONNECTED:
                self.connected(info['return_value'].get_extra_info('socket'), watch)
        return trace

    def connected(self, sock: object, watch: Watch) -> None:
        if not isinstance(sock, socket.socket):
            return
        self.sockets.add(sock)
        with watch.lock:  # Watch.fire holds it: one of the two sees the other's write
            self.sock = sock
            cut = watch.fired
        if cut:  # the time was up while connecting
            shut_down(sock)


class Watch:
    """One request's deadline on one line; ``fired`` once it cut the request."""

    __slots__ = ('deadline', 'ended', 'fired', 'line', 'lock', 'request')

    def __init__(self, deadline: float, line: Line, request: httpx2.Request,
                 lock: threading.Condition) -> None:
        self.deadline, self.line, self.request, self.lock = deadline, line, request, lock
        self.fired = self.ended = False

    def end(self) -> None:
        with self.lock:
            self.ended = True

    def fire(self) -> None:
        """Cut the request (the lock held): shutting its socket down ends a read blocked
        in another thread."""
        self.fired = True
        if self.line.sock is not None:
            shut_down(self.line.sock)


class Deadlines:
    """One thread per sync transport that cuts each request still running at its deadline.

    httpx2's timeout bounds each read: a server sending a byte now and then
    keeps a request going for ever, and only another thread can end a read
    that is blocked. Registering a request is a push on a heap; requests
    that ended are dropped from it lazily, when the thread wakes.
    """

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Watch]] = []
        self.order = itertools.count()  # ties on the deadline never compare watches
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closed = False

    def watch(self, deadline: float, line: Line, request: httpx2.Request) -> Watch:
        watch = Watch(deadline, line, request, self.cond)
        with self.cond:
            heapq.heappush(self.heap, (deadline, next(self.order), watch))
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name='flags2-deadlines',
                                               daemon=True)
                self.thread.start()
            elif self.heap[0][2] is watch:  # earlier than what the thread waits for
                self.cond.notify()
        return watch

    def run(self) -> None:
        heap = self.heap
        with self.cond:
            while not self.closed:
                while heap and heap[0][2].ended:
                    heapq.heappop(heap)
                if not heap:
                    self.cond.wait()
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(heap)[2].fire()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
            thread = self.thread
        if thread is not None:
            thread.join()


# ------------------------------------------------- Ctrl-C in the threadpool

CONNECTED = ('connection.connect_tcp.complete', 'connection.start_tls.complete')


class OpenSockets:
    """The sockets of a sync transport, so closing it can wake blocked readers.

    Closing a socket does not wake a thread blocked reading it: after Ctrl-C,
    threadpool workers waiting on a slow server kept the process alive until
    their reads timed out. Shutting the sockets down ends those reads at
    once. Each ``Line`` reports the socket of its connection here.
    """

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.closing = False
        # Reentrant: a stopping run calls shut_down from the signal handler,
        # which may interrupt the main thread inside add or shut_down.
        self.lock = threading.RLock()

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            if not self.closing:
                self.sockets.add(sock)
                return
        # Connected after shut_down began: this worker's first read would
        # otherwise wait for the server, and hold up the executor's join.
        shut_down(sock)

    def shut_down(self) -> None:
        with self.lock:
            self.closing = True
            sockets = list(self.sockets)
        for sock in sockets:
            shut_down(sock)


def shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


# ------------------------------------------------------------------ TLS

class LazyTLSContext(ssl.SSLContext):
    """httpx2's own TLS context, made when a first handshake needs it.

    Making it (``httpx2.create_ssl_context``, which reads SSL_CERT_FILE and
    SSL_CERT_DIR) loads the CA certificates: 25-50 ms that a run against a
    plain-http server never needs to pay; a redirect to https still gets a
    verifying context. httpcore2 sets ALPN on the context it is given before
    each handshake, so that is passed on.
    """

    def __new__(cls) -> LazyTLSContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.real: ssl.SSLContext | None = None
        self.alpn: list[str] = []

    def loaded(self) -> ssl.SSLContext:
        with self.lock:
            if self.real is None:
                self.real = httpx2.create_ssl_context()
            if self.alpn:
                self.real.set_alpn_protocols(self.alpn)
            return self.real

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        self.alpn = list(alpn_protocols)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # sync httpcore2
        return self.loaded().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # anyio, for asyncio
        return self.loaded().wrap_bio(*args, **kwargs)
