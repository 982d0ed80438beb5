"""Does each piece of flags2/clients.py still pay for itself? Side by side
with the plain httpx2 way, in one run.

    python benchmarks/plumbing.py          # medians of 5
    python benchmarks/plumbing.py -n 7

For each figure four commands run in turns (one warm-up run each): the
variant as it is, and the variant with one piece swapped for the plain way
by benchmarks/plumbing_runner.py (see there):

* shards: SHARD_SIZE-connection shards vs one plain pool of concur_req
  connections (``httpx2.Client(limits=..., timeout=...)``, default verify,
  the run's body checks around httpx2's transport: benchmarks/checked.py);
* lazy TLS: LazyTLSContext vs one eager ``httpx2.create_ssl_context()``
  shared by the shards (not a context per shard: that would cost more by
  construction, and nobody would write it);
* preload: preload_http_stack vs none.

The verdict compares Elapsed (what the scripts report); wall, the whole
process, is shown beside it: preload moves import time out of Elapsed, so it
can win on Elapsed while the process takes as long.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from run import Command, machine_lines, print_table, run_in_turns

from flags2.servers import ServerStartError, running_server

RUNNER = Path(__file__).resolve().parent / 'plumbing_runner.py'
PIECES = {'pool': 'shards', 'tls': 'lazy TLS', 'preload': 'preload'}
FIGURES = [  # (server mode, variant, arguments)
    *[('local', name, ['-a', '-m', m]) for m in ('5', '30', '1000')
      for name in ('asyncio', 'threadpool')],
    *[('delay', name, [option, '-m', '1000']) for option in ('-a', '-e')
      for name in ('asyncio', 'threadpool')],
]
WIN = 0.10  # a piece must make the figure this much faster to be kept


def runner(variant: str, plain: str, args: list[str], url: str) -> Command:
    label = f'{variant} {" ".join(args)} plain {plain}'
    return Command(label, [sys.executable, str(RUNNER), variant, plain, *args, '-s', url],
                   expect='194 flags downloaded.')


def verdict(plumbing: float, plain: float) -> str:
    gain = 1 - plumbing / plain
    return f'keep (wins by {gain:.0%})' if gain > WIN else 'no clear win'


@dataclass
class Figure:
    label: str
    ours: Command
    plain: dict[str, Command]


def ms(seconds: float) -> str:
    return f'{seconds * 1000:.0f} ms'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('-n', '--runs', type=int, default=5,
                        help='counted runs per command; the median is shown (default 5)')
    args = parser.parse_args()
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    print('\n'.join(machine_lines()))
    t0 = time.perf_counter()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix='flags2-plumbing-') as tmp:
        try:
            for mode in ('local', 'delay'):
                with running_server(mode) as server:
                    for fig_mode, variant, extra in FIGURES:
                        if fig_mode != mode:
                            continue
                        label = f'{mode.upper()} {variant} {" ".join(extra)}'
                        ours = runner(variant, 'none', extra, server.url)
                        plain = {piece: runner(variant, piece, extra, server.url)
                                 for piece in PIECES}
                        print(f'{label}: 4 commands in turns, {args.runs} rounds',
                              file=sys.stderr, flush=True)
                        run_in_turns([ours, *plain.values()], args.runs, Path(tmp))
                        figures.append(Figure(label, ours, plain))
        except ServerStartError as exc:
            print(f'*** {exc}', file=sys.stderr)
            return 1
    rows = []
    for figure in figures:
        a_el, a_wall = figure.ours.median('elapsed'), figure.ours.median('wall')
        for piece, name in PIECES.items():
            cmd = figure.plain[piece]
            b_el, b_wall = cmd.median('elapsed'), cmd.median('wall')
            rows.append([figure.label, name, f'{a_el:.2f} s', f'{b_el:.2f} s',
                         f'{b_el / a_el:.2f}x', ms(a_wall), ms(b_wall),
                         f'{b_wall / a_wall:.2f}x', verdict(a_el, b_el)])
    header = ['figure (median)', 'piece', 'plumbing', 'plain', 'ratio', 'wall plumbing',
              'wall plain', 'wall ratio', 'verdict (Elapsed)']
    print(f'medians of {args.runs} runs, the four commands of each figure in turns after one '
          'warm-up run each; load average at end '
          + ', '.join(f'{x:.2f}' for x in os.getloadavg())
          + f'; benchmark took {time.perf_counter() - t0:.0f} s')
    print('plumbing: the variant as it is; plain: the same with that one piece swapped for '
          'the plain httpx2 way; ratio = plain / plumbing (above 1: the piece is faster).')
    print('shards: plain = one httpx2.Client/AsyncClient(limits=Limits(n, n), timeout=t) with '
          "httpx2's default verify, its transport making the run's body checks "
          '(benchmarks/checked.py); lazy TLS: plain = one eager httpx2.create_ssl_context() '
          'shared by the shards; preload: plain = no preload_http_stack.')
    print()
    print_table([Row(cells) for cells in rows], header)
    return 0


@dataclass
class Row:
    """A table line for run.print_table, which wants .cells()."""

    values: list[str]

    def cells(self) -> list[str]:
        return self.values


if __name__ == '__main__':
    sys.exit(main())
