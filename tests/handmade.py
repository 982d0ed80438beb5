"""A loopback server whose answers are written by hand, byte for byte, for what
no HTTP server library sends on purpose: a redirect to a URL that cannot be
fetched, bytes past a complete answer, a kept-alive connection closed when
the next request comes."""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator

# What an answer may be instead of bytes: close the connection without a word
# (a FIN), or reset it (an RST), once the request has come.
CLOSE, RESET = 'close', 'reset'
Answer = Iterable[bytes] | str
Script = Callable[[str, int], Answer]  # (request path, its number on the connection from 1)


class ThreadedServer:
    """A loopback listener serving each connection in a thread of its own, until
    ``close``; ``serve(conn, number)`` is the protocol, number counting from 1."""

    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(('127.0.0.1', 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.url = f'http://127.0.0.1:{self.port}/flags'
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            with self.lock:
                self.accepted += 1
                number = self.accepted
            threading.Thread(target=self.serve, args=(conn, number), daemon=True).start()

    def serve(self, conn: socket.socket, number: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


class HandmadeServer(ThreadedServer):
    """Keeps each connection open for as long as the client does: each request
    for /flags/... gets what ``script`` gives for it, any other a 404.

    ``asked`` lists each request for /flags/... with the number of its connection,
    ``heads`` their heads as they came.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.asked: list[tuple[int, str]] = []
        self.heads: list[bytes] = []
        super().__init__()

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.asked]

    @property
    def connections(self) -> int:
        """How many connections asked for /flags/...: a run asks a bundled server's
        /stats on a connection of its own."""
        return len({number for number, _ in self.asked})

    def serve(self, conn: socket.socket, connection: int) -> None:
        with conn, contextlib.suppress(OSError):  # the client may leave at any time
            conn.settimeout(10)
            pending = b''
            for number in itertools.count(1):
                while b'\r\n\r\n' not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b'\r\n\r\n')
                path = head.split(b' ')[1].decode()
                if not path.startswith('/flags/'):  # a run asks a bundled server for /stats
                    conn.sendall(answer('404 Not Found'))
                    continue
                with self.lock:
                    self.asked.append((connection, path))
                    self.heads.append(head)
                reply = self.script(path, number)
                if reply == RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                    return
                if isinstance(reply, str):  # CLOSE
                    return
                for data in reply:
                    conn.sendall(data)


@contextlib.contextmanager
def handmade_server(script: Script) -> Iterator[HandmadeServer]:
    server = HandmadeServer(script)
    try:
        yield server
    finally:
        server.close()


def head(status: str, *fields: str) -> bytes:
    """An answer's status line and header fields, up to the blank line."""
    return (f'HTTP/1.1 {status}\r\n' + ''.join(f'{f}\r\n' for f in fields) + '\r\n').encode()


def answer(status: str, body: bytes = b'', *fields: str) -> bytes:
    """One whole answer, its body framed by Content-Length."""
    return head(status, *fields, f'Content-Length: {len(body)}') + body


def code_of(path: str) -> str:
    """The code a variant asked for: /flags/br/br.gif and /flags/br/metadata.json are 'BR'."""
    return path.split('/')[2].upper()
