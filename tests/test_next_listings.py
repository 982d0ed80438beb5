"""The chapter's next listings: flags2_asyncio_executor.py and flags3_asyncio.py.

Each keeps the book's shape and drops the book's bug: flags3 resets its
``error`` for every result (the book's counts every download after the first
failure as an error), and the executor listing awaits the save (the book's
never sees a save fail).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import flags2_asyncio_executor
import flags3_asyncio
from conftest import run_in_process
from flags2_common import DownloadStatus, save_flag
from flags_server import Workload

from flags2.codes import countries, country_codes
from flags2.runs import Run
from flags2.servers import FlagsServer

ALL_CODES = list(country_codes())


def country_file(cc: str) -> str:
    return countries()[cc]['country'].replace(' ', '_') + '.gif'


def test_flags3_saves_each_flag_under_its_country_name(local_server: FlagsServer,
                                                       tmp_path: Path) -> None:
    counter, run = run_in_process(flags3_asyncio.download_many, ALL_CODES, local_server.url,
                                  False, 20, dest=tmp_path)
    assert counter == Counter({DownloadStatus.OK: 194}) and run.saved == 194
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(country_file(cc) for cc in ALL_CODES)
    assert "Côte_d'Ivoire.gif" in names and 'Korea,_North.gif' in names


def test_flags3_counts_only_the_codes_that_failed(error_server: FlagsServer,
                                                  tmp_path: Path) -> None:
    """The book's loop never resets ``error``: every result after the first
    failure would be counted (and reported with -v) as that failure again."""
    workload = Workload('error')
    failing = [cc for cc in ALL_CODES
               if workload.fails(cc) or workload.fails(cc, 'metadata')]
    assert 0 < len(failing) < 194
    counter, run = run_in_process(flags3_asyncio.download_many, ALL_CODES, error_server.url,
                                  False, 20, dest=tmp_path)
    assert counter == Counter({DownloadStatus.OK: 194 - len(failing),
                               DownloadStatus.ERROR: len(failing)})
    assert run.causes == Counter({'HTTP 418': len(failing)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        country_file(cc) for cc in ALL_CODES if cc not in failing)


def test_flags3_takes_the_semaphore_for_each_request(delay_server: FlagsServer,
                                                     tmp_path: Path) -> None:
    """Two requests per code, never more than concur_req of them at the server."""
    codes = ALL_CODES[:40]
    run_in_process(flags3_asyncio.download_many, codes, delay_server.url, False, 5,
                   dest=tmp_path)
    stats = delay_server.stats()
    assert stats['peak_in_flight'] == 5
    assert stats['requests'] == {'200': 2 * len(codes)}


def test_executor_listing_reports_a_save_that_failed(local_server: FlagsServer,
                                                     tmp_path: Path) -> None:
    """A folder named BR.gif makes that one save fail, even for root. The
    book's listing does not await run_in_executor's future: it would count
    BR as downloaded."""
    (tmp_path / 'BR.gif').mkdir()
    counter, run = run_in_process(flags2_asyncio_executor.download_many, ['BR', 'CN'],
                                  local_server.url, True, 5, dest=tmp_path)
    assert counter == Counter({DownloadStatus.OK: 1, DownloadStatus.ERROR: 1})
    assert run.causes == Counter({'cannot save: Is a directory': 1})
    assert run.saved == 1
    assert (tmp_path / 'CN.gif').is_file()


def test_executor_listing_downloads_every_flag(local_server: FlagsServer,
                                               tmp_path: Path) -> None:
    counter, run = run_in_process(flags2_asyncio_executor.download_many, ALL_CODES,
                                  local_server.url, False, 5, dest=tmp_path)
    assert counter == Counter({DownloadStatus.OK: 194}) and run.saved == 194
    assert len(list(tmp_path.glob('*.gif'))) == 194


@pytest.mark.parametrize('name', ['../BR.gif', 'sub/BR.gif', '..', '', 'BR\0.gif'])
def test_save_flag_writes_only_into_the_run_folder(name: str, tmp_path: Path) -> None:
    """flags3 names files after what the server says a country is called."""
    dest = tmp_path / 'flags'
    dest.mkdir()
    with Run(dest, 1.0) as run, pytest.raises(OSError):
        save_flag(b'GIF89a', name)
    assert run.saved == 0
    assert list(tmp_path.rglob('*')) == [dest]
