"""Measure the goals of the Performance issue, side by side, and say PASS or MISS.

    python benchmarks/run.py            # every goal, medians of 5 runs
    python benchmarks/run.py -n 7       # more runs per figure
    python benchmarks/run.py --only 1 2 6

It starts its own flags_server.py (LOCAL and DELAY, ephemeral ports on
127.0.0.1), runs every command as a user would, in a subprocess, and takes
the median of each figure. The commands behind each ratio are run in turns
within one loop, so a burst of load from elsewhere hits both sides alike.
Each command runs once before the counted runs, to warm the disk cache and
the server. "Book" columns run the same variants through benchmarks/book.py,
which swaps in the book's client set-up (a client per request; asyncio with
the default pool of 100 connections), on httpx2 like flags2 itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
BOOK = Path(__file__).resolve().parent / 'book.py'
sys.path.insert(0, str(ROOT))

from flags2_compare import ELAPSED_LINE, ideal_time  # noqa: E402  (tested there)
from flags_server import Workload  # noqa: E402

from flags2.codes import country_codes  # noqa: E402
from flags2.servers import ServerStartError, running_server  # noqa: E402

CURL_HELP = ('*** curl not found: install it (Debian/Ubuntu: sudo apt-get install curl; '
             'macOS: brew install curl) and run again.')
PACKAGES = ('httpx2', 'httpcore2', 'h11', 'anyio', 'idna', 'tqdm', 'pillow')


# ------------------------------------------------------------ the ideal

def seeded_delays(limit: int | None = None) -> list[float]:
    """The bundled DELAY server's default delays, in the variants' issue order."""
    workload = Workload('delay')
    return [workload.delay(cc) for cc in sorted(country_codes())[:limit]]


# ------------------------------------------------------------- running

@dataclass
class Sample:
    wall: float  # whole process, seconds
    elapsed: float | None  # the script's own "Elapsed time"
    rss_mib: float  # peak resident set of the process
    failed: str = ''  # for a book command that may fail: its summary lines


@dataclass
class Command:
    name: str
    argv: list[str]
    expect: str | None = None  # a line the output must contain
    strict: bool = True  # False: record a failed run instead of stopping
    samples: list[Sample] = field(default_factory=list)

    def failures(self) -> str:
        """How the runs failed, or '' if none did."""
        bad = [s.failed for s in self.samples if s.failed]
        return f'{len(bad)}/{len(self.samples)} runs failed: {bad[0]}' if bad else ''

    def median(self, what: str) -> float:
        values: list[float] = [getattr(s, what) for s in self.samples]
        return statistics.median(v for v in values if v is not None)


class BenchmarkError(Exception):
    pass


NOTES: list[str] = []  # failed book runs, printed under the table


def flag_failures(commands: Iterable[Command]) -> None:
    for cmd in commands:
        if (failures := cmd.failures()) and not any(n.startswith(cmd.name) for n in NOTES):
            NOTES.append(f'{cmd.name}: {failures}')


def run_once(cmd: Command, scratch: Path) -> Sample:
    """Run ``cmd`` in a fresh empty folder; time it and read its peak RSS."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    out_path, err_path = work / 'stdout.txt', work / 'stderr.txt'
    try:
        with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd.argv, cwd=work, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        stdout = out_path.read_text(errors='replace')
        failed = ''
        if proc.returncode != 0 or (cmd.expect and cmd.expect not in stdout):
            if cmd.strict:
                tail = (stdout + err_path.read_text(errors='replace')).strip().splitlines()[-3:]
                raise BenchmarkError(f'{cmd.name} failed (exit {proc.returncode}): '
                                     + ' | '.join(tail))
            failed = '; '.join(line for line in stdout.splitlines()
                               if 'downloaded' in line or line.startswith('errors:'))
        match = ELAPSED_LINE.search(stdout)
        rss_mib = usage.ru_maxrss / 1024  # Linux reports KiB
        return Sample(wall, float(match.group(1)) if match else None, rss_mib, failed)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_in_turns(commands: list[Command], runs: int, scratch: Path) -> None:
    """One warm-up run each, then ``runs`` rounds, each command once per round."""
    for cmd in commands:
        run_once(cmd, scratch)
    for round_no in range(runs):
        for cmd in commands:
            cmd.samples.append(run_once(cmd, scratch))
        print(f'  round {round_no + 1}/{runs} done', file=sys.stderr, flush=True)


