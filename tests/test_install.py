"""The wheel works as a user gets it: built from this checkout, installed with
its dependencies into a fresh virtual environment, its commands run from a
folder that is not the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, assert_valid_gifs, free_port, saved_codes, servers_gone

from flags2.codes import country_codes
from flags2.servers import FlagsServer


def copy_checkout(dest: Path) -> None:
    """The files git tracks, as they are now: what a fresh clone would build.

    The wheel is built from this copy, as setuptools writes build/ and
    *.egg-info beside the sources it builds.
    """
    listing = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True,
                             check=True, text=True).stdout
    for name in filter(None, listing.split('\0')):
        if (ROOT / name).is_file():  # a tracked file deleted in the work tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}'
    return proc


@pytest.fixture(scope='module')
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin folder of a fresh venv with the wheel and its dependencies installed."""
    root = tmp_path_factory.mktemp('install')
    source = root / 'source'
    copy_checkout(source)
    wheels = root / 'wheels'
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', wheels, source],
        cwd=root)
    [wheel] = wheels.glob('flags2-*.whl')
    venv = root / 'venv'
    run([sys.executable, '-m', 'venv', venv], cwd=root)
    run([venv / 'bin' / 'python', '-m', 'pip', 'install', '-q', wheel], cwd=root)
    yield venv / 'bin'


@pytest.fixture
def user_env(venv_bin: Path) -> dict[str, str]:
    """A shell with the venv's commands first on PATH and nothing pointing at the checkout."""
    env = {name: value for name, value in os.environ.items()
           if name not in ('PYTHONPATH', 'VIRTUAL_ENV') and not name.startswith('FLAGS2_')}
    env['PATH'] = f'{venv_bin}{os.pathsep}{env.get("PATH", "")}'
    env['VIRTUAL_ENV'] = str(venv_bin.parent)
    return env


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder outside the checkout to run the commands in."""
    folder = tmp_path / 'elsewhere'
    folder.mkdir()
    assert ROOT not in folder.parents
    return folder


def test_installed_package_ships_the_country_codes(venv_bin: Path, user_env: dict[str, str],
                                                   elsewhere: Path) -> None:
    code = ('import flags2, flags2.codes; print(flags2.__file__); '
            'print(len(flags2.codes.country_codes()))')
    where, count = run([venv_bin / 'python', '-c', code], cwd=elsewhere,
                       env=user_env).stdout.split()
    assert Path(where).is_relative_to(venv_bin.parent)  # the installed copy, not the checkout
    assert count == '194'


def test_installed_threadpool_downloads_every_flag(venv_bin: Path, user_env: dict[str, str],
                                                   elsewhere: Path,
                                                   local_server: FlagsServer) -> None:
    result = run([venv_bin / 'flags2-threadpool', '-a', '-s', local_server.url],
                 cwd=elsewhere, env=user_env)
    assert '194 flags downloaded.' in result.stdout.splitlines()
    dest = elsewhere / 'downloaded'
    assert saved_codes(dest) == sorted(country_codes())
    assert_valid_gifs(dest)


def test_installed_asyncio_starts_and_stops_the_bundled_server(
        venv_bin: Path, user_env: dict[str, str], elsewhere: Path) -> None:
    port = free_port()
    env = {**user_env, 'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'}
    result = run([venv_bin / 'flags2-asyncio', '-s', 'DELAY', '-l', '20', '-a'],
                 cwd=elsewhere, env=env)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f'Started the bundled flags server for DELAY on port {port}')
    assert '20 flags downloaded.' in lines
    dest = elsewhere / 'downloaded'
    assert saved_codes(dest) == sorted(country_codes())[:20]
    assert_valid_gifs(dest)
    assert servers_gone(port)


def test_installed_flags3_names_flags_after_the_installed_servers_countries(
        venv_bin: Path, user_env: dict[str, str], elsewhere: Path) -> None:
    """flags3-asyncio asks the auto-started server for metadata.json, whose
    names come from the package data (flags2/countries.txt)."""
    port = free_port()
    env = {**user_env, 'FLAGS2_LOCAL_URL': f'http://127.0.0.1:{port}/flags'}
    result = run([venv_bin / 'flags3-asyncio', 'CI', 'KP', 'BR'], cwd=elsewhere, env=env)
    assert '3 flags downloaded.' in result.stdout.splitlines()
    names = sorted(p.name for p in (elsewhere / 'downloaded').iterdir())
    assert names == ['Brazil.gif', "Côte_d'Ivoire.gif", 'Korea,_North.gif']
    assert servers_gone(port)


@pytest.mark.parametrize('command', ['flags-server', 'flags2-compare',
                                     'flags2-asyncio-executor', 'flags2-sequential'])
def test_installed_tools_answer_help(command: str, venv_bin: Path, user_env: dict[str, str],
                                     elsewhere: Path) -> None:
    result = run([venv_bin / command, '--help'], cwd=elsewhere, env=user_env, timeout=60)
    assert result.stdout.startswith('usage: ')
