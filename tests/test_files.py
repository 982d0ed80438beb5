"""A saved flag gets the mode the umask gives any new file, in every variant,
and still replaces an old flag atomically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VARIANTS
from flags2_compare import variant_script

from flags2.servers import FlagsServer

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='POSIX file modes')

CODES = ('BR', 'CN')


def run_with_umask(variant: str, umask: int, server: FlagsServer, dest: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(variant_script(variant)), '-s', server.url,
         '-o', str(dest), *CODES],
        capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)


def modes(dest: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mode & 0o777 for path in dest.iterdir()}


@pytest.mark.parametrize(('umask', 'mode'), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize('variant', VARIANTS)
def test_a_new_flag_gets_the_umask_mode(variant: str, umask: int, mode: int,
                                        local_server: FlagsServer, tmp_path: Path) -> None:
    run_with_umask(variant, umask, local_server, tmp_path)
    assert modes(tmp_path) == {f'{cc}.gif': mode for cc in CODES}


@pytest.mark.parametrize('variant', VARIANTS)
def test_an_old_flag_replaced_gets_the_umask_mode_too(
        variant: str, local_server: FlagsServer, tmp_path: Path) -> None:
    old = tmp_path / 'BR.gif'
    old.write_bytes(b'GIF89a old flag')
    old.chmod(0o644)
    with old.open('rb') as reader:  # replaced, not rewritten: the reader keeps the old bytes
        run_with_umask(variant, 0o022, local_server, tmp_path)
        assert reader.read() == b'GIF89a old flag'
    assert modes(tmp_path) == {'BR.gif': 0o644, 'CN.gif': 0o644}
    assert old.read_bytes() != b'GIF89a old flag'
