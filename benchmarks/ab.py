"""Compare this checkout with an earlier git revision, side by side.

    python benchmarks/ab.py c32f9ef --old-python ../venv-old/bin/python

The revision is exported with ``git archive`` into a temporary folder (no
worktree, no checkout); both trees run against the same servers (this
checkout's flags_server.py), command after command, so load from elsewhere
hits both alike. A revision from before the move to httpx2 needs httpx:
``--old-python`` names an interpreter that has the old tree's dependencies.
Last, this checkout's asyncio -m 1000 runs against curl over the same URLs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (
    ROOT,
    Command,
    Row,
    curl_commands,
    curl_table,
    machine_lines,
    print_table,
    run_in_turns,
    secs,
)

from flags2.servers import running_server

CASES = [  # (server mode, variant, arguments, figure)
    ('local', 'sequential', ['-a'], 'elapsed'),
    ('local', 'threadpool', ['-a'], 'elapsed'),
    ('local', 'asyncio', ['-a'], 'elapsed'),
    ('local', 'asyncio', ['-a', '-m', '30'], 'wall'),
    ('local', 'asyncio', ['-a', '-m', '1000'], 'elapsed'),
    ('delay', 'asyncio', ['-a', '-m', '1000'], 'elapsed'),
    ('delay', 'threadpool', ['-a', '-m', '1000'], 'elapsed'),
    ('delay', 'asyncio', ['-e', '-m', '1000'], 'rss_mib'),
]


def python_version(python: str) -> str:
    out = subprocess.run([python, '-c', 'import sys; from importlib.metadata import version; '
                          'print(sys.version.split()[0], "httpx", version("httpx"))'],
                         capture_output=True, text=True)
    return out.stdout.strip() or f'{python}: no httpx ({out.stderr.strip().splitlines()[-1:]})'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('revision', help='git revision to compare with, e.g. a commit')
    parser.add_argument('-n', '--runs', type=int, default=5)
    parser.add_argument('--old-python', metavar='PATH', default=sys.executable,
                        help="Python for the old tree's runs, with its dependencies "
                             '(default: this one)')
    parser.add_argument('--no-curl', action='store_true',
                        help='skip asyncio -m 1000 against curl on DELAY')
    args = parser.parse_args()
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    curl = not args.no_curl and shutil.which('curl') is not None
    print('\n'.join(machine_lines()))
    print(f'old tree: {args.revision}, run by {args.old_python} '
          f'(Python {python_version(args.old_python)})')
    with tempfile.TemporaryDirectory(prefix='flags2-ab-') as tmp:
        old = Path(tmp) / 'old'
        old.mkdir()
        archive = subprocess.run(['git', '-C', str(ROOT), 'archive', args.revision],
                                 capture_output=True, check=True).stdout
        subprocess.run(['tar', '-x', '-C', str(old)], input=archive, check=True)
        scratch = Path(tmp) / 'runs'
        scratch.mkdir()
        rows = []
        curl_rows: list[Row] = []
        for mode in ('local', 'delay'):
            with running_server(mode) as server:
                pairs = []
                for case_mode, name, extra, figure in CASES:
                    if case_mode != mode:
                        continue
                    expect = '194 flags downloaded.'
                    trees = ((args.revision, old, args.old_python),
                             ('this', ROOT, sys.executable))
                    pair = [Command(f'{tree_name} {name} {" ".join(extra)}',
                                    [python, str(tree / f'flags2_{name}.py'), *extra,
                                     '-s', server.url], expect=expect)
                            for tree_name, tree, python in trees]
                    pairs.append((pair, figure, f'{mode.upper()} {name} {" ".join(extra)}'))
                print(f'{mode.upper()}: {2 * len(pairs)} commands in turns, {args.runs} rounds',
                      file=sys.stderr)
                run_in_turns([c for pair, _, _ in pairs for c in pair], args.runs, scratch)
                for (before, after), figure, label in pairs:
                    a, b = before.median(figure), after.median(figure)
                    shown = (f'{a:.1f} MiB', f'{b:.1f} MiB') if figure == 'rss_mib' else (
                        secs(a), secs(b))
                    rows.append(Row('', f'{label} ({figure})', shown[0], shown[1],
                                    f'{b / a:.2f}x', None))
                if mode == 'delay' and curl:
                    curl_pairs = curl_commands(server.url)
                    olds = [Command(f'{args.revision} {ours.name}',
                                    [args.old_python, str(old / 'flags2_asyncio.py'),
                                     *ours.argv[2:]], expect=ours.expect)
                            for ours, _ in curl_pairs]
                    print(f'DELAY against curl: {3 * len(curl_pairs)} commands in turns, '
                          f'{args.runs} rounds', file=sys.stderr)
                    run_in_turns([*(c for pair in curl_pairs for c in pair), *olds],
                                 args.runs, scratch)
                    curl_rows = [
                        Row('', row.what, row.target, row.measured, row.book,
                            None, f'{o.median("wall") / c.median("wall"):.2f}x')
                        for row, o, (_, c) in zip(curl_table(curl_pairs), olds, curl_pairs,
                                                  strict=True)]
    print(f'medians of {args.runs} runs, the two trees in turns after one warm-up run each')
    print_table(rows, ['', 'figure (median)', args.revision, 'this checkout', 'ratio', ''])
    if curl_rows:
        print()
        print('asyncio against curl --parallel --parallel-immediate, same server, same URLs '
              '(-a: 194, -e: 676, of which 482 are 404), whole process (wall), medians '
              f'of {args.runs}, the three in turns')
        print_table(curl_rows, ['', 'figure (median)', 'this asyncio', 'curl',
                                'this / curl', f'{args.revision} / curl'])
    elif not args.no_curl:
        print('curl not found: no curl figures')
    return 0


if __name__ == '__main__':
    sys.exit(main())
