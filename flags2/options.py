"""Checking the command line: every bad value is a usage error, reported in
one line and the usage, with exit status 2, before anything is fetched.

There is one path for that: ``ArgumentParser.error``. Checks that argparse
cannot make (a server label, a folder that must be writable) raise
``UsageError``, and the caller hands its message to ``parser.error``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

EXIT_USAGE = 2


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


def resolve_server(server: str, servers: Mapping[str, str]) -> tuple[str, str]:
    """(label, base URL) for a label of ``servers`` or a URL given with -s."""
    label = server.upper()
    if label in servers:
        return label, servers[label]
    if '://' not in server:
        raise UsageError(f'unknown server {server!r}: use one of '
                         f'{", ".join(servers)} or an http(s) URL')
    parts = urlsplit(server)
    if parts.scheme not in ('http', 'https'):
        raise UsageError(f'server URL {server!r} must start with http:// or https://')
    try:
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise UsageError(f'server URL {server!r} has a bad port') from None
    if not parts.hostname:
        raise UsageError(f'server URL {server!r} has no host')
    return server, server.rstrip('/')


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
