"""A run honours the environment's proxy settings, as httpx2 does: HTTP_PROXY
routes the flag requests through the proxy, NO_PROXY exempts a host.

The proxy is a small forward proxy on loopback, in this process. It serves
the absolute-URI requests for the made-up host ``flags.invalid`` (which never
resolves) from the bundled local server, and counts them.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import VARIANTS, assert_valid_gifs, run_variant, saved_codes

from flags2.servers import FlagsServer

FAKE_HOST = 'flags.invalid'
FAKE_URL = f'http://{FAKE_HOST}/flags'
PROXY_VARIABLES = ('HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy',
                   'ALL_PROXY', 'all_proxy', 'NO_PROXY', 'no_proxy')


class ForwardProxy(ThreadingHTTPServer):
    """Forwards GET http://flags.invalid/... to the local server; notes every target."""

    daemon_threads = True

    def __init__(self, upstream: FlagsServer) -> None:
        super().__init__(('127.0.0.1', 0), ProxyHandler)
        self.upstream = upstream
        self.targets: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}'


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, as a real proxy offers
    server: ForwardProxy

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.targets.append(self.path)
        target = urlsplit(self.path)  # a proxy gets the absolute URI
        if target.hostname != FAKE_HOST:
            self.send_error(502, f'this proxy only knows {FAKE_HOST}')
            return
        conn = http.client.HTTPConnection('127.0.0.1', self.server.upstream.port, timeout=5)
        try:
            conn.request('GET', target.path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status)
        self.send_header('Content-Type', resp.getheader('Content-Type', 'text/plain'))
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@contextlib.contextmanager
def forward_proxy(upstream: FlagsServer) -> Iterator[ForwardProxy]:
    proxy = ForwardProxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy settings of the machine's own reach the runs."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures('clean_proxy_env')
@pytest.mark.parametrize('variant', VARIANTS)
def test_http_proxy_carries_every_flag_request(variant: str, local_server: FlagsServer,
                                               tmp_path: Path) -> None:
    dest = tmp_path / 'flags'
    with forward_proxy(local_server) as proxy:
        result = run_variant(variant, '-s', FAKE_URL, '-o', str(dest), 'BR', 'CN',
                             cwd=tmp_path, env={'HTTP_PROXY': proxy.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert '2 flags downloaded.' in result.lines
    assert saved_codes(dest) == ['BR', 'CN']
    assert_valid_gifs(dest)
    assert sorted(proxy.targets) == [f'{FAKE_URL}/br/br.gif', f'{FAKE_URL}/cn/cn.gif']


@pytest.mark.usefixtures('clean_proxy_env')
def test_no_proxy_sends_the_host_around_the_proxy(local_server: FlagsServer,
                                                  tmp_path: Path) -> None:
    dest = tmp_path / 'flags'
    with forward_proxy(local_server) as proxy:
        result = run_variant('sequential', '-v', '-s', FAKE_URL, '-o', str(dest), 'BR', 'CN',
                             cwd=tmp_path, env={'HTTP_PROXY': proxy.url, 'NO_PROXY': FAKE_HOST})
    assert proxy.targets == []
    assert result.returncode == 1  # straight to a host that does not resolve
    assert 'BR error: host name not found' in result.lines
    assert 'CN error: host name not found' in result.lines
    assert saved_codes(dest) == []
