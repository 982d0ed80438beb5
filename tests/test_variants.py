"""What every variant must do against the real bundled server."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import CONCURRENT_VARIANTS, VARIANTS, FlagsServer, run_variant
from flags2_common import POP20_CC, country_codes
from flags_server import Workload

ALL_CODES = country_codes()


def saved_codes(dest: Path) -> list[str]:
    return sorted(p.stem for p in dest.iterdir())


def assert_valid_gifs(dest: Path) -> None:
    for path in dest.iterdir():
        assert path.suffix == '.gif', path
        with Image.open(path) as img:
            assert img.format == 'GIF'
            img.load()  # decodes every pixel: a truncated file fails here
            assert img.size == (120, 80)


@pytest.mark.parametrize('variant', VARIANTS)
def test_all_flags_from_local(variant: str, local_server: FlagsServer, tmp_path: Path) -> None:
    dest = tmp_path / 'flags'
    result = run_variant(variant, '-a', '-s', local_server.url, '-o', str(dest), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '194 flags downloaded.' in result.lines
    assert result.lines[1] == 'Searching for 194 flags: from AD to ZW'
    assert result.lines[-1].startswith('Elapsed time: ')
    assert saved_codes(dest) == ALL_CODES
    assert_valid_gifs(dest)
    assert '100%' in result.stderr  # the progress bar


@pytest.mark.parametrize('variant', VARIANTS)
def test_default_is_top_20_into_downloaded(variant: str, local_server: FlagsServer,
                                           tmp_path: Path) -> None:
    result = run_variant(variant, '-s', local_server.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'Searching for 20 flags: from BD to VN' in result.lines
    assert '20 flags downloaded.' in result.lines
    assert saved_codes(tmp_path / 'downloaded') == sorted(POP20_CC)


@pytest.mark.parametrize('variant', VARIANTS)
def test_verbose_prints_one_line_per_code_and_no_bar(variant: str, delay_server: FlagsServer,
                                                     tmp_path: Path) -> None:
    result = run_variant(variant, '-v', '-s', delay_server.url, '-o', str(tmp_path),
                         'BR', 'ZZ', 'us', 'CN', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    code_lines = sorted(line for line in result.lines if line[:3] in ('BR ', 'ZZ ', 'US ', 'CN '))
    assert code_lines == ['BR OK', 'CN OK', 'US OK', 'ZZ not found']
    assert '3 flags downloaded.' in result.lines
    assert '1 not found.' in result.lines
    assert '%|' not in result.stderr
    assert saved_codes(tmp_path) == ['BR', 'CN', 'US']


@pytest.mark.parametrize('variant', VARIANTS)
def test_error_server_counts_add_up(variant: str, error_server: FlagsServer,
                                    tmp_path: Path) -> None:
    codes = [*ALL_CODES[:40], 'QQ', 'XX']
    result = run_variant(variant, '-v', '-m', '10', '-s', error_server.url, '-o', str(tmp_path),
                         *codes, cwd=tmp_path)
    failing = sorted(cc for cc in codes if cc in ALL_CODES and Workload('error').fails(cc))
    assert failing, 'the default seed must make some of these codes fail'
    ok = sorted(cc for cc in codes if cc in ALL_CODES and cc not in failing)
    assert result.returncode == 1
    assert f'{len(ok)} flags downloaded.' in result.lines
    assert '2 not found.' in result.lines
    assert f'{len(failing)} errors.' in result.lines
    assert f'errors: {len(failing)} HTTP 418' in result.lines
    error_lines = sorted(line for line in result.lines if ' error: ' in line)
    assert error_lines == [f"{cc} error: HTTP 418 I'm a Teapot" for cc in failing]
    assert saved_codes(tmp_path) == ok


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
def test_every_code_against_error(variant: str, error_server: FlagsServer,
                                  tmp_path: Path) -> None:
    result = run_variant(variant, '-e', '-m', '100', '-s', error_server.url,
                         '-o', str(tmp_path), cwd=tmp_path)
    failing = [cc for cc in ALL_CODES if Workload('error').fails(cc)]
    assert result.returncode == 1
    assert f'{194 - len(failing)} flags downloaded.' in result.lines
    assert f'{676 - 194} not found.' in result.lines
    assert f'{len(failing)} errors.' in result.lines
    assert len(saved_codes(tmp_path)) == 194 - len(failing)


@pytest.mark.parametrize('variant', CONCURRENT_VARIANTS)
@pytest.mark.parametrize(('max_req', 'args', 'expected'), [
    ('1', ('-l', '2'), 1),
    ('5', ('-l', '6'), 5),
    ('100', ('-a',), 100),
    ('1000', ('-a',), 194),
])
def test_peak_in_flight_is_exactly_the_concurrency(
        variant: str, max_req: str, args: tuple[str, ...], expected: int,
        slow_server: FlagsServer, tmp_path: Path) -> None:
    slow_server.reset()
    result = run_variant(variant, '-m', max_req, *args, '-s', slow_server.url,
                         '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f'{expected} concurrent connections will be used.' in result.lines or expected == 1
    assert slow_server.stats()['peak_in_flight'] == expected
    assert f'Peak requests in flight at the server: {expected}.' in result.lines


def test_sequential_uses_one_connection(slow_server: FlagsServer, tmp_path: Path) -> None:
    slow_server.reset()
    result = run_variant('sequential', '-m', '50', '-l', '2', '-s', slow_server.url,
                         '-o', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '1 connection will be used.' in result.lines
    assert slow_server.stats()['peak_in_flight'] == 1
