"""Measure the goals of the HTTP/2 issue, side by side, and say PASS or MISS.

    python benchmarks/http2.py          # every goal, medians of 5 runs
    python benchmarks/http2.py -n 7

As benchmarks/run.py does (whose machinery this uses): its own bundled
servers on ephemeral ports, every command a user's command in a subprocess,
the commands behind each ratio run in turns, one warm-up run each.

- DELAY -a -m 194 --http2: efficiency (ideal / median Elapsed) of asyncio
  (goal 95%) and threadpool (goal 92%); HTTP/1.1 beside them for context.
- LOCAL -a -m 194 asyncio: Elapsed with --http2 / with HTTP/1.1 (goal 0.6x).
- DELAY -a -m 1000 --http2, whole process / curl --http2-prior-knowledge
  --parallel --parallel-max 1000 on the same 194 URLs (goal 1.2x).
- DELAY -e -m 1000 --http2 asyncio peak RSS (goal 50 MiB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from run import (
    CURL_HELP,
    BenchmarkError,
    Command,
    Row,
    curl_command,
    machine_lines,
    print_table,
    run_in_turns,
    secs,
    seeded_delays,
    summary_line,
    variant,
)

from flags2_compare import ideal_time

from flags2.servers import ServerStartError, running_server

GOALS = {'asyncio': 0.95, 'threadpool': 0.92}


def ours(name: str, url: str, *args: str, n: int = 194) -> Command:
    label = f'{name} {" ".join(args)}'
    return Command(label, variant(name, *args, '-s', url), expect=f'{n} flags downloaded.')


def efficiency_rows(url: str, runs: int, scratch: Path) -> list[Row]:
    ideal = ideal_time(seeded_delays(), 194)
    pairs = {name: (ours(name, url, '-a', '-m', '194', '--http2'),
                    ours(name, url, '-a', '-m', '194')) for name in GOALS}
    print(f'DELAY -a -m 194, both protocols: ideal {ideal:.3f} s, {runs} rounds',
          file=sys.stderr)
    run_in_turns([cmd for pair in pairs.values() for cmd in pair], runs, scratch)
    rows = []
    for name, (h2, h11) in pairs.items():
        eff, eff11 = ideal / h2.median('elapsed'), ideal / h11.median('elapsed')
        rows.append(Row('1', f'DELAY {h2.name} efficiency (ideal / Elapsed)',
                        f'>= {GOALS[name]:.0%}',
                        f'{eff:.1%} ({secs(h2.median("elapsed"))} / ideal {secs(ideal)})',
                        f'HTTP/1.1: {eff11:.1%}', eff >= GOALS[name]))
    return rows


def local_rows(url: str, runs: int, scratch: Path) -> list[Row]:
    h2, h11 = ours('asyncio', url, '-a', '-m', '194', '--http2'), ours('asyncio', url, '-a',
                                                                       '-m', '194')
    print(f'LOCAL asyncio -a -m 194, both protocols: {runs} rounds', file=sys.stderr)
    run_in_turns([h2, h11], runs, scratch)
    ratio = h2.median('elapsed') / h11.median('elapsed')
    return [Row('2', 'LOCAL asyncio -a -m 194: Elapsed --http2 / HTTP/1.1', '<= 0.60x',
                f'{ratio:.2f}x ({secs(h2.median("elapsed"))} / '
                f'{secs(h11.median("elapsed"))})', '', ratio <= 0.6)]


def curl_rows(url: str, runs: int, scratch: Path) -> list[Row]:
    mine = ours('asyncio', url, '-a', '-m', '1000', '--http2')
    argv = curl_command(url, 1000)
    argv.remove('--parallel-immediate')  # let it wait for the first connection: multiplexing
    curl = Command('curl --http2-prior-knowledge --parallel --parallel-max 1000',
                   [argv[0], '--http2-prior-knowledge', *argv[1:]])
    print(f'DELAY asyncio -a -m 1000 --http2 against curl: {runs} rounds', file=sys.stderr)
    run_in_turns([mine, curl], runs, scratch)
    a, c = mine.median('wall'), curl.median('wall')
    return [Row('3', f'DELAY {mine.name} / {curl.name}, whole process', '<= 1.20x',
                f'{a / c:.2f}x ({secs(a)} / {secs(c)})', '', a / c <= 1.2)]


def memory_rows(url: str, runs: int, scratch: Path) -> list[Row]:
    h2, h11 = ours('asyncio', url, '-e', '-m', '1000', '--http2'), ours('asyncio', url, '-e',
                                                                        '-m', '1000')
    print(f'DELAY asyncio -e -m 1000 peak RSS, both protocols: {runs} rounds', file=sys.stderr)
    run_in_turns([h2, h11], runs, scratch)
    rss = h2.median('rss_mib')
    return [Row('4', f'DELAY {h2.name} peak RSS', '<= 50 MiB', f'{rss:.1f} MiB',
                f'HTTP/1.1: {h11.median("rss_mib"):.1f} MiB', rss <= 50)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('-n', '--runs', type=int, default=5,
                        help='counted runs per figure; the median is shown (default 5)')
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    if shutil.which('curl') is None:
        print(CURL_HELP, file=sys.stderr)
        return 2
    print('\n'.join(machine_lines()))
    rows: list[Row] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='flags2-bench-') as tmp:
        scratch = Path(tmp)
        try:
            with running_server('delay') as server:
                print(f'DELAY server: {server.url} (seeded delays 0.2-0.8 s)')
                rows += efficiency_rows(server.url, args.runs, scratch)
                rows += curl_rows(server.url, args.runs, scratch)
                rows += memory_rows(server.url, args.runs, scratch)
            with running_server('local') as server:
                print(f'LOCAL server: {server.url}')
                rows += local_rows(server.url, args.runs, scratch)
        except (BenchmarkError, ServerStartError) as exc:
            print(f'*** {exc}', file=sys.stderr)
            return 1
    print(summary_line(f'{args.runs} runs', t0))
    print()
    print_table(rows, ['goal', 'figure (median)', 'goal', 'measured', 'context', ''])
    missed = sum(1 for r in rows if r.ok is False)
    print()
    print(f'{sum(1 for r in rows if r.ok)} goals met, {missed} missed.')
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
