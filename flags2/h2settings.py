"""What an HTTP/2 server announces before any request: its SETTINGS.

Over HTTP/2 the server throttles too: its SETTINGS_MAX_CONCURRENT_STREAMS
says how many requests it takes at once on one connection, the semaphore's
twin on the other side of the wire. A run with ``--http2`` reads it once,
before the clock starts, so that its client opens a second connection only
for its own cap (httpcore2 carries at most CLIENT_STREAMS streams on one
connection), never to get round the server's.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

# httpcore2's own SETTINGS_MAX_CONCURRENT_STREAMS, which its public API does
# not let a client change: the most requests one of its connections carries.
CLIENT_STREAMS = 100


class NoH2c(Exception):
    """The server answered the HTTP/2 preface with something else than HTTP/2."""


def server_streams(base_url: str, timeout: float) -> int:
    """The most streams the server of ``base_url`` takes on one connection.

    Read by h2c with prior knowledge for an http:// URL. An https:// server
    agrees on HTTP/2 in its TLS handshake, and a proxy stands between us and
    the server: both keep CLIENT_STREAMS, as does a server that does not
    answer (the run's requests will say why). Raises NoH2c for a server that
    answers the preface in another protocol (HTTP/1.1 only, say).
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or '', parts.port or 80
    if parts.scheme != 'http' or proxied(host):
        return CLIENT_STREAMS
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(conn.data_to_send())
            answered = False  # a server that closes with no byte said nothing of its protocol
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    raise NoH2c('it answered in another protocol' if answered
                                else 'it closed the connection')
                answered = True
                if (streams := announced_streams(conn, data)) is not None:
                    conn.close_connection()
                    sock.sendall(conn.data_to_send())
                    return streams
    except OSError:  # refused, reset or timed out
        pass
    return CLIENT_STREAMS


def announced_streams(conn: h2.connection.H2Connection, data: bytes) -> int | None:
    """The server's stream limit once its first SETTINGS frame is in ``data``."""
    try:
        events = conn.receive_data(data)
    except h2.exceptions.ProtocolError:
        raise NoH2c('it answered in another protocol') from None
    for event in events:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            # No MAX_CONCURRENT_STREAMS: unlimited, RFC 9113 says, but httpcore2
            # then sends one request at a time, and so that is the limit.
            return 1 if setting is None else setting.new_value
    return None


def proxied(host: str) -> bool:
    """Whether httpx2 sends requests for ``host`` through a proxy (HTTP_PROXY and the like)."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get('http') or proxies.get('all')) and not \
        urllib.request.proxy_bypass(host)

