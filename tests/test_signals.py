"""SIGTERM ends a run as Ctrl-C does, a second signal changes nothing, and at
any instant of an interruption the report counts exactly the flags on disk."""

from __future__ import annotations

import importlib
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EVERY_VARIANT, STOP_GOAL, assert_valid_gifs, free_port, servers_gone, start
from flags2_common import main
from flags2_compare import variant_script

from flags2.runs import STOP_SIGNALS
from flags2.servers import FlagsServer

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='sends POSIX signals')

LIMIT = 2 * STOP_GOAL  # twice the goal's margin: CI runs loaded


def wait_for(proc: subprocess.Popen[str], dest: Path) -> None:
    """Until the first flag is on disk."""
    deadline = time.monotonic() + 15
    while not any(dest.glob('*.gif')):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, 'the run never got going'
        time.sleep(0.005)


def finish(proc: subprocess.Popen[str], t0: float) -> tuple[str, str, float]:
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return out, err, time.perf_counter() - t0


def assert_count_matches_files(out: str, err: str, dest: Path) -> int:
    """The report's count is the number of flags on disk; no temporary file, no traceback."""
    assert 'Traceback' not in err, err
    files = sorted(dest.iterdir()) if dest.exists() else []
    assert [f.name for f in files if f.suffix != '.gif'] == []
    if files:
        assert_valid_gifs(dest)
    match = re.search(r'^(\d+) flags? downloaded\.$', out, re.MULTILINE)
    assert match, out
    assert int(match[1]) == len(files), (out, [f.name for f in files])
    return len(files)


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='finds leftover processes in /proc')
@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_sigterm_ends_a_run_like_ctrl_c(variant: str, tmp_path: Path) -> None:
    port = free_port()
    env = {'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'}
    dest = tmp_path / 'flags'
    # -m 20: flags3 saves its first flag once every flag request has gone (~5 s)
    proc = start(variant, '-s', 'DELAY', '-a', '-m', '20', '-o', str(dest), cwd=tmp_path,
                 env=env)
    wait_for(proc, dest)
    proc.send_signal(signal.SIGTERM)
    out, err, seconds = finish(proc, time.perf_counter())
    assert proc.returncode == 143, (out, err)
    assert seconds < LIMIT, f'took {seconds:.2f} s to stop'
    lines = out.splitlines()
    assert lines[0].startswith('Started the bundled flags server for DELAY')
    done = next(line for line in lines if line.startswith('Interrupted by SIGTERM: '))
    assert done.endswith(' of 194 codes done, the rest cancelled.')
    assert_count_matches_files(out, err, dest)
    assert servers_gone(port)


@pytest.mark.parametrize('second', ['SIGINT', 'SIGTERM'])
@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_a_second_signal_a_millisecond_later_changes_nothing(
        variant: str, second: str, local_server: FlagsServer, tmp_path: Path) -> None:
    for attempt in range(3):
        dest = tmp_path / f'flags{attempt}'
        proc = start(variant, '-m', '50', '-e', '-s', local_server.url, '-o', str(dest),
                     cwd=tmp_path)
        wait_for(proc, dest)
        proc.send_signal(signal.SIGINT)
        t0 = time.perf_counter()
        time.sleep(0.001)
        proc.send_signal(getattr(signal, second))
        out, err, seconds = finish(proc, t0)
        assert proc.returncode == 130, (out, err)  # the first signal decides
        assert seconds < LIMIT
        assert 'Interrupted by Ctrl-C: ' in out, out
        assert_count_matches_files(out, err, dest)


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_files_match_the_count_whenever_the_signal_comes(
        variant: str, local_server: FlagsServer, tmp_path: Path) -> None:
    """A fast run, a signal at a random instant after the first flag: often in a
    save or a count, sometimes after the last one."""
    rng = random.Random(f'instants-{variant}')
    for attempt in range(4):
        dest = tmp_path / f'flags{attempt}'
        proc = start(variant, '-m', '20', '-a', '-s', local_server.url, '-o', str(dest),
                     cwd=tmp_path)
        wait_for(proc, dest)
        time.sleep(rng.uniform(0, 0.3))
        signum = rng.choice([signal.SIGINT, signal.SIGTERM])
        proc.send_signal(signum)
        out, err, _ = finish(proc, time.perf_counter())
        assert proc.returncode in (0, 128 + signum), (out, err)  # 0: it ended first
        assert_count_matches_files(out, err, dest)


@pytest.mark.parametrize('variant', EVERY_VARIANT)
def test_main_in_process_gives_back_the_signal_handlers(
        variant: str, local_server: FlagsServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Called in-process (a test, a notebook), main leaves the caller's handlers as
    it found them: its own would stop a run that is over at the caller's next Ctrl-C."""
    module = importlib.import_module(variant_script(variant).stem)

    def callers(signum: int, frame: object) -> None:
        raise AssertionError('no signal is sent')

    previous = {signum: signal.signal(signum, callers) for signum in STOP_SIGNALS}
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(module.download_many, module.DEFAULT_CONCUR_REQ, module.MAX_CONCUR_REQ,
                 ['-s', local_server.url, '-o', str(tmp_path), 'BR'])
        left = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert exit_info.value.code == 0, capsys.readouterr()
    assert left == dict.fromkeys(STOP_SIGNALS, callers), f'still installed: {left}'
