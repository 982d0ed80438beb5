"""Fixtures: the real bundled server on loopback, on ephemeral ports, and a
way to run each variant as a user does, in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flags2_common import stop_process

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ('sequential', 'threadpool', 'asyncio')
CONCURRENT_VARIANTS = ('threadpool', 'asyncio')


@dataclass
class FlagsServer:
    """One flags_server.py process serving one mode on an ephemeral port."""

    proc: subprocess.Popen[str]
    port: int
    mode: str

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}/flags'

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f'http://127.0.0.1:{self.port}{path}', timeout=5) as r:
            return json.load(r)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json('/stats')
        return data

    def reset(self) -> None:
        urllib.request.urlopen(f'http://127.0.0.1:{self.port}/stats/reset', timeout=5).close()


def launch_server(mode: str, *options: str, bind: str | None = '127.0.0.1',
                  stdin: int | None = None) -> subprocess.Popen[str]:
    """Start flags_server.py on an ephemeral port (``bind`` None: its default)."""
    bind_args = ['--bind', bind] if bind is not None else []
    return subprocess.Popen(
        [sys.executable, str(ROOT / 'flags_server.py'), '--mode', mode, '--port', '0',
         *bind_args, *options],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ready_server(proc: subprocess.Popen[str], mode: str) -> FlagsServer:
    """Wait until a launched server says it is ready; its first line names its port."""
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "DELAY mode serving http://127.0.0.1:PORT/flags"
    ready = proc.stdout.readline()
    if not ready.startswith('Ready'):
        proc.kill()
        raise RuntimeError(f'server did not start: {first!r} {proc.communicate()}')
    port = int(first.rsplit(':', 1)[1].split('/')[0])
    return FlagsServer(proc, port, mode)


def start_server(mode: str, *options: str) -> FlagsServer:
    return ready_server(launch_server(mode, *options), mode)


def stop_server(server: FlagsServer) -> None:
    stop_process(server.proc)


@pytest.fixture(scope='session')
def server_factory() -> Iterator[Any]:
    started: list[FlagsServer] = []

    def factory(mode: str, *options: str) -> FlagsServer:
        server = start_server(mode, *options)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


@pytest.fixture(scope='session')
def local_server(server_factory: Any) -> FlagsServer:
    server: FlagsServer = server_factory('local')
    return server


@pytest.fixture(scope='session')
def delay_server(server_factory: Any) -> FlagsServer:
    """Short delays, so the suite stays fast."""
    server: FlagsServer = server_factory('delay', '--delay-min', '0.01', '--delay-max', '0.05')
    return server


@pytest.fixture(scope='session')
def error_server(server_factory: Any) -> FlagsServer:
    server: FlagsServer = server_factory('error', '--delay-min', '0.01', '--delay-max', '0.03')
    return server


@pytest.fixture(scope='session')
def slow_server(server_factory: Any) -> FlagsServer:
    """Delays long enough that every request of a run overlaps at the server,
    even with 194 threads starting on a busy machine."""
    server: FlagsServer = server_factory('delay', '--delay-min', '1.0', '--delay-max', '1.1')
    return server


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def run_variant(variant: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 60) -> Result:
    proc = subprocess.run(
        [sys.executable, str(ROOT / f'flags2_{variant}.py'), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr)


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick from the ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port: int = sock.getsockname()[1]
    return port