# ------------------------------------------------------------- commands

def variant(name: str, *args: str, book: bool = False) -> list[str]:
    if book:
        return [sys.executable, str(BOOK), name, *args]
    return [sys.executable, str(ROOT / f'flags2_{name}.py'), *args]


def every_code() -> list[str]:
    """AA to ZZ: the codes of ``-e``, 676 URLs of which 194 have a flag."""
    letters = string.ascii_uppercase
    return [a + b for a in letters for b in letters]


def curl_command(url: str, parallel: int, codes: Sequence[str] | None = None) -> list[str]:
    """curl fetching flags into files, ``parallel`` transfers at a time.

    ``codes``: the 194 that have a flag unless given. --parallel-immediate:
    without it curl waits for the first connection to see whether it can
    multiplex, before opening the others. --fail only when every URL has a
    flag: a 404 would make curl exit 22, and -e expects 482 of them.
    """
    fail = ['--fail'] if codes is None else []
    urls = [f'{url}/{cc.lower()}/{cc.lower()}.gif' for cc in sorted(codes or country_codes())]
    return ['curl', '--silent', '--show-error', *fail, '--parallel', '--parallel-immediate',
            '--parallel-max', str(parallel), '--remote-name-all', *urls]


# ---------------------------------------------------------------- report

@dataclass
class Row:
    goal: str
    what: str
    target: str
    measured: str
    book: str
    ok: bool | None  # None: context only, no goal
    note: str = ''  # the last column of a context row

    def cells(self) -> list[str]:
        verdict = self.note if self.ok is None else ('PASS' if self.ok else 'MISS')
        return [self.goal, self.what, self.target, self.measured, self.book, verdict]


GOAL_HEADER = ['goal', 'figure (median)', 'goal', 'measured', "book's approach", '']


class Cells(Protocol):
    def cells(self) -> list[str]: ...


def print_table(rows: Iterable[Cells], header: list[str] = GOAL_HEADER) -> None:
    table = [header] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for n, line in enumerate(table):
        print('  '.join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print('  '.join('-' * w for w in widths))


def summary_line(runs: str, t0: float) -> str:
    """How the medians were taken, the load at the end, and the time since ``t0``."""
    return (f'medians of {runs}; the commands of each group ran in turns after one warm-up '
            'run each; load average at end ' + ', '.join(f'{x:.2f}' for x in os.getloadavg())
            + f'; benchmark took {time.perf_counter() - t0:.0f} s')


def secs(x: float) -> str:
    return f'{x:.3f} s' if x < 10 else f'{x:.2f} s'


def machine_lines() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f'{package} {metadata.version(package)}')
        except metadata.PackageNotFoundError:
            versions.append(f'{package} (not installed)')
    curl = subprocess.run(['curl', '--version'], capture_output=True, text=True).stdout
    commit = subprocess.run(['git', '-C', str(ROOT), 'describe', '--always', '--dirty'],
                            capture_output=True, text=True).stdout.strip() or 'unknown'
    load = ', '.join(f'{x:.2f}' for x in os.getloadavg())
    return [
        f'date:     {time.strftime("%Y-%m-%d %H:%M %Z")}',
        f'machine:  {platform.system()} {platform.release()} {platform.machine()}, {cpu}, '
        f'{os.cpu_count()} CPUs, load average at start {load}',
        f'Python:   {platform.python_implementation()} {platform.python_version()} '
        f'({sys.executable})',
        f'packages: {", ".join(versions)}',
        f'curl:     {curl.split(chr(10))[0] if curl else "?"}',
        f'flags2:   git {commit}',
    ]


# ------------------------------------------------------------------ goals

