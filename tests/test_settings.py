"""The settings a run takes from the environment get the checks of the command
line: a proxy httpx2 cannot use, or a FLAGS2_<LABEL>_URL that -s would refuse,
is one line naming the variable, exit status 2, before anything is fetched or
created. A FLAGS2 URL the bundled server cannot serve (https) starts none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import VARIANTS, Result, free_port, run_variant, server_processes

from flags2.options import SettingError, check_proxy_settings
from flags2.servers import FlagsServer

PROXY_VARIABLES = ('HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy',
                   'ALL_PROXY', 'all_proxy', 'NO_PROXY', 'no_proxy')
SERVER_VARIABLES = tuple(f'FLAGS2_{label}_URL' for label in ('LOCAL', 'DELAY', 'ERROR', 'REMOTE'))
NO_SOCKSIO = importlib.util.find_spec('socksio') is None


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or server setting of the machine's own reaches the runs."""
    for name in PROXY_VARIABLES + SERVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def assert_setting_error(result: Result, name: str, named: str) -> None:
    """Exit 2 and one line on stderr: ``*** NAME='value' cannot work: why``."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ''
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'*** {name}='), lines[0]
    assert ' cannot work: ' in lines[0]
    assert named in lines[0]


# ------------------------------------------------------------------ proxies

BAD_PROXIES = [
    pytest.param('ALL_PROXY', 'socks5://127.0.0.1:1080', 'socksio',  # was an ImportError
                 marks=pytest.mark.skipif(not NO_SOCKSIO, reason='socksio is installed')),
    ('HTTP_PROXY', '::::', 'not a URL'),                     # was httpx2.InvalidURL
    ('http_proxy', 'http://[::1', 'not a URL'),
    ('HTTP_PROXY', 'ftp://proxy.invalid', 'http://, https://'),  # was a ValueError
    ('HTTP_PROXY', 'http://127.0.0.1:99999', '99999'),      # was an OverflowError
    ('https_proxy', 'http://127.0.0.1:0', 'port 0'),
    ('HTTP_PROXY', 'http://', 'no host'),                    # every flag: host not found
]


@pytest.mark.parametrize(('name', 'value', 'named'), BAD_PROXIES)
def test_a_proxy_setting_that_cannot_work_is_one_line_and_exit_2(
        name: str, value: str, named: str, local_server: FlagsServer, tmp_path: Path) -> None:
    before = local_server.stats()['requests']
    result = run_variant('asyncio', '-s', local_server.url, 'BR', cwd=tmp_path,
                         env={name: value})
    assert_setting_error(result, name, named)
    assert local_server.stats()['requests'] == before
    assert list(tmp_path.iterdir()) == []  # not even downloaded/


@pytest.mark.parametrize('variant', VARIANTS)
def test_every_variant_refuses_a_bad_proxy_before_the_run(variant: str,
                                                          local_server: FlagsServer,
                                                          tmp_path: Path) -> None:
    result = run_variant(variant, '-s', local_server.url, 'BR', cwd=tmp_path,
                         env={'HTTP_PROXY': 'http://127.0.0.1:99999'})
    assert_setting_error(result, 'HTTP_PROXY', '99999')



def test_compare_refuses_a_bad_proxy_before_any_run(local_server: FlagsServer,
                                                    tmp_path: Path) -> None:
    """Was: each of its runs refused it, and compare reported the runs failed."""
    before = local_server.stats()['requests']
    result = run_variant('compare', '-s', local_server.url, '-l', '2', '--repeat', '1',
                         cwd=tmp_path, env={'HTTP_PROXY': 'http://127.0.0.1:99999'})
    assert_setting_error(result, 'HTTP_PROXY', '99999')
    assert local_server.stats()['requests'] == before

def test_a_proxy_password_is_masked(tmp_path: Path) -> None:
    result = run_variant('sequential', 'BR', cwd=tmp_path,
                         env={'HTTPS_PROXY': 'http://reader:s3cret@127.0.0.1:99999'})
    assert_setting_error(result, 'HTTPS_PROXY', 'reader:***@')
    assert 's3cret' not in result.stderr


def test_no_proxy_star_turns_the_settings_off_as_in_httpx2(local_server: FlagsServer,
                                                           tmp_path: Path) -> None:
    """A guard against refusing too much: httpx2 ignores every proxy then."""
    result = run_variant('sequential', '-s', local_server.url, '-o', str(tmp_path), 'BR',
                         cwd=tmp_path, env={'HTTP_PROXY': 'ftp://x', 'NO_PROXY': '*'})
    assert result.returncode == 0, result.stderr
    assert '1 flag downloaded.' in result.lines


def test_lower_case_names_the_setting_urllib_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('http_proxy', 'ftp://lower')
    monkeypatch.setenv('HTTP_PROXY', 'http://127.0.0.1:3128')
    with pytest.raises(SettingError) as info:
        check_proxy_settings({'http_proxy': 'ftp://lower', 'HTTP_PROXY': 'http://127.0.0.1:3128'})
    assert (info.value.name, info.value.value) == ('http_proxy', 'ftp://lower')


# ---------------------------------------------------------- FLAGS2_*_URL

BAD_SERVER_URLS = [
    ('http://127.0.0.1:{port}/flags?x=1', 'query'),  # was: every code "not found", exit 0
    ('http://127.0.0.1:{port}/flags#top', 'fragment'),
    ('ftp://127.0.0.1:{port}/flags', 'http://'),
    ('http://127.0.0.1:0/flags', 'port'),
    ('http:///flags', 'no host'),
    ('http://[::1/flags', 'IPv6'),
]


@pytest.mark.parametrize('label', ['LOCAL', 'DELAY', 'REMOTE'])
@pytest.mark.parametrize(('url', 'named'), BAD_SERVER_URLS)
def test_a_bad_flags2_url_is_one_line_and_exit_2(label: str, url: str, named: str,
                                                 local_server: FlagsServer,
                                                 tmp_path: Path) -> None:
    before = local_server.stats()['requests']
    name = f'FLAGS2_{label}_URL'
    result = run_variant('sequential', '-s', label, 'BR', cwd=tmp_path,
                         env={name: url.format(port=local_server.port)})
    assert_setting_error(result, name, named)
    assert local_server.stats()['requests'] == before
    assert list(tmp_path.iterdir()) == []


def test_a_trailing_slash_in_a_flags2_url_works_as_with_s(local_server: FlagsServer,
                                                          tmp_path: Path) -> None:
    """It made every code 'not found', with exit status 0."""
    result = run_variant('threadpool', 'BR', 'ZZ', cwd=tmp_path,
                         env={'FLAGS2_LOCAL_URL': f'{local_server.url}/'})
    assert result.returncode == 0, result.stderr
    assert f'LOCAL site: {local_server.url}' in result.lines
    assert '1 flag downloaded.' in result.lines
    assert '1 not found.' in result.lines


@pytest.mark.parametrize('url', ['https://127.0.0.1:{port}/flags',
                                 'http://127.0.0.1:{port}/other'])
def test_no_bundled_server_for_a_url_it_cannot_serve(url: str, tmp_path: Path) -> None:
    """An https FLAGS2 URL started a plain-http server that answered TLS with garbage;
    one not under /flags, a server answering every code 404."""
    port = free_port()
    url = url.format(port=port)
    result = run_variant('sequential', 'BR', cwd=tmp_path, env={'FLAGS2_LOCAL_URL': url})
    assert result.returncode == 1
    assert not any(line.startswith('Started the bundled') for line in result.lines)
    assert 'errors: 1 connection refused' in result.lines
    assert result.stderr.splitlines()[-1] == (
        f'*** No server answered at {url}; the bundled server serves only '
        'http://localhost:PORT/flags, so none was started for LOCAL.')
    assert server_processes(port) == []


# ---------------------------------------------------------------------- -o

def test_an_empty_destination_is_a_usage_error(tmp_path: Path) -> None:
    """-o '' saved the flags in the current folder."""
    result = run_variant('sequential', '-o', '', 'BR', cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == ("*** Usage error: argument -o/--dest: '' names no folder "
                        '(-o . is the current folder)')
    assert lines[1].startswith('usage: ')
    assert list(tmp_path.iterdir()) == []
