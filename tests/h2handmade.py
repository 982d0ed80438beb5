"""A loopback HTTP/2 server (h2c) whose answers are chosen by hand, for what no
well-behaved server sends: streams reset, GOAWAY mid-run, header blocks that
never end, an HPACK bomb, a flow-control window that never opens."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from handmade import ThreadedServer
from PIL import Image


def tiny_gif() -> bytes:
    buffer = io.BytesIO()
    Image.new('RGB', (120, 80), 'red').save(buffer, format='GIF')
    return buffer.getvalue()


@dataclass
class Exchange:
    """One request on one connection, and what a script can answer with."""

    conn: h2.connection.H2Connection
    sock: socket.socket
    stream_id: int
    path: str
    number: int  # of the request on its connection, from 1

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def gif(self, body: bytes) -> None:
        self.conn.send_headers(self.stream_id, [(':status', '200'), ('content-type', 'image/gif'),
                                                ('content-length', str(len(body)))])
        self.conn.send_data(self.stream_id, body, end_stream=True)
        self.flush()

    def reset(self) -> None:
        self.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.flush()

    def goaway(self) -> None:
        """Refuse this stream and every later one: the client may send them again."""
        self.conn.close_connection(h2.errors.ErrorCodes.NO_ERROR,
                                   last_stream_id=self.stream_id - 2)
        self.flush()

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)


Script = Callable[[Exchange], None]  # answers (or not) one request
ServerSettings = dict[h2.settings.SettingCodes, int]


class H2Server(ThreadedServer):
    """Each request for /flags/... is handed to ``script``, any other gets a 404.
    ``settings``: the server's own, sent first (SETTINGS_INITIAL_WINDOW_SIZE 0,
    say)."""

    def __init__(self, script: Script, settings: ServerSettings | None = None) -> None:
        # As real servers do, it says how many streams it takes (httpcore2 sends
        # one request at a time to a server that does not).
        self.script = script
        self.settings = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100, **(settings or {})}
        self.asked: list[str] = []
        super().__init__()

    def serve(self, sock: socket.socket, connection: int) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding='utf-8'))
        conn.local_settings = h2.settings.Settings(client=False, initial_values=self.settings)
        number = 0
        with sock, contextlib.suppress(OSError, h2.exceptions.ProtocolError):
            sock.settimeout(30)
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if not isinstance(event, h2.events.RequestReceived):
                        continue
                    path = next(value for name, value in event.headers or []
                                if name in (':path', b':path'))
                    exchange = Exchange(conn, sock, event.stream_id, str(path), number + 1)
                    if not exchange.path.startswith('/flags/'):
                        conn.send_headers(event.stream_id, [(':status', '404')],
                                          end_stream=True)
                        continue
                    number += 1
                    self.asked.append(exchange.path)
                    self.script(exchange)
                sock.sendall(conn.data_to_send())


@contextlib.contextmanager
def h2_server(script: Script, settings: ServerSettings | None = None) -> Iterator[H2Server]:
    server = H2Server(script, settings)
    try:
        yield server
    finally:
        server.close()