def local_goals(url: str, runs: int, scratch: Path, book: bool) -> list[Row]:
    def cmd(name: str, *args: str, is_book: bool = False) -> Command:
        label = f'{"book " if is_book else ""}{name} {" ".join(args)}'
        return Command(label, variant(name, *args, '-s', url, book=is_book),
                       expect='194 flags downloaded.', strict=not is_book)

    curl = Command('curl --parallel-max 30', curl_command(url, 30))
    specs = {
        'a30': ('asyncio', '-a', '-m', '30'),
        'seq': ('sequential', '-a'),
        'thr': ('threadpool', '-a'),
        'aio': ('asyncio', '-a'),
        'a100': ('asyncio', '-a', '-m', '100'),
        'a1000': ('asyncio', '-a', '-m', '1000'),
        't5': ('threadpool', '-a', '-m', '5'),
        't100': ('threadpool', '-a', '-m', '100'),
        't1000': ('threadpool', '-a', '-m', '1000'),
    }
    ours = {key: cmd(*spec) for key, spec in specs.items()}
    theirs = {key: cmd(*spec, is_book=True) for key, spec in specs.items()} if book else {}
    print(f'LOCAL: {len(ours) + len(theirs) + 1} commands in turns, {runs} rounds',
          file=sys.stderr)
    run_in_turns([curl, *ours.values(), *theirs.values()], runs, scratch)
    flag_failures(theirs.values())

    def el(key: str, side: dict[str, Command] = ours) -> float:
        return side[key].median('elapsed')

    def book_cell(text: object) -> str:
        return str(text) if book else 'not run'

    rows = []
    c_wall, a_wall = curl.median('wall'), ours['a30'].median('wall')
    rows.append(Row('1', 'asyncio -a -m 30 wall / curl --parallel-max 30 wall', '<= 2.50x',
                    f'{a_wall / c_wall:.2f}x ({secs(a_wall)} / {secs(c_wall)})',
                    book_cell(book and f'{theirs["a30"].median("wall") / c_wall:.2f}x '
                              f'({secs(theirs["a30"].median("wall"))})'),
                    a_wall / c_wall <= 2.5))
    rows.append(Row('2', 'sequential -a Elapsed', '<= 0.60 s', secs(el('seq')),
                    book_cell(book and secs(el('seq', theirs))), el('seq') <= 0.6))
    ratio = el('thr') / el('aio')
    rows.append(Row('2', 'threadpool -a / asyncio -a Elapsed', '<= 1.50x',
                    f'{ratio:.2f}x ({secs(el("thr"))} / {secs(el("aio"))})',
                    book_cell(book and f'{el("thr", theirs) / el("aio", theirs):.2f}x '
                              f'({secs(el("thr", theirs))} / {secs(el("aio", theirs))})'),
                    ratio <= 1.5))
    for name, base, keys in (('asyncio', 'aio', ('a100', 'a1000')),
                             ('threadpool', 't5', ('t100', 't1000'))):
        for key in keys:
            m = key[1:]
            ratio = el(key) / el(base)
            rows.append(Row('3', f'{name} -a -m {m} / -m 5 Elapsed', '<= 1.10x',
                            f'{ratio:.2f}x ({secs(el(key))} / {secs(el(base))})',
                            book_cell(book and f'{el(key, theirs) / el(base, theirs):.2f}x '
                                      f'({secs(el(key, theirs))} / {secs(el(base, theirs))})'),
                            ratio <= 1.1))
    return rows


