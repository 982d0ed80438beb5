"""The console samples of README.md, docs/when-things-go-wrong.md and the scripts'
docstrings stay true.

Each command is run as written and its output compared with the sample, line by line,
under the rules of tests/samples.py; the usage sample is argparse's output at 80
columns. The guide's samples are checked the same way by test_companion.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import samples

from conftest import ROOT, run_variant

from flags2.servers import running_server

README = ROOT / 'README.md'
TROUBLE = ROOT / 'docs' / 'when-things-go-wrong.md'
VARIANT_FILES = ('flags2_sequential.py', 'flags2_threadpool.py', 'flags2_asyncio.py',
                 'flags2_asyncio_executor.py', 'flags3_asyncio.py')
DOCSTRING_FILES = VARIANT_FILES
# flags2_compare.py's output is a table of timings, checked by tests/test_compare.py.
NOT_VARIANTS = ('flags2_compare.py',)

README_SAMPLES = [s for s in samples.markdown_samples(README) if s.script not in NOT_VARIANTS]
TROUBLE_SAMPLES = samples.markdown_samples(TROUBLE)
DOC_SAMPLES = [s for name in DOCSTRING_FILES for s in samples.docstring_samples(ROOT / name)]
ALL = README_SAMPLES + TROUBLE_SAMPLES + DOC_SAMPLES


def test_every_sample_is_found() -> None:
    """README shows one run of each variant; when-things-go-wrong.md shows the runs that
    need no server set up by hand (an error summary, no server, a usage error); each
    variant's docstring shows one run."""
    assert sorted({s.script for s in README_SAMPLES}) == sorted(VARIANT_FILES)
    assert len(TROUBLE_SAMPLES) >= 3
    assert sorted(s.where.split(':')[0] for s in DOC_SAMPLES) == sorted(DOCSTRING_FILES)
    for sample in ALL:
        assert sample.argv[0] in ('python', '.venv/bin/python'), sample
        assert sample.script in VARIANT_FILES, sample


@pytest.fixture(scope='module')
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> list[samples.Real]:
    return samples.run_all(ALL, tmp_path_factory.mktemp('samples'))


@pytest.mark.parametrize('index', range(len(ALL)), ids=[s.where for s in ALL])
def test_sample_runs_as_shown(index: int, real_runs: list[samples.Real]) -> None:
    samples.check(ALL[index], real_runs[index])


# ----------------------------------------------- what README says "peak" means

def run_against(server_url: str, tmp_path: Path, *args: str) -> list[str]:
    result = run_variant('threadpool', '-s', server_url, *args, cwd=tmp_path)
    return result.lines


def peak_of(lines: list[str]) -> int:
    line = next(line for line in lines if line.startswith('Peak requests in flight'))
    match = re.search(r'server: (\d+), on \d+ connections?\.$', line)
    assert match, line
    return int(match[1])


def test_peak_counts_requests_the_client_gave_up_on(tmp_path: Path) -> None:
    """Each request times out at 0.3 s while the server sleeps 1 s: on 2 connections,
    the server holds more than 2 at once, and the report says so."""
    with running_server('delay', '--delay-min', '1', '--delay-max', '1') as server:
        lines = run_against(server.url, tmp_path, '-a', '-l', '8', '-m', '2',
                            '--timeout', '0.3')
    assert 'errors: 8 timed out' in lines
    assert 2 < peak_of(lines) <= 8


def test_peak_counts_stalled_requests(tmp_path: Path) -> None:
    """A stalled request is held until the client hangs up: 3 at once, not 0 or 1."""
    with running_server('local', '--fault', 'stall', '--fault-rate', '1') as server:
        lines = run_against(server.url, tmp_path, '-a', '-l', '3', '-m', '3',
                            '--timeout', '0.3')
    assert 'errors: 3 timed out' in lines
    assert peak_of(lines) == 3
