"""A redirect gets what the first request of a flag gets: its URL passes the
checks a base URL passes.

Each variant runs in a subprocess, as a user runs it: a traceback shows on
its stderr.
"""

from __future__ import annotations

from pathlib import Path

from handmade import Answer, answer, code_of, handmade_server

from conftest import EVERY_VARIANT, run_variant, saved_codes

from flags2.servers import FlagsServer

PORT_WORDS = '(a number from 1 to 65535)'


def test_a_redirect_to_a_url_no_base_url_may_have_is_that_codes_error(
        local_server: FlagsServer, tmp_path: Path) -> None:
    """Was: a host name with a 64-character or an empty label ended the sync
    variants in a UnicodeError traceback with no report; port 99999 ended the
    asyncio ones in an OverflowError; the sync ones took a port modulo 65536,
    and saved what the local server at port + 65536 sent as OK."""
    port = local_server.port
    hosts = {'AD': f'127.0.0.1:{port}',  # a redirect that is fine: the run goes on
             'BR': f'{"a" * 64}.localhost', 'CN': 'a..b',
             'DE': '127.0.0.1:99999', 'FR': f'127.0.0.1:{port + 65536}'}
    bad_name = 'bad redirect: the new URL has a bad host name: a part between dots is empty ' \
               'or over 63 characters'
    expected = [f'BR error: {bad_name}', f'CN error: {bad_name}',
                f"DE error: bad redirect: the new URL has a bad port: '99999' {PORT_WORDS}",
                f"FR error: bad redirect: the new URL has a bad port: '{port + 65536}' "
                f'{PORT_WORDS}']

    def redirect(path: str, number: int) -> Answer:
        return [answer('302 Found', b'', f'Location: http://{hosts[code_of(path)]}{path}')]

    with handmade_server(redirect) as server:
        for variant in EVERY_VARIANT:
            dest = tmp_path / variant
            result = run_variant(variant, '-v', '-s', server.url, '-o', str(dest), *hosts,
                                 cwd=tmp_path, timeout=30)
            assert 'Traceback' not in result.stderr, (variant, result.stderr)
            assert result.returncode == 1, (variant, result.stderr)
            assert sorted(line for line in result.lines if ' error: ' in line) == expected
            assert '1 flag downloaded.' in result.lines, variant
            assert '4 errors.' in result.lines, variant
            assert len(saved_codes(dest)) == 1, variant  # AD, or Andorra for flags3
