"""Compare this checkout with an earlier git revision, side by side.

    python benchmarks/ab.py 19a5a4c        # medians of 5, the two in turns

The revision is exported with ``git archive`` into a temporary folder (no
worktree, no checkout); both trees run against the same servers, command
after command, so load from elsewhere hits both alike.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from run import ROOT, Command, Row, flags_server, print_table, run_in_turns, secs

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('revision', help='git revision to compare with, e.g. a commit')
    parser.add_argument('-n', '--runs', type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='flags2-ab-') as tmp:
        old = Path(tmp) / 'old'
        old.mkdir()
        archive = subprocess.run(['git', '-C', str(ROOT), 'archive', args.revision],
                                 capture_output=True, check=True).stdout
        subprocess.run(['tar', '-x', '-C', str(old)], input=archive, check=True)
        scratch = Path(tmp) / 'runs'
        scratch.mkdir()
        rows = []
        for mode in ('local', 'delay'):
            with flags_server(mode) as url:
                pairs = []
                for case_mode, name, extra, figure in CASES:
                    if case_mode != mode:
                        continue
                    expect = '194 flags downloaded.'
                    pair = [Command(f'{tree_name} {name} {" ".join(extra)}',
                                    [sys.executable, str(tree / f'flags2_{name}.py'), *extra,
                                     '-s', url], expect=expect)
                            for tree_name, tree in ((args.revision, old), ('this', ROOT))]
                    pairs.append((pair, figure, f'{mode.upper()} {name} {" ".join(extra)}'))
                run_in_turns([c for pair, _, _ in pairs for c in pair], args.runs, scratch)
                for (before, after), figure, label in pairs:
                    a, b = before.median(figure), after.median(figure)
                    shown = (f'{a:.1f} MiB', f'{b:.1f} MiB') if figure == 'rss_mib' else (
                        secs(a), secs(b))
                    rows.append(Row('', f'{label} ({figure})', shown[0], shown[1],
                                    f'{b / a:.2f}x', None))
    print(f'medians of {args.runs} runs, the two trees in turns after one warm-up run each')
    print_table(rows, ['', 'figure (median)', args.revision, 'this checkout', 'ratio', ''])
    return 0


if __name__ == '__main__':
    sys.exit(main())
