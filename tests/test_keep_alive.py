"""A kept-alive connection carries each answer to its own request: a connection
the server closed while it was idle costs a retry, not a flag."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from handmade import CLOSE, RESET, Answer, answer, code_of, handmade_server

import flags2_asyncio
import flags2_sequential
import flags2_threadpool
from conftest import run_in_process
from flags2_common import DownloadStatus
from flags_server import flag_gif

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
    that is its error; a request on a new connection is never retried.
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
