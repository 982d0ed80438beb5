"""httpx2's own transports, holding to what a variant counts on during a run:
for the clients that benchmarks/book.py and benchmarks/plumbing_runner.py
swap in.

The variants read a response as the book does (``resp.content``): flags2's
transports check every body (``flags2.failures.BodyCheck``: the 1 MiB cap on
decoded bytes, a GIF where a flag was asked, a body cut short), inflating
content codings themselves a step at a time (``flags2.clients.Body``), and a
threadpool worker finds the run, for ``save_flag``, through the transport.
A bare ``httpx2.Client`` would do neither: saves in worker threads would find
no run, and a comparison would credit the other client with checks it never
made. These wrappers add exactly those two things to httpx2's HTTPTransport
and AsyncHTTPTransport, reading bodies through flags2's own stream classes;
nothing else of flags2's (no pool of shards, no deadline per request; a stop
cuts a request short only where the main thread waits on it).
"""

from __future__ import annotations

import httpx2

from flags2.clients import AsyncCheckedStream, Body, CheckedStream
from flags2.runs import Run


def nothing() -> None:
    """httpx2's own pool frees its connections itself."""


class CheckedTransport(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport, run: Run) -> None:
        self.inner, self.run = inner, run

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.run.bind_thread()  # save_flag, later in this thread, finds the run
        response = self.inner.handle_request(request)
        try:
            body = Body(response, request)
        except BaseException:
            response.close()
            raise
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = CheckedStream(response.stream, body, release=nothing, watch=None,
                                        run=self.run)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncCheckedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        try:
            body = Body(response, request)
        except BaseException:
            await response.aclose()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = AsyncCheckedStream(response.stream, body, release=nothing)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