def delay_goals(url: str, runs: int, scratch: Path, book: bool) -> list[Row]:
    rows = []
    all_delays = seeded_delays()
    cases: list[tuple[str, list[str], float, bool]] = [
        ('sequential', ['-a', '-l', '20'], ideal_time(seeded_delays(20), 1), False)]
    for m in (5, 20, 100, 1000):
        ideal = ideal_time(all_delays, m)
        for name in ('threadpool', 'asyncio'):
            cases.append((name, ['-a', '-m', str(m)], ideal, book and m >= 100))
    for name, args, ideal, with_book in cases:
        n = 20 if '-l' in args else 194
        ours = Command(f'{name} {" ".join(args)}', variant(name, *args, '-s', url),
                       expect=f'{n} flags downloaded.')
        commands = [ours]
        if with_book:
            commands.append(Command(f'book {ours.name}',
                                    variant(name, *args, '-s', url, book=True),
                                    expect=f'{n} flags downloaded.', strict=False))
        curl = None
        if name == 'asyncio' and int(args[-1]) >= 100:  # a yardstick where overhead shows
            curl = Command(f'curl --parallel-max {min(int(args[-1]), n)}',
                           curl_command(url, min(int(args[-1]), n)))
            commands.append(curl)
        print(f'DELAY {ours.name}: ideal {ideal:.3f} s, {runs} rounds', file=sys.stderr)
        run_in_turns(commands, runs, scratch)
        flag_failures(commands)
        ratio = ours.median('elapsed') / ideal
        book_text = 'not run'
        if with_book:
            book_el = commands[1].median('elapsed')
            book_text = f'{book_el / ideal:.2f}x ({secs(book_el)})'
            if commands[1].failures():
                book_text += ' (failed, see below)'
        rows.append(Row('4', f'DELAY {ours.name} Elapsed / ideal', '<= 1.05x',
                        f'{ratio:.3f}x ({secs(ours.median("elapsed"))} / {secs(ideal)})',
                        book_text, ratio <= 1.05))
        if curl is not None:
            wall = curl.median('wall')
            rows.append(Row('', f'  for reference: {curl.name} whole run / ideal', '',
                            f'{wall / ideal:.3f}x ({secs(wall)})', '', None))
    return rows


def curl_commands(url: str) -> list[tuple[Command, Command]]:
    """asyncio -m 1000 and curl --parallel-max 1000 over the same URLs, whole process."""
    pairs = []
    for option, codes, n_ok in (('-a', None, 194), ('-e', every_code(), 194)):
        n_urls = len(codes or country_codes())
        ours = Command(f'asyncio {option} -m 1000',
                       variant('asyncio', option, '-m', '1000', '-s', url),
                       expect=f'{n_ok} flags downloaded.')
        curl = Command(f'curl --parallel-max 1000 ({n_urls} URLs)',
                       curl_command(url, 1000, codes))
        pairs.append((ours, curl))
    return pairs


def curl_table(pairs: list[tuple[Command, Command]]) -> list[Row]:
    """One row a pair: both medians of the whole process and their ratio."""
    rows = []
    for ours, curl in pairs:
        a, c = ours.median('wall'), curl.median('wall')
        rows.append(Row('', f'DELAY {ours.name} / {curl.name}, whole process', secs(a),
                        secs(c), f'{a / c:.2f}x', None))
    return rows


def curl_rows(url: str, runs: int, scratch: Path) -> list[Row]:
    """curl_table as context rows of the goal table."""
    pairs = curl_commands(url)
    print(f'DELAY asyncio -m 1000 against curl: {2 * len(pairs)} commands in turns, '
          f'{runs} rounds', file=sys.stderr)
    run_in_turns([c for pair in pairs for c in pair], runs, scratch)
    # curl_table's cells are asyncio, curl, ratio: here they share one cell
    return [Row('', f'  for reference: {r.what}', '', f'{r.book} ({r.target} / {r.measured})',
                '', None)
            for r in curl_table(pairs)]


