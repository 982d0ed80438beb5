"""The bundled server answers HTTP/1.1 as RFC 9112 (and RFC 9110, for what
every origin server must do) asks of an origin server.

Each test is one requirement the server did not meet; the clauses are quoted
where they are short. What it already did (a HEAD answer has no body, a space
before a colon is a 400, a folded line is a 400, a second Content-Length is a
400) is tested in tests/test_server_hardening.py.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import time
from collections.abc import Iterator

import pytest

from flags_server import flag_gif

from flags2.servers import FlagsServer, running_server
from flags2.wire import MAX_BODY, MAX_HEAD


@pytest.fixture(scope='module')
def server() -> Iterator[FlagsServer]:
    with running_server('local', tied=True) as server:
        yield server


@contextlib.contextmanager
def connect(server: FlagsServer, timeout: float = 5) -> Iterator[Conversation]:
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=timeout)
    try:
        yield Conversation(sock)
    finally:
        sock.close()


class Conversation:
    """One connection: send bytes, read whole responses (they have a Content-Length)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b''

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b''
        self.buffer += chunk
        return bool(chunk)

    def head(self) -> tuple[int, dict[str, str]]:
        """The status and headers (names in lower case) of the next response."""
        while b'\r\n\r\n' not in self.buffer:
            assert self._fill(), f'closed before a response: {self.buffer!r}'
        head, _, self.buffer = self.buffer.partition(b'\r\n\r\n')
        status_line, *lines = head.decode('latin-1').split('\r\n')
        version, status, _ = status_line.split(' ', 2)
        assert version == 'HTTP/1.1'
        headers = {}
        for line in lines:
            name, _, value = line.partition(':')
            headers[name.lower()] = value.strip()
        return int(status), headers

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        length = 0 if head_only or status < 200 else int(headers['content-length'])
        while len(self.buffer) < length:
            assert self._fill(), 'closed in the middle of a body'
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True when the server closes the connection with nothing more to say."""
        return not self.buffer and not self._fill()


GET_BR = b'GET /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n\r\n'


def exchange(server: FlagsServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as conn:
        conn.send(request)
        return conn.response()


# -------------------------------------------------------------- RFC 9112 3.2

@pytest.mark.parametrize('host', [None, b'a b', b'x/y', b'::1', b'x:80:80', b'x:port'])
def test_an_http11_request_without_a_valid_host_is_400(host: bytes | None,
                                                       server: FlagsServer) -> None:
    # "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    # request message that lacks a Host header field ... or a Host header field
    # with an invalid field value."
    field = b'' if host is None else b'Host: ' + host + b'\r\n'
    with connect(server) as conn:
        conn.send(b'GET /flags/br/br.gif HTTP/1.1\r\n' + field + b'\r\n')
        assert conn.response()[0] == 400
        assert conn.closed()


# ------------------------------------------------------------ RFC 9112 3.2.2

@pytest.mark.parametrize('target', [b'http://x/flags/br/br.gif',
                                    b'HTTP://127.0.0.1:8000/flags/br/br.gif?size=big'])
def test_an_absolute_form_target_is_served(target: bytes, server: FlagsServer) -> None:
    # "A server MUST accept the absolute-form in requests even though most
    # HTTP/1.1 clients will only send the absolute-form to a proxy."
    status, headers, body = exchange(server, b'GET ' + target + b' HTTP/1.1\r\nHost: x\r\n\r\n')
    assert (status, headers['content-type']) == (200, 'image/gif')
    assert body == flag_gif('BR')


@pytest.mark.parametrize('target', [b'flags/br/br.gif', b'*', b'x:80', b'http:/flags/br/br.gif'])
def test_a_target_in_no_form_of_request_target_is_400(target: bytes,
                                                      server: FlagsServer) -> None:
    # origin-form starts with /, asterisk-form is for OPTIONS only, authority-form
    # for CONNECT only (RFC 9112 3.2.1-3.2.4)
    assert exchange(server, b'GET ' + target + b' HTTP/1.1\r\nHost: x\r\n\r\n')[0] == 400


# ---------------------------------------------------------- RFC 9112 9.3, 9.6

@pytest.mark.parametrize('fields', [b'Connection: keep-alive, close\r\n',
                                    b'Connection: TE,close\r\nTE: trailers\r\n',
                                    b'Connection: keep-alive\r\nConnection: close\r\n'])
def test_connection_close_is_honoured_in_any_form(fields: bytes, server: FlagsServer) -> None:
    # Connection is a list of options (RFC 9110 7.6.1), and a list field may be
    # sent as several field lines (RFC 9110 5.3). "A server that receives a
    # "close" connection option MUST initiate closure of the connection after it
    # sends the final response to the request that contained the "close"
    # connection option."
    with connect(server) as conn:
        conn.send(b'GET /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n' + fields + b'\r\n')
        status, headers, _ = conn.response()
        assert (status, headers['connection']) == (200, 'close')
        assert conn.closed()


# ------------------------------------------------------------ RFC 9112 6, 7

def test_a_chunked_body_is_read_and_the_connection_serves_on(server: FlagsServer) -> None:
    # "A recipient MUST be able to parse the chunked transfer coding" (7.1),
    # chunk extensions (7.1.1) and a trailer section (7.1.2) included.
    with connect(server) as conn:
        conn.send(b'POST /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n'
                  b'Transfer-Encoding: chunked\r\n\r\n'
                  b'5\r\nhello\r\n'
                  b'1A ; name=value ;flag\r\n' + b'x' * 26 + b'\r\n'
                  b'0\r\nX-Trailer: yes\r\n\r\n' + GET_BR)
        status, headers, _ = conn.response()
        assert (status, headers['allow']) == (405, 'GET, HEAD')
        assert conn.response()[:1] == (200,)
    # a coding it cannot decode, with chunked last, is 501 (6.1); chunked twice,
    # on two lines of the list, is no framing at all (7: chunked only once)
    for codings, status in ((b'gzip, chunked', 501),
                            (b'chunked\r\nTransfer-Encoding: chunked', 400)):
        request = (b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ' + codings
                   + b'\r\n\r\n0\r\n\r\n')
        assert exchange(server, request)[0] == status


TE_PROBLEMS = [
    ('chunked not last', b'HTTP/1.1', b'Transfer-Encoding: chunked, gzip\r\n', b'', 400),
    ('no chunked', b'HTTP/1.1', b'Transfer-Encoding: gzip\r\n', b'', 400),
    ('HTTP/1.0', b'HTTP/1.0', b'Transfer-Encoding: chunked\r\n', b'0\r\n\r\n', 400),
    ('bad chunk size', b'HTTP/1.1', b'Transfer-Encoding: chunked\r\n', b'xyz\r\n\r\n', 400),
    ('chunk without its CRLF', b'HTTP/1.1', b'Transfer-Encoding: chunked\r\n',
     b'3\r\nabcdef\r\n0\r\n\r\n', 400),
    ('chunks over the cap', b'HTTP/1.1', b'Transfer-Encoding: chunked\r\n',
     b'%x\r\n' % (MAX_BODY + 1), 413),
]


@pytest.mark.parametrize(('version', 'fields', 'body', 'status'),
                         [case[1:] for case in TE_PROBLEMS], ids=[case[0] for case in TE_PROBLEMS])
def test_a_body_whose_length_cannot_be_known_is_refused_and_the_connection_closed(
        version: bytes, fields: bytes, body: bytes, status: int, server: FlagsServer) -> None:
    # "If a Transfer-Encoding header field is present in a request and the
    # chunked transfer coding is not the final encoding, ... the server MUST
    # respond with the 400 (Bad Request) status code and then close the
    # connection." (6.3) A Transfer-Encoding in HTTP/1.0 is faulty framing (6.1).
    with connect(server) as conn:
        conn.send(b'POST /flags/br/br.gif ' + version + b'\r\nHost: x\r\n' + fields + b'\r\n'
                  + body)
        assert conn.response()[0] == status
        assert conn.closed()


def test_transfer_encoding_wins_over_content_length_and_the_connection_closes(
        server: FlagsServer) -> None:
    # "... process such a request in accordance with the Transfer-Encoding alone.
    # Regardless, the server MUST close the connection after responding to such a
    # request to avoid the potential attacks." (6.3)
    with connect(server) as conn:
        conn.send(b'POST /flags/br/br.gif HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n'
                  b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
        status, headers, _ = conn.response()
        assert (status, headers['connection']) == (405, 'close')
        assert conn.closed()


# -------------------------------------------------------- RFC 9112 2.3, 9110 2.5

@pytest.mark.parametrize('version', [b'HTTP/2.0', b'HTTP/3.0', b'HTTP/0.9'])
def test_another_major_version_is_505(version: bytes, server: FlagsServer) -> None:
    with connect(server) as conn:
        conn.send(b'GET /flags/br/br.gif ' + version + b'\r\nHost: x\r\n\r\n')
        assert conn.response()[0] == 505
        assert conn.closed()


def test_a_higher_minor_version_is_served_as_http11(server: FlagsServer) -> None:
    # RFC 9110 2.5: a recipient treats a higher minor version as the highest it
    # conforms to: HTTP/1.2 keeps the connection open, as HTTP/1.1 does.
    with connect(server) as conn:
        conn.send(b'GET /flags/br/br.gif HTTP/1.2\r\nHost: x\r\n\r\n' + GET_BR)
        status, headers, _ = conn.response()
        assert (status, headers['connection']) == (200, 'keep-alive')
        assert conn.response()[0] == 200


# ------------------------------------------------------------ RFC 9110 6.6.1

@pytest.mark.parametrize('request_', [GET_BR, b'GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n',
                                      b'GET /flags/br/br.gif HTTP/1.1\r\n\r\n'],
                         ids=['200', '404', '400'])
def test_every_response_has_a_date(request_: bytes, server: FlagsServer) -> None:
    # "An origin server with a clock MUST generate a Date header field in all
    # 2xx (Successful), 3xx (Redirection), and 4xx (Client Error) responses"
    _, headers, _ = exchange(server, request_)
    date = email.utils.parsedate_to_datetime(headers['date'])
    assert headers['date'].endswith(' GMT')  # the IMF-fixdate form (RFC 9110 5.6.7)
    assert abs(date.timestamp() - time.time()) < 5


# --------------------------------------------------------- RFC 9110 9.1, 15.5.6

def test_405_lists_the_allowed_methods_and_an_unknown_method_is_501(
        server: FlagsServer) -> None:
    # "The origin server MUST generate an Allow header field in a 405 (Method
    # Not Allowed) response"; "An origin server that receives a request method
    # that is unrecognized or not implemented SHOULD respond with 501"
    for method in (b'POST', b'PUT', b'DELETE', b'OPTIONS'):
        status, headers, _ = exchange(server, method + b' /flags/br/br.gif HTTP/1.1\r\n'
                                                       b'Host: x\r\n\r\n')
        assert (status, headers['allow']) == (405, 'GET, HEAD')
    assert exchange(server, b'BREW /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n\r\n')[0] == 501


# ---------------------------------------------------------------- RFC 9112 3

def test_a_request_target_over_the_limit_is_414(server: FlagsServer) -> None:
    # "A server that receives a request-target longer than any URI it wishes to
    # parse MUST respond with a 414 (URI Too Long) status code"
    with connect(server) as conn:
        with contextlib.suppress(OSError):  # it may answer before reading it all
            conn.send(b'GET /' + b'a' * MAX_HEAD + b' HTTP/1.1\r\nHost: x\r\n\r\n')
        assert conn.response()[0] == 414
        assert conn.closed()


# ------------------------------------------------------------ RFC 9110 10.1.1

def test_expect_100_continue_gets_a_100_before_the_body_is_sent(server: FlagsServer) -> None:
    # "A server that receives a 100-continue expectation in an HTTP/1.1 request
    # ... MUST either send an immediate response with a final status code ... or
    # send an immediate 100 (Continue) response"
    with connect(server, timeout=2) as conn:
        conn.send(b'POST /flags/br/br.gif HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n'
                  b'Content-Length: 5\r\n\r\n')
        assert conn.response()[0] == 100  # without the body, which waits for it
        conn.send(b'hello' + GET_BR)
        assert conn.response()[0] == 405
        assert conn.response()[0] == 200
