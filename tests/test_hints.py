"""The hints a run prints work for the reader in front of them: pasted as
printed, a hint to start the bundled server starts it (the script beside the
one they ran, the console script of an installed package), at the label's own
port and mode; a run the bundled server cannot help (REMOTE) is not told to
start it; --help says what the servers and the options do."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, run_variant, saved_codes, static_server
from flags2_compare import variant_script
from flags_server import DEFAULT_DELAY_MAX, DEFAULT_DELAY_MIN, DEFAULT_ERROR_RATE, flag_gif

from flags2.servers import MODE_WORDS, FlagsServer, stop_process

CONSOLE_SCRIPT = Path(sys.executable).parent / 'flags2-sequential'
HOW = [
    'file',  # python /path/to/flags2_sequential.py, from another folder
    pytest.param('console script', marks=pytest.mark.skipif(
        not CONSOLE_SCRIPT.is_file(), reason='flags2 is not installed in this venv')),
]


def run_as(how: str, *args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the sequential variant as a reader would: as a file, or its console script."""
    start = ([sys.executable, str(variant_script('sequential'))] if how == 'file'
             else [str(CONSOLE_SCRIPT)])
    proc = subprocess.run([*start, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    return proc.returncode, proc.stdout, proc.stderr


def serves(command: str, cwd: Path) -> str:
    """Run a hint's command as pasted in ``cwd``; its first line (the URL it serves)."""
    proc = subprocess.Popen(shlex.split(command), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()
    finally:
        stop_process(proc)


@pytest.mark.parametrize('how', HOW)
def test_a_server_that_cannot_start_names_a_command_that_starts_it(how: str,
                                                                   tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as squatter:  # bound, not listening: nothing answers, no bind
        squatter.bind(('127.0.0.1', port))
        status, _, err = run_as(how, '-s', 'DELAY', 'BR', cwd=tmp_path,
                                  env={'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'})
    assert status == 1
    match = re.fullmatch(r'\*\*\* Could not start the bundled flags server: .*'
                         r'start the server by hand: (.+)', err.strip())
    assert match, err
    command = match[1]
    assert command.endswith(f' --mode delay --port {port}')
    if how == 'console script':
        assert shlex.split(command)[0].endswith('flags-server'), command
    assert serves(command, tmp_path) == f'DELAY mode serving http://localhost:{port}/flags'


@pytest.mark.parametrize('how', HOW)
def test_no_answer_names_a_command_that_serves_the_url(how: str, tmp_path: Path) -> None:
    port = free_port()
    url = f'http://127.0.0.1:{port}/flags'
    status, _, err = run_as(how, '-s', url, 'BR', cwd=tmp_path, env={})
    assert status == 1
    prefix = '*** No server answered. Start the bundled one with: '
    assert err.splitlines()[-1].startswith(prefix), err
    command = err.splitlines()[-1].removeprefix(prefix)
    assert command.endswith(f' --mode local --port {port}')
    assert serves(command, tmp_path) == f'LOCAL mode serving http://localhost:{port}/flags'


def test_a_remote_run_is_not_told_to_start_the_bundled_server(tmp_path: Path) -> None:
    url = f'https://127.0.0.1:{free_port()}/flags'
    result = run_variant('asyncio', '-s', 'REMOTE', 'BR', cwd=tmp_path,
                         env={'FLAGS2_REMOTE_URL': url})
    assert result.returncode == 1
    assert 'errors: 1 connection refused' in result.lines
    assert result.stderr.splitlines()[-1] == f'*** No server answered at {url}.'
    assert 'flags_server' not in result.stderr



# ---------------------------------------------------- a server that is not ours

def not_ours_line(base_url: str, first_code: str, port: int) -> re.Pattern[str]:
    first = f'{base_url}/{first_code}/{first_code}.gif'
    return re.compile(re.escape(
        f'*** {base_url} does not answer like a flags server: every code got 404 Not Found '
        f'(the first: {first}). The bundled one serves http://127.0.0.1:{port}/flags once '
        'started with: ') + r'(.+ --mode local --port ' + str(port) + ')')


@pytest.mark.parametrize('variant', ['sequential', 'asyncio'])
def test_a_server_over_another_folder_is_not_taken_for_a_flags_server(
        variant: str, tmp_path: Path) -> None:
    """Was: '20 not found', exit status 0, no hint."""
    (tmp_path / 'www').mkdir()
    with static_server(tmp_path / 'www') as root:
        result = run_variant(variant, '-s', f'{root}/flags', '-o', str(tmp_path / 'out'),
                             cwd=tmp_path)
    port = int(root.rsplit(':', 1)[1])
    assert result.returncode == 1
    assert '20 not found.' in result.lines
    assert not any(line.startswith('Peak') for line in result.lines)
    match = not_ours_line(f'{root}/flags', 'bd', port).fullmatch(result.stderr.splitlines()[-1])
    assert match, result.stderr
    assert serves(match[1], tmp_path) == f'LOCAL mode serving http://localhost:{port}/flags'


def test_a_url_without_flags_is_not_taken_for_a_flags_server(local_server: FlagsServer,
                                                             tmp_path: Path) -> None:
    root = local_server.url.removesuffix('/flags')
    result = run_variant('threadpool', '-s', root, 'BR', 'CN', cwd=tmp_path)
    assert result.returncode == 1
    assert '2 not found.' in result.lines
    assert not_ours_line(root, 'br', local_server.port).fullmatch(
        result.stderr.splitlines()[-1]), result.stderr


def test_codes_no_country_has_are_not_a_sign(local_server: FlagsServer,
                                              tmp_path: Path) -> None:
    result = run_variant('sequential', '-s', local_server.url, 'ZZ', 'QQ', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '2 not found.' in result.lines
    assert '***' not in result.stderr


@pytest.mark.parametrize('variant', ['sequential', 'threadpool', 'asyncio'])
def test_a_static_server_over_a_folder_of_flags_still_works(variant: str,
                                                           tmp_path: Path) -> None:
    """As the book's own servers serve flags: no /stats, so no Peak line."""
    for cc in ('CN', 'IN', 'US'):
        folder = tmp_path / 'www' / 'flags' / cc.lower()
        folder.mkdir(parents=True)
        (folder / f'{cc.lower()}.gif').write_bytes(flag_gif(cc))
    with static_server(tmp_path / 'www') as root:
        result = run_variant(variant, '-s', f'{root}/flags', '-o', str(tmp_path / 'out'),
                             cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '3 flags downloaded.' in result.lines
    assert '17 not found.' in result.lines
    assert not any(line.startswith('Peak') for line in result.lines)
    assert '***' not in result.stderr
    assert saved_codes(tmp_path / 'out') == ['CN', 'IN', 'US']


# --------------------------------------------------------------------- --help

@pytest.fixture
def default_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    for label in ('LOCAL', 'DELAY', 'ERROR', 'REMOTE'):
        monkeypatch.delenv(f'FLAGS2_{label}_URL', raising=False)


def help_text(variant: str, tmp_path: Path) -> str:
    result = run_variant(variant, '--help', cwd=tmp_path, env={'COLUMNS': '80'})
    assert result.returncode == 0
    return ' '.join(result.stdout.split())


@pytest.mark.parametrize(('variant', 'cap'), [('sequential', 1), ('threadpool', 1000),
                                              ('asyncio', 1000)])
def test_help_says_what_the_options_do(variant: str, cap: int, tmp_path: Path) -> None:
    text = help_text(variant, tmp_path)
    assert f'at most {cap} in this script, and never more than the number of codes' in text
    assert 'only the first N codes of the sorted selection' in text
    assert '141 when a reader of the output went away' in text
    assert '2 for a usage error or a setting that cannot work' in text


@pytest.mark.usefixtures('default_servers')
def test_help_says_what_the_servers_are(tmp_path: Path) -> None:
    text = help_text('threadpool', tmp_path)
    assert ('LOCAL, DELAY and ERROR are the bundled flags server (flags_server.py), started '
            'for the run when nothing answers at its port, and stopped once no run uses it') in text
    assert f'DELAY (http://localhost:8001/flags) {MODE_WORDS["delay"]}' in text
    assert f'ERROR (http://localhost:8002/flags) {MODE_WORDS["error"]}' in text
    assert 'REMOTE (https://www.fluentpython.com/data/flags) is not bundled' in text
    assert 'FLAGS2_LOCAL_URL' in text


def test_help_words_match_the_servers_workload() -> None:
    assert f'{DEFAULT_DELAY_MIN} to {DEFAULT_DELAY_MAX} s' in MODE_WORDS['delay']
    assert f'{DEFAULT_ERROR_RATE:.0%} of the flags' in MODE_WORDS['error']