def memory_goals(url: str, runs: int, scratch: Path, book: bool) -> list[Row]:
    def cmd(name: str, is_book: bool = False) -> Command:
        return Command(f'{"book " if is_book else ""}{name} -e -m 1000',
                       variant(name, '-e', '-m', '1000', '-s', url, book=is_book),
                       expect='194 flags downloaded.', strict=not is_book)

    commands = [cmd('asyncio'), cmd('threadpool')]
    if book:
        commands += [cmd('asyncio', True), cmd('threadpool', True)]
    print(f'DELAY -e -m 1000 peak RSS: {len(commands)} commands in turns, {runs} rounds',
          file=sys.stderr)
    run_in_turns(commands, runs, scratch)
    flag_failures(commands)
    rss = [c.median('rss_mib') for c in commands]
    failed = [' (failed, see below)' if c.failures() else '' for c in commands]
    return [
        Row('5', 'asyncio -e -m 1000 (DELAY) peak RSS', '<= 50 MiB', f'{rss[0]:.1f} MiB',
            f'{rss[2]:.1f} MiB{failed[2]}' if book else 'not run', rss[0] <= 50),
        Row('5', 'threadpool / asyncio peak RSS, -e -m 1000', '<= 2.00x',
            f'{rss[1] / rss[0]:.2f}x ({rss[1]:.1f} MiB)',
            f'{rss[3] / rss[2]:.2f}x ({rss[3]:.1f} MiB{failed[3]})' if book else 'not run',
            rss[1] / rss[0] <= 2),
    ]


def startup_goals(runs: int, scratch: Path) -> list[Row]:
    help_cmd = Command('asyncio --help', variant('asyncio', '--help'), expect='usage:')
    bare = Command('python -c pass', [sys.executable, '-c', 'pass'])
    imports = Command('import asyncio, httpx2, tqdm',
                      [sys.executable, '-c', 'import asyncio, httpx2, tqdm'])
    print(f'start-up: 3 commands in turns, {2 * runs} rounds', file=sys.stderr)
    run_in_turns([help_cmd, bare, imports], 2 * runs, scratch)
    wall = help_cmd.median('wall')
    return [
        Row('6', 'python flags2_asyncio.py --help wall', '<= 0.300 s', secs(wall), 'same',
            wall <= 0.3),
        Row('', '  for reference: python -c pass', '', secs(bare.median('wall')), '', None),
        Row('', '  for reference: python -c "import asyncio, httpx2, tqdm"', '',
            secs(imports.median('wall')), '', None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('-n', '--runs', type=int, default=5,
                        help='counted runs per figure; the median is shown (default 5)')
    parser.add_argument('--only', nargs='+', type=int, choices=range(1, 7), metavar='GOAL',
                        help='goals to measure (1-6; default all)')
    parser.add_argument('--no-book', action='store_true',
                        help="skip the book's-approach figures (faster)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    goals = set(args.only or range(1, 7))
    if goals & {1, 2, 3} and shutil.which('curl') is None:
        print(CURL_HELP, file=sys.stderr)
        return 2
    book = not args.no_book
    print('\n'.join(machine_lines()))
    rows: list[Row] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='flags2-bench-') as tmp:
        scratch = Path(tmp)
        try:
            if goals & {1, 2, 3}:
                with running_server('local') as server:
                    url = server.url
                    print(f'LOCAL server: {url}')
                    rows += [r for r in local_goals(url, args.runs, scratch, book)
                             if int(r.goal) in goals]
            if goals & {4, 5}:
                with running_server('delay') as server:
                    url = server.url
                    print(f'DELAY server: {url} (seeded delays 0.2-0.8 s)')
                    if 4 in goals:
                        rows += delay_goals(url, args.runs, scratch, book)
                        rows += curl_rows(url, args.runs, scratch)
                    if 5 in goals:
                        rows += memory_goals(url, args.runs, scratch, book)
            if 6 in goals:
                rows += startup_goals(args.runs, scratch)
        except (BenchmarkError, ServerStartError) as exc:
            print(f'*** {exc}', file=sys.stderr)
            return 1
    print(summary_line(f'{args.runs} runs (start-up: {2 * args.runs})', t0))
    print('curl ran with --parallel-immediate: by default curl --parallel waits for its first '
          'connection (to learn whether it can multiplex) before opening the others.')
    print()
    print_table(rows)
    missed = sum(1 for r in rows if r.ok is False)
    for note in NOTES:
        print(f"book's approach failed in {note}")
    print()
    print(f'{sum(1 for r in rows if r.ok)} goals met, {missed} missed.')
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
