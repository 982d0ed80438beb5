"""The command line: code selection, concurrency, servers and usage errors."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

from conftest import VARIANTS, free_port, run_variant
from flags2_common import (
    POP20_CC,
    SERVERS,
    build_parser,
    concurrency,
    expand_cc_args,
    process_args,
)

from flags2.codes import country_codes
from flags2.options import MAX_TIMEOUT, UsageError, printable_url, resolve_server
from flags2.servers import FlagsServer


def test_codes_file_has_the_194_countries() -> None:
    codes = country_codes()
    assert isinstance(codes, tuple)
    assert len(codes) == len(set(codes)) == 194
    assert list(codes) == sorted(codes)
    assert codes[0] == 'AD' and codes[-1] == 'ZW'


def test_no_codes_means_the_20_most_populous_sorted() -> None:
    assert expand_cc_args(False, False, [], None) == sorted(POP20_CC)


def test_one_letter_means_every_code_starting_with_it() -> None:
    assert expand_cc_args(False, False, ['b'], None) == ['B' + c for c in string.ascii_uppercase]


def test_codes_are_case_insensitive_deduplicated_and_sorted() -> None:
    assert expand_cc_args(False, False, ['us', 'BR', 'Us', 'cn'], None) == ['BR', 'CN', 'US']


def test_all_every_and_limit() -> None:
    assert len(expand_cc_args(False, True, [], None)) == 194
    every = expand_cc_args(True, False, [], None)
    assert len(every) == 676 and every[0] == 'AA' and every[-1] == 'ZZ'
    assert expand_cc_args(True, False, [], 3) == ['AA', 'AB', 'AC']


@pytest.mark.parametrize(('argv', 'expected'), [
    ([], 5),                             # the variant's default
    (['-m', '3'], 3),
    (['-m', '5000', '-e'], 300),         # the variant's maximum
    (['-m', '200', '-a'], 194),          # never more than the number of codes
    (['-m', '50', 'BR', 'US'], 2),
])
def test_concur_req_is_min_of_option_max_and_codes(argv: list[str], expected: int,
                                                   tmp_path: Path) -> None:
    opts = process_args(build_parser(5), [*argv, '-o', str(tmp_path)])
    assert concurrency(opts.max_req, 300, len(opts.cc_list)) == expected


def test_server_labels_are_case_insensitive() -> None:
    assert resolve_server('delay', SERVERS) == ('DELAY', SERVERS['DELAY'])
    assert resolve_server('Remote', SERVERS) == ('REMOTE', 'https://www.fluentpython.com/data/flags')


def test_server_url_is_taken_as_base_url() -> None:
    assert resolve_server('http://127.0.0.1:9999/flags/', SERVERS) == (
        'http://127.0.0.1:9999/flags/', 'http://127.0.0.1:9999/flags')


@pytest.mark.parametrize('server', ['NOWHERE', 'ftp://host/flags', 'http:///flags',
                                    'http://host:port/flags'])
def test_bad_servers_are_usage_errors(server: str) -> None:
    with pytest.raises(UsageError):
        resolve_server(server, SERVERS)


BAD_ARGS = [
    (['ZZZ'], "'ZZZ'"),
    (['1A'], "'1A'"),
    (['A1'], "'A1'"),
    ([''], "''"),
    (['É'], "'É'"),
    (['b r'], "'b r'"),
    (['ß'], "'ß'"),
    (['--timeout', '1e10'], "'1e10'"),
    (['-m', '0'], "'0'"),
    (['-m', 'many'], "'many'"),
    (['-l', '-1'], "'-1'"),
    (['-l', 'ten'], "'ten'"),
    (['-s', 'NOWHERE'], "'NOWHERE'"),
    (['-s', 'ftp://example.com/flags'], "'ftp://example.com/flags'"),
    (['-s', 'http:///flags'], "'http:///flags'"),
    (['--timeout', '0'], "'0'"),
    (['--timeout', '-2'], "'-2'"),
    (['--timeout', 'soon'], "'soon'"),
    (['--frobnicate'], '--frobnicate'),
]


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize(('argv', 'named'), BAD_ARGS[:3])
def test_usage_errors_in_every_variant(variant: str, argv: list[str], named: str,
                                       tmp_path: Path) -> None:
    result = run_variant(variant, *argv, cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, named)
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing fetched


@pytest.mark.parametrize(('argv', 'named'), BAD_ARGS)
def test_usage_errors(argv: list[str], named: str, tmp_path: Path) -> None:
    result = run_variant('asyncio', *argv, cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, named)
    assert list(tmp_path.iterdir()) == []


def assert_usage_error(returncode: object, stdout: str, stderr: str, named: str) -> None:
    assert returncode == 2
    assert stdout == ''
    lines = stderr.splitlines()
    assert lines[0].startswith('*** Usage error: ')
    assert named in lines[0]
    assert lines[1].startswith('usage: ')
    assert 'Traceback' not in stderr


def test_destination_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / 'flags'
    target.write_text('not a folder')
    result = run_variant('sequential', '-o', str(target), cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, str(target))
    assert target.read_text() == 'not a folder'


def test_help_documents_exit_status(tmp_path: Path) -> None:
    result = run_variant('threadpool', '--help', cwd=tmp_path)
    assert result.returncode == 0
    assert '130 when interrupted' in ' '.join(result.stdout.split())


def test_destination_that_cannot_be_created_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / 'file').write_text('in the way')
    target = tmp_path / 'file' / 'flags'
    result = run_variant('threadpool', '-o', str(target), cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0,
                    reason='root may write anywhere')
def test_destination_that_cannot_be_written_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / 'flags'
    target.mkdir(mode=0o500)
    try:
        result = run_variant('asyncio', '-o', str(target), cwd=tmp_path)
    finally:
        target.chmod(0o700)
    assert_usage_error(result.returncode, result.stdout, result.stderr, str(target))
    assert list(target.iterdir()) == []


@pytest.mark.skipif(not Path('/proc/self').is_dir(), reason='needs Linux /proc')
def test_destination_even_root_cannot_write_is_a_usage_error(tmp_path: Path) -> None:
    # /proc/self is a folder in which nobody, root included, can create a file:
    # this case runs where the chmod one above is skipped.
    result = run_variant('asyncio', '-o', '/proc/self', cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, "'/proc/self'")
    assert 'cannot write to destination' in result.stderr


@pytest.mark.parametrize('argv', [['ZZZ'], ['-m', '0'], ['--timeout', '0'], ['--frobnicate']])
def test_usage_errors_request_nothing(argv: list[str], local_server: FlagsServer,
                                      tmp_path: Path) -> None:
    before = local_server.stats()['requests']
    result = run_variant('sequential', *argv, cwd=tmp_path,
                         env={'FLAGS2_LOCAL_URL': local_server.url})
    assert result.returncode == 2
    assert local_server.stats()['requests'] == before


def test_process_args_reports_a_usage_error_through_the_parser(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        process_args(build_parser(5), ['-o', str(tmp_path), 'ZZZ'])
    out, err = capsys.readouterr()
    assert_usage_error(exit_info.value.code, out, err, "'ZZZ'")


# ------------------------------------------------ hostile input (issue i10)

BAD_URLS = [
    ('http://[::1', 'IPv6'),                      # was a ValueError traceback
    ('http://[127.0.0.1]/flags', 'IPv6'),
    ('http://::1/flags', 'IPv6'),
    ('http://127.0.0.1:{port}/flags?x=1', 'query'),  # was: every code "not found"
    ('http://127.0.0.1:{port}/flags?', 'query'),
    ('http://127.0.0.1:{port}/flags#top', 'fragment'),
    ('http://127.0.0.1:{port}/fl%zzags', '%'),
    ('http://127.0.0.1:{port}/fl%4', '%'),
    ('http://127.0.0.1:{port}\\flags', "'\\\\'"),
    ('http://127.0.0.1:{port}/my flags', "' '"),
    ('http://127.0.0.1:{port}/fl\tags', "'\\t'"),
    ('http://127.0.0.1:+{port}/flags', 'port'),
    ('http://127.0.0.1:0/flags', 'port'),
    ('http://127.0.0.1:65536/flags', 'port'),
    ('http://a@b@127.0.0.1:{port}/flags', '@'),
    ('http:///flags', 'no host'),
    ('http://a..b:{port}/flags', 'bad host name'),  # was: a UnicodeError traceback
    ('http://' + 'a' * 64 + '.localhost:{port}/flags', 'bad host name'),
]


@pytest.mark.parametrize(('url', 'named'), BAD_URLS)
def test_bad_server_urls_are_one_line_usage_errors(url: str, named: str,
                                                   local_server: FlagsServer,
                                                   tmp_path: Path) -> None:
    url = url.format(port=local_server.port)
    before = local_server.stats()['requests']
    result = run_variant('sequential', '-s', url, 'BR', cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, named)
    assert len(result.stderr.splitlines()[0]) < 200
    assert local_server.stats()['requests'] == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('url', ['http://127.0.0.1:8000/flags', 'https://example.com',
                                 'http://[::1]:8000/flags/', 'http://user:pw@host/flags',
                                 'http://[fe80::1%25eth0]:8000/flags', 'http://h/a%2Fb'])
def test_good_server_urls_pass(url: str) -> None:
    assert resolve_server(url, SERVERS)[1] == url.rstrip('/')


@pytest.mark.parametrize('code', [
    'ß',    # upper() is 'SS': two ASCII letters, but not as typed
    'ǅ',    # a title-case digraph: one letter, upper() 'Ǆ'
    'ı',    # dotless i: upper() is 'I'
    'ſ',    # long s: upper() is 'S'
    'ﬀ',    # a ligature: upper() is 'FF'
    'ｂｒ',  # full-width letters
    '\u212a',  # the Kelvin sign, which lower() makes 'k'
    'b\u0301',  # b and a combining accent
])
def test_country_codes_are_ascii_letters_as_typed(code: str) -> None:
    with pytest.raises(UsageError) as info:
        expand_cc_args(False, False, ['BR', code], None)
    assert repr(code) in str(info.value)


@pytest.mark.parametrize('value', ['1e10', '9.3e9', str(MAX_TIMEOUT + 1)])
def test_timeout_past_what_every_variant_honours_is_a_usage_error(
        value: str, tmp_path: Path) -> None:
    result = run_variant('threadpool', '--timeout', value, cwd=tmp_path)
    assert_usage_error(result.returncode, result.stdout, result.stderr, repr(value))
    assert '86400' in result.stderr


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_longest_timeout_works_in_every_variant(variant: str, local_server: FlagsServer,
                                                    tmp_path: Path) -> None:
    result = run_variant(variant, '--timeout', str(MAX_TIMEOUT), 'BR', 'ZZ', cwd=tmp_path,
                         env={'FLAGS2_LOCAL_URL': local_server.url})
    assert result.returncode == 0, result.stderr
    assert '1 flag downloaded.' in result.lines


def test_help_gives_the_longest_timeout(tmp_path: Path) -> None:
    result = run_variant('asyncio', '--help', cwd=tmp_path)
    assert 'at most 86400 (1 day)' in ' '.join(result.stdout.split())


@pytest.mark.parametrize('variant', VARIANTS)
def test_a_password_in_the_url_is_never_printed(variant: str, local_server: FlagsServer,
                                                tmp_path: Path) -> None:
    url = f'http://reader:s3cret-pw@127.0.0.1:{local_server.port}/flags'
    result = run_variant(variant, '-v', '-s', url, 'BR', 'ZZ', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f'http://reader:***@127.0.0.1:{local_server.port}/flags site: '\
           f'http://reader:***@127.0.0.1:{local_server.port}/flags' in result.lines
    assert 's3cret' not in result.stdout + result.stderr
    peak = 'Peak requests in flight at the server: 1, on '  # /stats answered
    assert any(line.startswith(peak) for line in result.lines)


@pytest.mark.parametrize('url', ['http://reader:s3cret-pw@127.0.0.1:{port}/flags?x',
                                 'http://reader:s3cret-pw@[::1/flags',
                                 'http://reader:s3cret-pw@h:x/flags',
                                 'http://reader:s3cret-pw@127.0.0.1:{port}/flags'])
def test_a_password_is_masked_in_usage_errors_and_failures(url: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the last URL fails with "connection refused"
    result = run_variant('asyncio', '-v', '-s', url.format(port=port), 'BR', cwd=tmp_path)
    assert result.returncode in (1, 2)
    assert 'reader:***@' in result.stdout + result.stderr
    assert 's3cret' not in result.stdout + result.stderr


@pytest.mark.parametrize(('url', 'shown'), [
    ('http://u:pw@h/f', 'http://u:***@h/f'),
    ('https://u:p:w@h:8/f?x#y', 'https://u:***@h:8/f?x#y'),
    ('http://u:p@ss@h/', 'http://u:***@h/'),
    ('http://u@h/f', 'http://u@h/f'),
    ('http://h:8000/a@b:c', 'http://h:8000/a@b:c'),
    ('http://u:pw@[::1', 'http://u:***@[::1'),
    ('u:pw@h', 'u:***@h'),
    ('LOCAL', 'LOCAL'),
])
def test_printable_url_masks_only_the_password(url: str, shown: str) -> None:
    assert printable_url(url) == shown
