"""A label served by the bundled server works with nothing started by hand."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, VARIANTS, free_port, run_variant, server_processes

from flags2.servers import (
    FlagsServer,
    bundled_server,
    port_answers,
    python_command,
    running_server,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.skipif(not Path('/proc').is_dir(),
                                reason='finds leftover processes through /proc')


@pytest.mark.parametrize('variant', VARIANTS)
def test_starts_and_stops_the_bundled_server(variant: str, tmp_path: Path) -> None:
    port = free_port()
    env = {'FLAGS2_LOCAL_URL': f'http://127.0.0.1:{port}/flags'}
    result = run_variant(variant, '-l', '3', '-a', cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.lines[0] == (f'Started the bundled flags server for LOCAL on port {port}; '
                               'it stops when this run ends.')
    assert '3 flags downloaded.' in result.lines
    assert not port_answers('127.0.0.1', port)
    assert server_processes(port) == []


def test_uses_a_server_that_already_answers(local_server: FlagsServer, tmp_path: Path) -> None:
    env = {'FLAGS2_LOCAL_URL': local_server.url}
    result = run_variant('asyncio', '-l', '2', '-a', cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert not any(line.startswith('Started') for line in result.lines)
    assert '2 flags downloaded.' in result.lines


def test_server_exits_when_its_client_is_killed(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, 'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'}
    client = subprocess.Popen(
        [sys.executable, str(ROOT / 'flags2_sequential.py'), '-s', 'DELAY', '-a'],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert client.stdout is not None
    assert client.stdout.readline().startswith('Started the bundled flags server')
    assert server_processes(port)
    client.send_signal(signal.SIGKILL)  # no chance to clean up
    client.communicate(timeout=5)
    deadline = time.monotonic() + 5
    while server_processes(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_processes(port) == []


@pytest.mark.parametrize('sigterm_first', [True, False], ids=['SIGTERM then EOF', 'EOF only'])
def test_server_tied_to_stdin_exits_cleanly_however_it_is_stopped(sigterm_first: bool) -> None:
    # A run's end closes the server's stdin and sends SIGTERM; either may act
    # first. The server must exit 0 at once, not stall a second in shutdown and
    # abort with "Fatal Python error" because its stdin watcher held a lock.
    server = start_server('local', tied=True)
    proc = server.proc
    try:
        if sigterm_first:
            proc.terminate()
            time.sleep(0.05)  # EOF arrives while the server is shutting down
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=5)
        err = server.log_text()
    finally:
        stop_server(server)
    assert proc.returncode == 0, err
    assert err == ''


def test_bundled_server_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    with bundled_server(f'http://127.0.0.1:{port}/flags', 'local') as server:
        assert server is not None
        assert port_answers('127.0.0.1', port)
        assert server_processes(port) == [server.proc.pid]
    assert not port_answers('127.0.0.1', port)
    assert server_processes(port) == []


def test_bundled_server_leaves_nothing_behind_when_the_block_raises() -> None:
    port = free_port()
    with pytest.raises(RuntimeError), \
            bundled_server(f'http://127.0.0.1:{port}/flags', 'local') as server:
        assert server is not None
        raise RuntimeError('the run failed')
    assert not port_answers('127.0.0.1', port)
    assert server_processes(port) == []


def test_running_server_leaves_nothing_behind() -> None:
    with running_server('delay') as server:  # port 0: the kernel picks one
        assert port_answers('127.0.0.1', server.port)
    assert not port_answers('127.0.0.1', server.port)
    assert server.proc.returncode is not None  # exited and reaped
    assert not Path(f'/proc/{server.proc.pid}').exists()


def test_bundled_server_starts_nothing_when_a_server_answers(local_server: FlagsServer) -> None:
    with bundled_server(local_server.url, 'local') as server:
        assert server is None
    assert port_answers('127.0.0.1', local_server.port)  # left alone


@pytest.mark.parametrize('variant', VARIANTS)
def test_a_server_that_cannot_start_is_one_line_with_its_cause(variant: str,
                                                              tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as squatter:  # holds the port without listening: nothing answers
        squatter.bind(('127.0.0.1', port))
        env = {'FLAGS2_LOCAL_URL': f'http://127.0.0.1:{port}/flags'}
        result = run_variant(variant, 'BR', cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        '*** Could not start the bundled flags server: flags_server: cannot listen: '
        f'[Errno 98] Address already in use. Free port {port}, or start the server by '
        f'hand: {python_command()} {shlex.quote(str(ROOT / "flags_server.py"))} --mode local '
        f'--port {port}']
    assert result.stdout == ''
    assert server_processes(port) == []
    assert list((tmp_path / 'downloaded').iterdir()) == []  # made when -o was checked
