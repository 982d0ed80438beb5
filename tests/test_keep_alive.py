"""A kept-alive connection carries each answer to its own request: bytes past a
complete answer never become the next flag, and a connection the server
closed while it was idle costs a retry, not a flag."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import h11
import httpcore2
import httpx2
import pytest
from handmade import CLOSE, RESET, Answer, answer, code_of, handmade_server, head

import flags2_asyncio
import flags2_sequential
import flags2_threadpool
from conftest import flag_url, run_in_process
from flags2_common import DownloadStatus
from flags_server import flag_gif

from flags2.clients import H11_PATH
from flags2.servers import FlagsServer

MODULES: dict[str, ModuleType] = {
    'sequential': flags2_sequential,
    'threadpool': flags2_threadpool,
    'asyncio': flags2_asyncio,
}
CODES = ['BR', 'CN', 'DE', 'FR', 'IN', 'JP']


def flag(path: str) -> bytes:
    return answer('200 OK', flag_gif(code_of(path)), 'Content-Type: image/gif')


def saved_flags(dest: Path) -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in dest.iterdir()}


# ------------------------------------------------- bytes past an answer

STRAY = {  # what BR's answer brings along, in the same write
    'an extra answer': flag('/flags/br/br.gif')
        + answer('200 OK', b'GIF89a stray bytes, not a flag', 'Content-Type: image/gif'),
    'a 204 with a body': head('204 No Content') + b'GIF89a body of a 204',
    'a 304 with a body': head('304 Not Modified') + b'GIF89a body of a 304',
}


@pytest.mark.parametrize('variant', MODULES)
@pytest.mark.parametrize('stray', STRAY)
def test_bytes_past_an_answer_never_answer_the_next_request(stray: str, variant: str,
                                                             tmp_path: Path) -> None:
    """Was, at concurrency 1: the extra answer saved as CN.gif; after the 204 or
    304, CN failed with 'illegal status line'. curl notices the excess and
    opens a new connection; so do the transports."""
    def script(path: str, number: int) -> Answer:
        return [STRAY[stray] if code_of(path) == 'BR' else flag(path)]

    with handmade_server(script) as server:
        counter, run = run_in_process(MODULES[variant].download_many, CODES, server.url,
                                      False, 1, dest=tmp_path)
    others = {cc: flag_gif(cc) for cc in CODES[1:]}
    if stray == 'an extra answer':
        assert saved_flags(tmp_path) == {'BR': flag_gif('BR'), **others}
    else:  # BR's own answer is an error; the rest are untouched by its body
        assert saved_flags(tmp_path) == others
        assert counter[DownloadStatus.ERROR] == 1
        assert run.causes.total() == 1
    assert server.connections == 2  # BR's was dropped; the rest share the next one


# --------------------------------------- a kept-alive connection closed

@pytest.mark.parametrize(('variant', 'concur_req'), [
    ('sequential', 1), ('threadpool', 1), ('threadpool', 3), ('asyncio', 1), ('asyncio', 3)])
@pytest.mark.parametrize(('how', 'cause'), [
    (CLOSE, 'protocol error: Server disconnected without sending a response.'),
    (RESET, 'connection reset'),
])
def test_a_kept_alive_connection_the_server_closed_is_retried(
        how: str, cause: str, variant: str, concur_req: int, tmp_path: Path) -> None:
    """The server takes each connection's second request and closes it unanswered,
    as when its idle timeout strikes as the request comes. Was: every such code
    failed (at --idle-timeout 0.002, threadpool -a lost 119-129 of 194).

    QQ is closed on every connection: its retry on a new one fails too, and
    that is its error; a retry that was on a new connection never goes again.
    asyncio's shards hold several connections: a retry may meet another
    kept-alive one the server closed, and goes again until one is new.
    """
    def script(path: str, number: int) -> Answer:
        return how if number == 2 or code_of(path) == 'QQ' else [flag(path)]

    with handmade_server(script) as server:
        counter, run = run_in_process(MODULES[variant].download_many, [*CODES, 'QQ'],
                                      server.url, False, concur_req, dest=tmp_path)
    assert saved_flags(tmp_path) == {cc: flag_gif(cc) for cc in CODES}
    assert counter[DownloadStatus.OK] == len(CODES)
    assert dict(run.causes) == {cause: 1}
    asked_qq = server.paths.count('/flags/qq/qq.gif')
    if concur_req == 1:  # QQ comes last, on a kept-alive connection, then on a new one
        assert asked_qq == 2
    else:  # asyncio's shard may hand the retry another kept-alive connection
        assert 1 <= asked_qq <= concur_req + 1



@pytest.mark.parametrize(('variant', 'concur_req'), [
    ('sequential', 1), ('threadpool', 3), ('asyncio', 3)])
@pytest.mark.parametrize('how', [CLOSE, RESET])
def test_a_new_connection_the_server_closed_unanswered_is_retried_once(
        how: str, variant: str, concur_req: int, tmp_path: Path) -> None:
    """The server closes BR's first request, on a new connection, unanswered, as
    its idle timeout does when the request comes late (--idle-timeout 0.002:
    threadpool -a lost 10-60 of 194 that way). BR goes once more, on a new
    connection. QQ is closed every time: it is asked twice on new connections, no
    more (asyncio's shard may also hand it a kept-alive one, which goes again)."""
    closed: set[str] = set()

    def script(path: str, number: int) -> Answer:
        cc = code_of(path)
        if cc == 'QQ' or (cc == 'BR' and cc not in closed):
            closed.add(cc)
            return how
        return [flag(path)]

    with handmade_server(script) as server:
        counter, run = run_in_process(MODULES[variant].download_many, ['BR', 'CN', 'QQ'],
                                      server.url, False, concur_req, dest=tmp_path)
    assert saved_flags(tmp_path) == {cc: flag_gif(cc) for cc in ('BR', 'CN')}
    assert counter[DownloadStatus.OK] == 2
    assert run.causes.total() == 1
    assert server.paths.count('/flags/br/br.gif') == 2
    asked_qq = server.paths.count('/flags/qq/qq.gif')
    assert asked_qq == 2 if variant != 'asyncio' else 2 <= asked_qq <= concur_req + 1


# ------------------------------------ the private path to h11's buffer

def test_the_private_path_to_h11_still_leads_there(local_server: FlagsServer) -> None:
    """clients.H11_PATH walks private names of httpx2 and httpcore2: a release that
    moves them fails here, where the transports would quietly stop checking."""
    def walk(stream: object) -> list[object]:
        path = [stream]
        for name in H11_PATH:
            path.append(getattr(path[-1], name))
        return path

    async def fetch_async(url: str) -> list[object]:
        async with httpx2.AsyncClient() as client:
            response = await client.send(client.build_request('GET', url), stream=True)
            await response.aread()
            return walk(response.stream)

    url = flag_url(local_server.url, 'BR')
    with httpx2.Client() as client:
        response = client.send(client.build_request('GET', url), stream=True)
        response.read()
        *_, connection, state = walk(response.stream)
    assert isinstance(connection, httpcore2.HTTP11Connection)
    assert isinstance(state, h11.Connection)
    *_, connection, state = asyncio.run(fetch_async(url))
    assert isinstance(connection, httpcore2.AsyncHTTP11Connection)
    assert isinstance(state, h11.Connection)
