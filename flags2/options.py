"""Checking the command line: every bad value is a usage error, reported in
one line and the usage, with exit status 2, before anything is fetched.

There is one path for that: ``ArgumentParser.error``. Checks that argparse
cannot make (a server label, a folder that must be writable) raise
``UsageError``, and the caller hands its message to ``parser.error``.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2
# The longest --timeout every variant can honour, with room to spare: socket
# timeouts and threading.TIMEOUT_MAX overflow past about 9.2e9 s.
MAX_TIMEOUT = 24 * 60 * 60.0

# RFC 3986: what a URL may hold unescaped, and the parts of its authority.
URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
BAD_ESCAPE = re.compile(r'%(?![0-9A-Fa-f]{2})')
AUTHORITY = re.compile(r'(?:(?P<userinfo>[^@]*)@)?(?P<host>\[[^\]]*\]|[^:\[\]]*)'
                       r'(?::(?P<port>[^:]*))?')
REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")


class UsageError(Exception):
    """A command line that cannot run; the message says which value and why."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with the scripts' one-line usage errors."""

    def error(self, message: str) -> NoReturn:
        print(f'*** Usage error: {message}', file=sys.stderr)
        self.print_usage(sys.stderr)
        sys.exit(EXIT_USAGE)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is below 1')
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0 < value < float('inf'):
        raise argparse.ArgumentTypeError(f'{text!r} is not a positive number of seconds')
    return value


def timeout_seconds(text: str) -> float:
    """A positive number of seconds no variant's clock or socket overflows on."""
    value = positive_float(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f'{text!r} is over the maximum of {MAX_TIMEOUT:.0f} seconds (1 day)')
    return value


def resolve_server(server: str, servers: Mapping[str, str]) -> tuple[str, str]:
    """(label, base URL) for a label of ``servers`` or a URL given with -s.

    A URL's label is its printable form: the password masked.
    """
    label = server.upper()
    if label in servers:
        return label, servers[label]
    if '://' not in server:
        raise UsageError(f'unknown server {printable_url(server)!r}: use one of '
                         f'{", ".join(servers)} or an http(s) URL')
    check_base_url(server)
    return printable_url(server), server.rstrip('/')


def check_base_url(url: str) -> None:
    """Refuse what cannot be a base URL of flags: the problem goes in a UsageError.

    Checked here rather than left to the HTTP client, which would send a query
    or a fragment, or a quietly re-escaped path, and report every flag "not
    found" instead of one clear error.
    """
    shown = printable_url(url)
    if problem := url_problem(url):
        raise UsageError(f'server URL {shown!r} {problem}')
    if '?' in url or '#' in url:
        raise UsageError(f'server URL {shown!r} has a query or fragment; '
                         'a base URL ends with its path')


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched, in words that follow it ('has no host'); None if it can.

    The checks of a base URL, and of every URL a run's clients send, so a
    redirect's too: left to the HTTP stack, a host name no resolver takes
    (an empty label, one over 63 characters) ends in a UnicodeError, and a
    port over 65535 in an OverflowError, or taken modulo 65536.
    """
    scheme, _, rest = url.partition('://')
    if scheme.lower() not in ('http', 'https'):
        return 'must start with http:// or https://'
    if bad := next((c for c in url if not URL_CHARS.fullmatch(c)), None):
        return f'has {bad!r}, which a URL cannot hold unescaped'
    if BAD_ESCAPE.search(url):
        return 'has a % not followed by two hex digits'
    authority = re.split(r'[/?#]', rest, maxsplit=1)[0]
    if authority.count('@') > 1:
        return 'has more than one @: write an @ in a user name or password as %40'
    parts = AUTHORITY.fullmatch(authority)
    if parts is None:
        return ('has a bad host: write an IPv6 address in brackets, like '
                'http://[::1]:8000/flags')
    host, port = parts['host'], parts['port']
    if not host:
        return 'has no host'
    if host.startswith('['):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f'has a bad IPv6 address: {host}'
    elif not REG_NAME.fullmatch(host):
        return f'has a bad host: {host!r}'
    elif not all(0 < len(label) < 64 for label in host.removesuffix('.').split('.')):
        return 'has a bad host name: a part between dots is empty or over 63 characters'
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f'has a bad port: {port!r} (a number from 1 to 65535)'
    return None


def printable_url(url: str) -> str:
    """``url`` with its password masked: safe for any message or report.

    Works on malformed URLs too (it only splits text), since a usage error
    shows the very URL that failed to parse.
    """
    scheme, sep, rest = url.partition('://')
    if not sep:  # 'user:pw@host' is no URL, but its password is still one
        scheme, rest = '', url
    authority = re.split(r'[/?#]', rest, maxsplit=1)[0]
    userinfo, _at, hostport = authority.rpartition('@')
    user, colon, _ = userinfo.partition(':')
    if not colon:
        return url
    return f'{scheme}{sep}{user}:***@{hostport}{rest[len(authority):]}'


def check_dest(dest: Path) -> None:
    """Make sure flags can be saved in ``dest`` (created if missing)."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f'destination {str(dest)!r} is a file, not a folder')
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dest):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f'cannot write to destination {str(dest)!r}: {reason}') from None
