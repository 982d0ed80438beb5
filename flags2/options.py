"""Checking the command line and the settings it runs with: every bad value
is reported in one line, with exit status 2, before anything is fetched.

There is one path for that: ``ArgumentParser.refuse``. Checks that argparse
cannot make (a server label, a folder that must be writable) raise
``UsageError``: a value on the command line, shown with the usage. A
setting in the environment that cannot work (``FLAGS2_LOCAL_URL`` and
friends, the proxy variables httpx2 reads) raises ``SettingError``, which
names the variable; the command line was fine, so no usage follows it.
The environment's server URLs go through the same checks as ``-s``.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import re
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import httpx2

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


# Where a label's URL may come from instead of the script's default.
SERVER_URL_SETTING = 'FLAGS2_{}_URL'
# The proxy schemes httpx2 takes from the environment (through urllib's
# getproxies: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, any case), and those it can use.
PROXY_KEYS = ('http', 'https', 'all')
PROXY_SCHEMES = ('http', 'https', 'socks5', 'socks5h')
SOCKS_SCHEMES = ('socks5', 'socks5h')


class UsageError(Exception):
    """A command line that cannot run; the message says which value and why."""


class SettingError(UsageError):
    """A setting of the environment that cannot work: its name, its value, why."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f'{name}={printable_url(value)!r} cannot work: {reason}')
        self.name, self.value, self.reason = name, value, reason


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with the scripts' one-line usage errors.

    They go out through ``exit``, which writes to stderr only if it is open:
    a closed stderr must not turn a usage error into a traceback.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f'*** Usage error: {message}\n{self.format_usage()}')

    def refuse(self, exc: UsageError) -> NoReturn:
        """Exit 2 for ``exc``: a setting in one line, a command-line value with the usage."""
        if isinstance(exc, SettingError):
            self.exit(EXIT_USAGE, f'*** {exc}\n')
        self.error(str(exc))


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


def server_urls(defaults: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Each label's base URL: its ``FLAGS2_<LABEL>_URL`` if set and not empty, else
    its default. ``resolve_server`` checks the one a run uses."""
    return {label: environ.get(SERVER_URL_SETTING.format(label)) or url
            for label, url in defaults.items()}


def resolve_server(server: str, servers: Mapping[str, str]) -> tuple[str, str]:
    """(label, base URL) for a label of ``servers`` or a URL given with -s.

    A URL's label is its printable form: the password masked. A label's URL
    passes the same checks as one given with -s; a default always does, so
    a problem is the environment's, and the SettingError names the variable.
    """
    label = server.upper()
    if label in servers:
        url = servers[label]
        if problem := base_url_problem(url):
            raise SettingError(SERVER_URL_SETTING.format(label), url, f'the URL {problem}')
        return label, url.rstrip('/')
    if '://' not in server:
        raise UsageError(f'unknown server {printable_url(server)!r}: use one of '
                         f'{", ".join(servers)} or an http(s) URL')
    check_base_url(server)
    return printable_url(server), server.rstrip('/')


def check_base_url(url: str) -> None:
    """Refuse what cannot be a base URL of flags: the problem goes in a UsageError."""
    if problem := base_url_problem(url):
        raise UsageError(f'server URL {printable_url(url)!r} {problem}')


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a base URL of flags ('has no host'...), or None.

    Checked here rather than left to the HTTP client, which would send a query
    or a fragment, or a quietly re-escaped path, and report every flag "not
    found" instead of one clear error.
    """
    if problem := url_problem(url):
        return problem
    if '?' in url or '#' in url:
        return 'has a query or fragment; a base URL ends with its path'
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched, in words that follow it ('has no host'); None if it can.

    The checks of a base URL but its query, and of every URL a run's clients
    send, so a redirect's too: left to the HTTP stack, a host name no resolver
    takes (an empty label, one over 63 characters) ends in a UnicodeError,
    and a port over 65535 in an OverflowError, or taken modulo 65536.
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
    if port and not port_number(port):
        return f'has a bad port: {port!r} (a number from 1 to 65535)'
    return None


def port_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def check_proxy_settings(environ: Mapping[str, str]) -> None:
    """Refuse a proxy setting httpx2 would fail on: raise a SettingError naming it.

    httpx2 reads them when a client is made (a socks5:// proxy without the
    socksio package, a scheme it has no transport for, a URL it cannot
    parse) or at the first request through them (a port past 65535): a
    traceback, or every flag failing, instead of one line before the run.
    Like httpx2, the values come from urllib's ``getproxies`` (the
    environment, any case; the system's settings on macOS and Windows), a
    value without ``://`` is an http:// one, and ``NO_PROXY=*`` turns them
    all off. Every one is checked, not only the one this run's URL would use:
    httpx2 builds a transport for each.
    """
    proxies = urllib.request.getproxies()
    if '*' in (host.strip() for host in proxies.get('no', '').split(',')):
        return
    for key in PROXY_KEYS:
        if value := proxies.get(key):
            url = value if '://' in value else f'http://{value}'
            if problem := proxy_problem(url):
                raise SettingError(proxy_setting_name(key, value, environ), value, problem)


def proxy_problem(url: str) -> str | None:
    """Why httpx2 cannot use ``url`` as a proxy, or None."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        return f'not a URL ({exc})'
    if parsed.scheme not in PROXY_SCHEMES:
        return 'a proxy URL starts with http://, https://, socks5:// or socks5h://'
    if parsed.scheme in SOCKS_SCHEMES and importlib.util.find_spec('socksio') is None:
        return "a SOCKS proxy needs the socksio package (pip install 'httpx2[socks]')"
    if not parsed.host:
        return 'the proxy URL has no host'
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f'the proxy port {parsed.port} is not from 1 to 65535'
    return None


def proxy_setting_name(key: str, value: str, environ: Mapping[str, str]) -> str:
    """The variable that gave httpx2 its ``key`` proxy: lower case first, as urllib reads."""
    names = sorted((name for name, setting in environ.items()
                    if name.lower() == f'{key}_proxy' and setting == value),
                   key=lambda name: name != name.lower())
    return names[0] if names else f"the system's {key} proxy"


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


def dest_folder(text: str) -> Path:
    """The -o folder as given: an empty one would quietly mean the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("'' names no folder (-o . is the current folder)")
    return Path(text)


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
