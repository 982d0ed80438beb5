"""Ctrl-C: every variant stops within a second, reports what it did, exits 130,
and leaves nothing half-done behind."""

from __future__ import annotations

import gc
import importlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    EVERY_VARIANT,
    STOP_GOAL,
    assert_valid_gifs,
    free_port,
    servers_gone,
    start,
)
from flags2_compare import variant_script
from flags_server import Workload

from flags2.codes import country_codes
from flags2.runs import Run
from flags2.servers import FlagsServer

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='sends SIGINT')

LIMIT = 2 * STOP_GOAL  # what the tests allow: a loaded CI machine gets twice the margin

STALL_RATE = 0.5
STALLING = Workload('delay', error_rate=STALL_RATE, fault_kind='stall')
# Start at a code that answers, so even the sequential script finishes one
# download before it meets a stalled one.
FIRST_OK = next(i for i, cc in enumerate(country_codes()) if not STALLING.fails(cc))
CODES = list(country_codes()[FIRST_OK:])


@pytest.fixture(scope='module')
def stalling_server(server_factory: Callable[..., FlagsServer]) -> FlagsServer:
    """Half the flags come after a short delay; the other half never come."""
    return server_factory('delay', '--delay-min', '0.05', '--delay-max', '0.1',
                          '--fault', 'stall', '--fault-rate', str(STALL_RATE))


def statuses(port: int) -> dict[str, int]:
    """Requests the server has answered so far, by status ('0': stalled)."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/stats', timeout=1) as resp:
        requests: dict[str, int] = json.load(resp)['requests']
    return requests


def interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> float:
    """Send SIGINT once ``ready()``; return the seconds the process took to exit."""
    deadline = time.monotonic() + 15
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, 'the run never got going'
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    t0 = time.perf_counter()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return time.perf_counter() - t0


def assert_clean_interrupt(proc: subprocess.Popen[str], seconds: float, total: int,
                           dest: Path) -> list[str]:
    """Exit 130 within LIMIT, a full report with the interrupted line, no traceback,
    and exactly the reported flags in ``dest``, each one complete."""
    out, err = proc.communicate()
    lines = out.splitlines()
    assert proc.returncode == 130, (out, err)
    assert seconds < LIMIT, f'took {seconds:.2f} s to stop'
    assert 'Traceback' not in err
    saved = sorted(dest.iterdir()) if dest.exists() else []
    if saved:
        assert_valid_gifs(dest)  # only *.gif files (no temporary ones), each one decodes
    done = next(line for line in lines if line.startswith('Interrupted by Ctrl-C: '))
    assert done.endswith(f' of {total} codes done, the rest cancelled.')
    downloaded = len(saved)
    assert f'{downloaded} flag{"" if downloaded == 1 else "s"} downloaded.' in lines
    assert lines[-1].startswith('Elapsed time: ')
    return lines


# flags3 saves a flag only after its second request: with half the requests
# stalled, its slots fill with stalled flag requests before any flag is saved.
# Its Ctrl-C is tested with the auto-started server and with SIGTERM.
@pytest.mark.parametrize('protocol', [[], ['--http2']], ids=['http1.1', 'http2'])
@pytest.mark.parametrize('variant', [v for v in EVERY_VARIANT if v != 'flags3'])
def test_ctrl_c_with_downloads_stuck_in_reads(variant: str, protocol: list[str],
                                              stalling_server: FlagsServer,
                                              tmp_path: Path) -> None:
    """Over HTTP/2 the stuck requests are streams of one connection, each
    cancelled on its own."""
    stalling_server.reset()
    dest = tmp_path / 'flags'
    proc = start(variant, '-m', '20', '--timeout', '30', '-s', stalling_server.url,
                 '-o', str(dest), *protocol, *CODES, cwd=tmp_path)

    def some_done_some_stuck() -> bool:
        return any(dest.glob('*.gif')) and statuses(stalling_server.port).get('0', 0) >= 1

    seconds = interrupt_when(proc, some_done_some_stuck)
    lines = assert_clean_interrupt(proc, seconds, len(CODES), dest)
    assert not any('error' in line for line in lines)  # what Ctrl-C cut short is no error


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='finds leftover processes in /proc')
@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_ctrl_c_stops_the_auto_started_server(variant: str, tmp_path: Path) -> None:
    port = free_port()
    env = {'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'}
    dest = tmp_path / 'flags'
    # -m 20: flags3 saves its first flag once every flag request has gone (~5 s)
    proc = start(variant, '-s', 'DELAY', '-a', '-m', '20', '-o', str(dest), cwd=tmp_path,
                 env=env)
    seconds = interrupt_when(proc, lambda: any(dest.glob('*.gif')))
    lines = assert_clean_interrupt(proc, seconds, 194, dest)
    assert lines[0].startswith('Started the bundled flags server for DELAY')
    assert servers_gone(port)


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_run_stopped_before_its_downloads_start_fetches_nothing_and_warns_nothing(
        variant: str, local_server: FlagsServer, tmp_path: Path) -> None:
    """Ctrl-C while the bundled server starts: download_many still runs, and
    ends at once. (A download task cancelled before its first step used to
    leave its coroutine never awaited: a RuntimeWarning on stderr.)"""
    module = importlib.import_module(variant_script(variant).stem)
    local_server.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        counter: Counter[str] = Counter()
        with Run(tmp_path, 5.0, base_url=local_server.url) as run:
            run.stop(signal.SIGINT)
            with run.downloading():  # as main calls it
                counter = module.download_many(CODES, local_server.url, False, 5)
        gc.collect()  # the warning comes when the coroutine is collected
    assert counter == Counter()
    assert run.saved == 0 and list(tmp_path.iterdir()) == []
    assert local_server.stats()['requests'] == {}
    assert [str(w.message) for w in caught] == []
