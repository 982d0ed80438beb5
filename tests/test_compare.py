"""flags2_compare.py: same codes, same server, every variant in a fresh process,
and an honest yardstick (the ideal time) next to each measurement."""

from __future__ import annotations

import csv
import http.server
import itertools
import json
import re
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

import flags2_compare
from conftest import Result, free_port, run_variant, servers_gone, start
from flags2_common import expand_cc_args
from flags2_compare import Variant, ideal_time
from flags_server import Workload

from flags2.charts import max_overlap
from flags2.servers import FlagsServer, server_command
from flags2.tables import BAR_EIGHTHS, BAR_WIDTH

REAL_VARIANTS = flags2_compare.load_variants
SIX = expand_cc_args(False, False, [], 6)  # the first six of the top-20 list, sorted


def compare(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """python flags2_compare.py ARGS, as a user runs it."""
    return run_variant('compare', *args, cwd=cwd, env=env, timeout=120)


def row_line(lines: list[str], start: str) -> str:
    return next(line for line in lines if line.startswith(start))


def bar_eighths(bar: str) -> int:
    """The length of a text bar in eighths of a character."""
    return sum(8 if char == '█' else BAR_EIGHTHS.index(char) for char in bar)


# ------------------------------------------------------------ ideal time

def tick_by_tick(delays: tuple[int, ...], slots: int) -> int:
    """Brute force: advance a clock one tick at a time, starting waiting requests
    in order whenever fewer than ``slots`` are running."""
    waiting, clock = list(delays), 0
    running: list[int] = []  # ticks left of each running request
    while waiting or running:
        while waiting and len(running) < slots:
            running.append(waiting.pop(0))
        clock += 1
        running = [left - 1 for left in running if left > 1]
    return clock


def test_ideal_time_is_the_list_scheduling_makespan() -> None:
    for n in range(6):
        for delays in itertools.product((1, 2, 3), repeat=n):
            for slots in (1, 2, 3, 4):
                assert ideal_time(delays, slots) == tick_by_tick(delays, slots), (delays, slots)


def test_ideal_time_is_the_sum_on_one_slot_and_the_max_on_unlimited_slots() -> None:
    delays = [Workload('delay').delay(cc) for cc in SIX]
    assert ideal_time(delays, 1) == pytest.approx(sum(delays))
    assert ideal_time(delays, len(delays)) == max(delays)
    assert ideal_time(delays, 1000) == max(delays)
    assert ideal_time([], 5) == 0.0


def test_ideal_time_keeps_the_given_order() -> None:
    assert ideal_time([1, 1, 2], 2) == 3  # the long one starts last
    assert ideal_time([2, 1, 1], 2) == 2  # the best order would be this one
    with pytest.raises(ValueError):
        ideal_time([1], 0)


def test_max_overlap_counts_requests_open_at_once() -> None:
    requests = [{'start': 0, 'end': 2}, {'start': 1, 'end': 3}, {'start': 2, 'end': 4}]
    assert max_overlap(requests) == 2  # one ends at 2 as the third starts
    assert max_overlap([]) == 0


# --------------------------------------------- what the server tells the tool

def test_server_publishes_its_delays_and_a_log_of_each_run(
        delay_server: FlagsServer, tmp_path: Path) -> None:
    workload = delay_server.get_json('/workload')
    assert workload['mode'] == 'delay'
    same = Workload('delay', workload['seed'], workload['delay_min'], workload['delay_max'])
    assert len(workload['delays']) == 26 * 26
    assert all(workload['delays'][cc] == same.delay(cc) for cc in ('AD', 'ZW', 'QQ'))

    delay_server.reset()
    assert delay_server.get_json('/stats/requests') == {'requests': [], 'dropped': 0}
    result = run_variant('asyncio', *SIX, 'QQ', '-m', '3', '-s', delay_server.url,
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = delay_server.get_json('/stats/requests')['requests']
    assert sorted(r['code'] for r in log) == sorted([*SIX, 'QQ'])
    assert {r['code']: r['status'] for r in log}['QQ'] == 404
    assert all(r['end'] - r['start'] >= same.delay(r['code']) - 0.002 for r in log)
    assert max_overlap(log) == delay_server.stats()['peak_in_flight'] == 3


# ------------------------------------------------------------- the tool

def test_table_json_and_csv_report_every_run(delay_server: FlagsServer, tmp_path: Path) -> None:
    result = compare('-s', delay_server.url, '-l', '6', '--repeat', '2',
                     '--json', 'runs.json', '--csv', 'runs.csv', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / 'runs.json').read_text())
    runs = data['runs']
    assert data['codes'] == SIX
    assert data['server']['workload']['mode'] == 'delay'
    assert [(r['variant'], r['repeat']) for r in runs] == [
        ('sequential', 1), ('threadpool', 1), ('asyncio', 1),
        ('sequential', 2), ('threadpool', 2), ('asyncio', 2)]
    # threadpool's default 30 is capped at the 6 codes; asyncio's default is 5
    assert {r['variant']: r['concurrency'] for r in runs} == {
        'sequential': 1, 'threadpool': 6, 'asyncio': 5}
    delays = [Workload('delay', delay_min=0.01, delay_max=0.05).delay(cc) for cc in SIX]
    for run in runs:
        assert (run['downloaded'], run['not_found'], run['errors'], run['exit_code']) == \
            (6, 0, 0, 0)
        assert 1 <= run['peak_in_flight'] <= run['concurrency']
        assert run['ideal'] == pytest.approx(ideal_time(delays, run['concurrency']), abs=1e-4)
        # the ideal is a lower bound (the report rounds elapsed to 0.01 s)
        assert run['elapsed'] >= run['ideal'] - 0.005
        assert run['efficiency'] == pytest.approx(run['ideal'] / run['elapsed'], abs=1e-3)

    with (tmp_path / 'runs.csv').open(newline='') as file:
        rows = list(csv.DictReader(file))
    assert [(r['variant'], int(r['repeat']), float(r['elapsed'])) for r in rows] == \
        [(r['variant'], r['repeat'], r['elapsed']) for r in runs]
    assert set(rows[0]) >= {'variant', 'concurrency', 'repeat', 'downloaded', 'not_found',
                            'errors', 'elapsed', 'peak_in_flight', 'ideal', 'efficiency',
                            'exit_code'}

    lines = result.lines
    assert row_line(lines, 'variant').split()[:5] == ['variant', 'concurrency', 'ok', '404',
                                                      'errors']
    medians = {}
    for variant in ('sequential', 'threadpool', 'asyncio'):
        mine = [r for r in runs if r['variant'] == variant]
        times = [r['elapsed'] for r in mine]
        medians[variant] = median = statistics.median(times)
        line = row_line(lines, variant + ' ')
        assert (f'{median:.2f}s ({min(times):.2f}–{max(times):.2f})'
                in line)
        # ... ideal, efficiency, exit: efficiency is ideal / median, in whole percent
        ideal_cell, efficiency_cell = line.split()[-3:-1]
        assert ideal_cell.endswith('s')
        assert float(ideal_cell[:-1]) == pytest.approx(mine[0]['ideal'], abs=0.006)
        assert efficiency_cell.endswith('%')
        assert int(efficiency_cell[:-1]) == pytest.approx(100 * mine[0]['ideal'] / median,
                                                          abs=1)
    speedups = [cell for cell in row_line(lines, 'sequential ').split() if cell.endswith('×')]
    assert speedups == ['1.00×']  # the peak cell before it is '1 on 1'
    bars = lines[lines.index('Median elapsed time:') + 1:][:3]
    assert [bar.split()[0] for bar in bars] == ['sequential', 'threadpool', 'asyncio']
    longest = max(medians.values())
    for bar, (variant, median) in zip(bars, medians.items(), strict=True):
        blocks, shown = bar.split()[-2:]
        assert shown == f'{median:.2f}s'
        # the slowest fills the width; the others in proportion, to the eighth
        # (the medians are the report's, rounded to 0.01 s, as the tool reads them)
        assert bar_eighths(blocks) == pytest.approx(median / longest * BAR_WIDTH * 8,
                                                    abs=1), variant


def test_sweep_draws_the_chart_and_the_timeline(delay_server: FlagsServer,
                                                tmp_path: Path) -> None:
    result = compare('-s', delay_server.url, '-l', '6', '--sweep', '3,1', '--repeat', '1',
                     '--variants', 'asyncio,sequential', '--plot', 'sweep.png',
                     '--timeline', 'timeline.png', '--json', 'runs.json', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = json.loads((tmp_path / 'runs.json').read_text())['runs']
    # sequential once, as the baseline; the concurrent variant at each level
    assert [(r['variant'], r['concurrency']) for r in runs] == [
        ('sequential', 1), ('asyncio', 1), ('asyncio', 3)]
    assert row_line(result.lines, 'asyncio     3').split()[2] == '6'
    for name in ('sweep.png', 'timeline.png'):
        with Image.open(tmp_path / name) as image:
            assert image.format == 'PNG'
            assert image.width >= 800 and image.height >= 500
    assert 'Wrote the timeline to timeline.png' in result.lines


def test_both_protocols_side_by_side(delay_server: FlagsServer, tmp_path: Path) -> None:
    """--protocols 1.1,2 doubles the rows: each variant over HTTP/1.1, then over
    HTTP/2, its peak with the connections that carried it; the timeline has a
    panel for each."""
    result = compare('-s', delay_server.url, '-l', '6', '-m', '6', '--repeat', '1',
                     '--variants', 'asyncio', '--protocols', '1.1,2',
                     '--timeline', 'timeline.png', '--json', 'runs.json', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = json.loads((tmp_path / 'runs.json').read_text())['runs']
    assert [(r['variant'], r['protocol'], r['downloaded']) for r in runs] == [
        ('asyncio', '1.1', 6), ('asyncio', '2', 6)]
    assert runs[1]['connections'] == 1 and runs[0]['connections'] >= 1
    assert ' 6 on 1 ' in row_line(result.lines, 'asyncio HTTP/2  6')  # the peak column
    assert 'asyncio HTTP/2 -m 6' in '\n'.join(result.lines)  # its text bar
    assert 'Wrote the timeline to timeline.png' in result.lines


def broken_variants(tmp_path: Path, **scripts: str) -> dict[str, Variant]:
    """The real variants, with some replaced by the given one-line scripts."""
    variants = REAL_VARIANTS()
    for name, code in scripts.items():
        script = tmp_path / f'{name}_broken.py'
        script.write_text(code + '\n')
        real = variants[name]
        variants[name] = Variant(name, script, real.default_concur_req, real.max_concur_req)
    return variants


CompareWith = Callable[..., tuple[int, list[str]]]


@pytest.fixture
def compare_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> CompareWith:
    """flags2_compare's main, in-process, with some variants replaced by one-line
    scripts (``compare_with({'asyncio': CODE}, *args)``): its status and stdout lines."""
    def run(scripts: dict[str, str], *args: str) -> tuple[int, list[str]]:
        variants = broken_variants(tmp_path, **scripts)
        monkeypatch.setattr(flags2_compare, 'load_variants', lambda: variants)
        status = flags2_compare.main(list(args))
        return status, capsys.readouterr().out.splitlines()
    return run


def test_a_failing_variant_is_reported_and_the_others_still_run(
        error_server: FlagsServer, tmp_path: Path, compare_with: CompareWith) -> None:
    crash = 'import sys; sys.exit("boom: this variant crashed")'
    status, lines = compare_with({'threadpool': crash}, '-s', error_server.url, '-l', '12',
                                 '--repeat', '1', '-o', str(tmp_path / 'flags'),
                                 '--json', str(tmp_path / 'runs.json'))
    assert status == 0
    assert 'failed: no report (exit 1): boom: this variant crashed' in \
        row_line(lines, 'threadpool ')
    runs = json.loads((tmp_path / 'runs.json').read_text())['runs']
    measured = [r for r in runs if r['elapsed'] is not None]
    assert [r['variant'] for r in measured] == ['sequential', 'asyncio']
    for run in measured:  # ERROR mode: some downloads fail, so the script exits 1
        assert run['errors'] > 0 and run['exit_code'] == 1
        assert run['downloaded'] + run['errors'] == 12
        assert row_line(lines, run['variant'] + ' ').endswith('  1')


def test_exits_1_when_no_run_could_be_measured(delay_server: FlagsServer,
                                               compare_with: CompareWith) -> None:
    hang = 'import time; time.sleep(60)'
    status, lines = compare_with({'asyncio': hang}, '-s', delay_server.url, '-l', '3',
                                 '--repeat', '1', '--variants', 'asyncio',
                                 '--time-limit', '0.5')
    assert status == 1
    line = row_line(lines, 'asyncio ')
    assert 'failed: timed out after 0.5 s' in line and line.endswith('killed')


def test_stops_before_running_when_no_server_answers(
        capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    url = f'http://127.0.0.1:{port}/flags'
    assert flags2_compare.main(['-s', url, '-l', '3']) == 1
    err = capsys.readouterr().err.splitlines()
    command = server_command('local', port)
    assert err == [f'*** No server answers at {url}. Start the bundled one with: {command}']
    assert command.endswith(f' --mode local --port {port}')


@pytest.mark.parametrize(('args', 'message'), [
    (['--sweep', '1,x'], '--sweep takes whole numbers'),
    (['--sweep', '0,5'], '--sweep levels must be 1 or more'),
    (['--variants', 'sequential,fast'], '--variants takes a comma-separated subset'),
    (['-m', '5', '--sweep', '1,5'], 'use -m or --sweep, not both'),
    (['--json', 'no/such/folder/runs.json'], "--json: folder 'no/such/folder'"),
    (['--repeat', '0'], "argument --repeat: '0' is below 1"),
    (['--protocols', '1.1,3'], "--protocols takes 1.1, 2 or 1.1,2, got '1.1,3'"),
    (['--http2', '--protocols', '2'], 'use --http2 or --protocols, not both'),
])
def test_usage_errors_are_one_line_and_exit_2(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        flags2_compare.main(args)
    assert exit_info.value.code == 2
    first, usage = capsys.readouterr().err.splitlines()[:2]
    assert first.startswith(f'*** Usage error: {message}')
    assert usage.startswith('usage: ')


def test_charts_without_matplotlib_stop_before_any_run(tmp_path: Path) -> None:
    blocker = tmp_path / 'blocked' / 'matplotlib'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text('raise ImportError("no matplotlib here")\n')
    url = f'http://127.0.0.1:{free_port()}/flags'  # would fail, if it got that far
    result = compare('-s', url, '--plot', 'sweep.png', cwd=tmp_path,
                     env={'PYTHONPATH': str(blocker.parent)})
    assert result.returncode == 1
    assert result.stdout == ''
    assert result.stderr.splitlines() == [
        '*** charts need matplotlib, which is not installed: '
        "pip install 'flags2[plot]' (or: pip install matplotlib)"]


def test_starts_the_bundled_server_like_the_scripts(tmp_path: Path) -> None:
    port = free_port()
    result = compare('-s', 'DELAY', '-l', '2', '--repeat', '1', '--variants', 'asyncio',
                     cwd=tmp_path, env={'FLAGS2_DELAY_URL': f'http://127.0.0.1:{port}/flags'})
    assert result.returncode == 0, result.stderr
    assert result.lines[0].startswith(f'Started the bundled flags server for DELAY on port {port}')
    assert 'ideal times come from its per-code delays' in result.stdout
    assert row_line(result.lines, 'asyncio ').split()[1:3] == ['2', '2']
    assert servers_gone(port)
    assert not (tmp_path / 'downloaded').exists()  # flags went to a temporary folder


# ------------------------------------------------- hostile round 3 (issue 15)

def fake_report(record: Path, elapsed: float = 0.1) -> str:
    """A one-line variant script: saves its argv in ``record``, prints a report."""
    return (f'import json, sys; open({str(record)!r}, "w").write(json.dumps(sys.argv)); '
            f'print("2 flags downloaded."); print("Elapsed time: {elapsed:.2f}s")')


def test_a_password_in_the_url_is_masked_wherever_compare_shows_or_saves_it(
        delay_server: FlagsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = delay_server.url.replace('http://', 'http://user:secret@')
    shown = delay_server.url.replace('http://', 'http://user:***@')
    argv_file = tmp_path / 'argv.json'
    variants = broken_variants(tmp_path, sequential=fake_report(argv_file))
    monkeypatch.setattr(flags2_compare, 'load_variants', lambda: variants)
    status = flags2_compare.main(['-s', url, '-l', '2', '--repeat', '1', '-v',
                                  '--variants', 'sequential,asyncio',
                                  '--json', str(tmp_path / 'runs.json'),
                                  '--csv', str(tmp_path / 'runs.csv')])
    out, err = capsys.readouterr()
    assert status == 0, err
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index('-s') + 1] == url  # the child gets the real URL
    saved = (tmp_path / 'runs.json').read_text() + (tmp_path / 'runs.csv').read_text()
    for text in (out, err, saved):
        assert 'secret' not in text
    assert out.splitlines()[0] == f'Site: {shown}'
    commands = [line for line in out.splitlines() if line.startswith('$ python ')]
    assert len(commands) == 2 and all(f' -s {shown} ' in line for line in commands)
    assert json.loads((tmp_path / 'runs.json').read_text())['server']['url'] == shown

    nobody = f'http://user:secret@127.0.0.1:{free_port()}/flags'
    assert flags2_compare.main(['-s', nobody, '-l', '2']) == 1
    out, err = capsys.readouterr()
    assert 'secret' not in out + err
    assert f"No server answers at {nobody.replace('secret', '***')}." in err


def test_an_ascii_terminal_gets_the_whole_report(delay_server: FlagsServer,
                                                 tmp_path: Path) -> None:
    result = compare('-s', delay_server.url, '-l', '2', '--repeat', '1',
                     '--variants', 'sequential', cwd=tmp_path,
                     env={'PYTHONIOENCODING': 'ascii', 'LC_ALL': 'C'})
    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stderr
    # the dashes and blocks the terminal cannot show are replaced, nothing is lost
    assert row_line(result.lines, 'variant').split()[6] == '(min?max)'
    assert row_line(result.lines, 'sequential ').split()[-1] == '0'
    assert result.lines[-1].startswith('sequential  ?')



def test_a_reader_that_goes_away_ends_it_quietly(delay_server: FlagsServer,
                                                 tmp_path: Path) -> None:
    """As the scripts: writes go through streams.guarded_streams; ``| head -1``
    is exit status 141, with no BrokenPipeError traceback."""
    proc = start('compare', '-s', delay_server.url, '-l', '2', '--repeat', '1',
                 '--variants', 'sequential', cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith('Site: ')
    proc.stdout.close()  # the reader goes away; the table is still to come
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert 'Traceback' not in err

def test_every_problem_with_an_output_file_is_one_line_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / 'a folder').mkdir()
    (tmp_path / 'a file').write_text('')
    url = f'http://127.0.0.1:{free_port()}/flags'  # would fail, if it got that far
    too_long = tmp_path / ('x' * 300 + '.csv')  # longer than any file system takes
    with pytest.raises(SystemExit) as exit_info:
        flags2_compare.main(['-s', url, '--json', str(tmp_path / 'a folder'),
                             '--csv', str(too_long),
                             '--plot', str(tmp_path / 'a file' / 'sweep.png'),
                             '--timeline', str(tmp_path / 'timeline.txt')])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ''
    lines = err.splitlines()
    usage = next(i for i, line in enumerate(lines) if line.startswith('usage: '))
    assert [line.split()[3] for line in lines[:usage]] == [
        '--json:', '--csv:', '--plot:', '--timeline:']
    assert all(line.startswith('*** Usage error: ') for line in lines[:usage])
    assert 'is a folder' in lines[0]
    assert 'cannot write' in lines[1]
    assert 'is a file, not a folder' in lines[2]
    assert "cannot write '.txt' files" in lines[3]
    assert not (tmp_path / 'timeline.txt').exists()  # checking leaves nothing behind


def test_a_chart_goes_to_exactly_the_name_given(delay_server: FlagsServer,
                                               tmp_path: Path) -> None:
    result = compare('-s', delay_server.url, '-l', '2', '--repeat', '1',
                     '--variants', 'sequential,asyncio', '--plot', 'sweep',
                     '--timeline', 'timeline.svg', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.lines[-2:] == ['Wrote the chart to sweep', 'Wrote the timeline to timeline.svg']
    with Image.open(tmp_path / 'sweep') as image:
        assert image.format == 'PNG'
    assert (tmp_path / 'timeline.svg').read_text().lstrip().startswith('<?xml')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sweep', 'timeline.svg']


def test_a_file_that_cannot_be_written_after_the_runs_loses_nothing_else(
        delay_server: FlagsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    runs_json = tmp_path / 'runs.json'
    # the run itself turns the JSON file's name into a folder: writable before, not after
    grab = (f'import os; os.mkdir({str(runs_json)!r}); '
            'print("2 flags downloaded."); print("Elapsed time: 0.10s")')
    variants = broken_variants(tmp_path, sequential=grab)
    monkeypatch.setattr(flags2_compare, 'load_variants', lambda: variants)
    status = flags2_compare.main(['-s', delay_server.url, '-l', '2', '--repeat', '1',
                                  '--variants', 'sequential', '--json', str(runs_json),
                                  '--csv', str(tmp_path / 'runs.csv')])
    out, err = capsys.readouterr()
    assert status == 1
    assert row_line(out.splitlines(), 'sequential ').split()[2] == '2'
    assert err.splitlines()[-1].startswith(f'*** Could not write {str(runs_json)!r}: ')
    assert len(list(csv.DictReader((tmp_path / 'runs.csv').open()))) == 1


class CannedServer:
    """A real HTTP server on loopback whose pages answer the given JSON."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.asked: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # handler: self is the CannedServer
                self.asked.append(handler.path)
                body = pages.get(handler.path)
                handler.send_response(404 if body is None else 200)
                data = (body or 'not found').encode()
                handler.send_header('Content-Type', 'application/json')
                handler.send_header('Content-Length', str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)

            def log_message(handler, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/flags'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


GOOD_STATS = '{"requests": {}, "in_flight": 0, "peak_in_flight": 0, "since": 0}'


@pytest.mark.parametrize(('pages', 'problems'), [
    ({'/workload': '[1, 2]'}, ['/workload: not a JSON object but a list']),
    ({'/workload': '{"delays": {"AD": "slow"}}'},
     ["/workload: no 'mode'", "/workload: no 'seed'", "/workload: no 'delay_min'",
      "/workload: no 'delay_max'", "/workload: no 'error_rate'",
      "/workload: 'delays' has 1 value that is not a number of seconds (first: 'AD': 'slow')"]),
    ({'/workload': json.dumps({'mode': 'delay', 'seed': 'x', 'delay_min': 0.1,
                               'delay_max': True, 'error_rate': 0.25, 'fault': None,
                               'delays': {'AD': 0.5, 'BR': -1, 'CN': 0.2}}),
      '/stats': '{"peak_in_flight": "many"}'},
     ["/workload: 'delay_max' is true, not a number",
      "/workload: 'delays' has 1 value that is not a number of seconds (first: 'BR': -1)",
      "/stats: 'peak_in_flight' is 'many', not a whole number", "/stats: no 'requests'"]),
])
def test_a_server_that_answers_unlike_the_bundled_one_is_refused_before_any_run(
        pages: dict[str, str], problems: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    server = CannedServer({'/stats': GOOD_STATS, '/stats/reset': GOOD_STATS, **pages})
    try:
        status = flags2_compare.main(['-s', server.url, '-l', '2', '--repeat', '1'])
    finally:
        server.close()
    assert status == 1
    assert capsys.readouterr().err.splitlines() == [
        f'*** The server at {server.url} answers {page} unlike the bundled server: {what}'
        for page, what in (problem.split(': ', 1) for problem in problems)]
    assert not any(path.startswith('/flags/') for path in server.asked)  # no run was made


def test_the_request_log_is_checked_before_the_runs_when_a_timeline_is_asked_for(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = CannedServer({'/stats': GOOD_STATS,
                           '/stats/requests': '{"requests": [{"start": 0}], "dropped": 0}'})
    try:
        status = flags2_compare.main(['-s', server.url, '-l', '2', '--repeat', '1',
                                      '--timeline', str(tmp_path / 'timeline.png')])
    finally:
        server.close()
    assert status == 1
    assert capsys.readouterr().err.splitlines() == [
        f'*** The server at {server.url} answers /stats/requests unlike the bundled server: '
        "request 1 has no 'end'"]


@pytest.mark.parametrize('layout', ['metadata', 'PIPX_HOME', 'global'])
def test_pipx_users_are_told_to_inject_matplotlib(
        layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / 'pipx'
    venv = home / 'venvs' / 'flags2'
    venv.mkdir(parents=True)
    if layout == 'metadata':  # pipx writes this file into every venv it makes
        (venv / 'pipx_metadata.json').write_text('{}')
    else:
        monkeypatch.setenv('PIPX_GLOBAL_HOME' if layout == 'global' else 'PIPX_HOME',
                           str(home))
    monkeypatch.setattr('sys.prefix', str(venv))
    for name in ('matplotlib', 'matplotlib.figure'):  # as if it were not installed
        monkeypatch.setitem(sys.modules, name, None)
    url = f'http://127.0.0.1:{free_port()}/flags'
    assert flags2_compare.main(['-s', url, '--plot', str(tmp_path / 'sweep.png')]) == 1
    inject = 'pipx inject --global flags2' if layout == 'global' else 'pipx inject flags2'
    assert capsys.readouterr().err.splitlines() == [
        f'*** charts need matplotlib, which is not installed: {inject} matplotlib']


def test_the_progress_moves_within_a_long_run(
        slow_server: FlagsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(flags2_compare, 'PROGRESS_INTERVAL', 0.2)
    status = flags2_compare.main(['-s', slow_server.url, '-l', '3', '--repeat', '1',
                                  '--variants', 'sequential', '-o', str(tmp_path)])
    assert status == 0
    # The bar, redrawn while the one run (3 codes, a second each) works: its
    # clock moves, and it counts the codes the server has answered.
    states = re.split(r'[\r\n]', capsys.readouterr().err)
    during = [state for state in states if ' 0/1 [' in state]
    assert any('1/3 answered' in state for state in during), states
    assert any('2/3 answered' in state for state in during), states
    assert any(' 0/1 [00:02' in state for state in during), states


def test_efficiency_is_ideal_over_the_median_of_three_runs(
        slow_server: FlagsServer, tmp_path: Path, compare_with: CompareWith) -> None:
    # Three runs whose times are the ideal x 1, 2 and 6: the median is twice the
    # ideal (50%), the mean three times (33%). Two runs (mean = median) hide the
    # difference; the runs are one-line scripts, the ideal from the real server.
    delays = slow_server.get_json('/workload')['delays']
    ideal = round(delays['BD'] + delays['BR'], 2)  # sequential: the sum
    counter = tmp_path / 'runs-so-far'
    script = (f'import pathlib; p = pathlib.Path({str(counter)!r}); '
              'n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); '
              f'print("2 flags downloaded."); '
              f'print(f"Elapsed time: {{{ideal} * (1, 2, 6)[n]:.2f}}s")')
    status, lines = compare_with({'sequential': script}, '-s', slow_server.url, '-l', '2',
                                 '--repeat', '3', '--variants', 'sequential',
                                 '--json', str(tmp_path / 'runs.json'))
    assert status == 0
    runs = json.loads((tmp_path / 'runs.json').read_text())['runs']
    assert [run['elapsed'] for run in runs] == [round(ideal * k, 2) for k in (1, 2, 6)]
    cells = row_line(lines, 'sequential ').split()
    assert cells[5] == f'{ideal * 2:.2f}s'  # the median
    assert cells[-2] == '50%'  # ideal / median, not ideal / mean (33%)
    bar = lines[lines.index('Median elapsed time:') + 1]
    assert bar.split()[-1] == f'{ideal * 2:.2f}s'
