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

from conftest import ROOT, VARIANTS, free_port, run_variant, server_processes, servers_gone, start

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
                               'it stops once no run uses it.')
    assert '3 flags downloaded.' in result.lines
    assert servers_gone(port)


@pytest.mark.parametrize('together', [VARIANTS, ('threadpool',) * 3], ids=['trio', 'same'])
def test_runs_started_together_share_one_server(together: tuple[str, ...],
                                                tmp_path: Path) -> None:
    """Each found the port free and started a server; was: all but one failed with
    "Could not start the bundled flags server... Address already in use"."""
    port = free_port()
    env = {'FLAGS2_LOCAL_URL': f'http://127.0.0.1:{port}/flags'}
    folders = [tmp_path / str(n) for n in range(len(together))]
    procs = [start(variant, '-a', '-o', str(folder), cwd=tmp_path, env=env)
             for variant, folder in zip(together, folders, strict=True)]
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert '194 flags downloaded.' in out.splitlines()
    started = [out for out, _ in results if out.startswith('Started the bundled flags server')]
    assert len(started) == 1
    assert servers_gone(port)


def test_a_server_outlives_the_run_that_started_it_while_another_uses_it(
        tmp_path: Path) -> None:
    """Was: the second run lost the server when the first ended, 'errors: 10
    connection refused'."""
    port = free_port()
    env = {'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'}
    first = start('sequential', '-s', 'DELAY', '-l', '4', '-o', str(tmp_path / '1'),
                  cwd=tmp_path, env=env)
    deadline = time.monotonic() + 30
    while not port_answers('127.0.0.1', port):  # the first run's server is up
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = start('sequential', '-s', 'DELAY', '-l', '12', '-o', str(tmp_path / '2'),
                   cwd=tmp_path, env=env)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert out.startswith('Started the bundled flags server for DELAY')
    assert second.poll() is None  # about 6 s of delays: it runs on without the first
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert '12 flags downloaded.' in out.splitlines()
    assert not out.startswith('Started')
    assert servers_gone(port)


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
    assert servers_gone(port)  # its stdin closed: gone once it lingered


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


def assert_lingers_then_leaves_nothing(server: FlagsServer) -> None:
    """The server started for a block serves on a while (another run may use
    it), then exits; it is reaped, not left a zombie, and our copy of its log
    is closed at once."""
    assert server.log.closed
    assert port_answers('127.0.0.1', server.port)  # LINGER s from now, at least
    assert servers_gone(server.port)
    deadline = time.monotonic() + 5
    while server.proc.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the reaper thread waits for it
    assert server.proc.returncode == 0
    assert not Path(f'/proc/{server.proc.pid}').exists()


def test_bundled_server_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    with bundled_server(f'http://127.0.0.1:{port}/flags', 'local') as server:
        assert server is not None
        assert port_answers('127.0.0.1', port)
        assert server_processes(port) == [server.proc.pid]
    assert_lingers_then_leaves_nothing(server)


def test_bundled_server_leaves_nothing_behind_when_the_block_raises() -> None:
    port = free_port()
    with pytest.raises(RuntimeError), \
            bundled_server(f'http://127.0.0.1:{port}/flags', 'local') as server:
        assert server is not None
        raise RuntimeError('the run failed')
    assert server is not None
    assert_lingers_then_leaves_nothing(server)


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
