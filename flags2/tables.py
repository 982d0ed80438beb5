"""flags2_compare.py's results written out: the table and the text bars for
the terminal, and every run as JSON or CSV.

Kept out of flags2_compare.py so a reader there sees the runs and the ideal
time, not column widths. The rows come from ``flags2_compare.group_rows``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flags2_compare import Row, RunResult

BAR_WIDTH = 40
CSV_FIELDS = ['variant', 'concurrency', 'requested_concurrency', 'repeat', 'protocol',
              'downloaded', 'not_found', 'errors', 'elapsed', 'peak_in_flight', 'connections',
              'ideal', 'efficiency', 'exit_code', 'problem']


class Recorded(Protocol):
    def record(self) -> dict[str, Any]: ...


def span(values: list[int | None]) -> str:
    """One value, or the lowest and highest when the runs disagree."""
    known = sorted({v for v in values if v is not None})
    if not known:
        return '—'
    return str(known[0]) if len(known) == 1 else f'{known[0]}–{known[-1]}'


def table(rows: list[Row]) -> list[str]:
    """One line a row, medians with their spread, against the sequential baseline."""
    baseline = next((row.median for row in rows if row.series == 'sequential'), None)
    header = ['variant', 'concurrency', 'ok', '404', 'errors', 'elapsed (min–max)',
              'speedup', 'peak', 'ideal', 'efficiency', 'exit']
    body = []
    for row in rows:
        measured = row.measured
        concurrency = str(row.concurrency)
        if row.requested is not None and row.requested != row.concurrency:
            concurrency += f' (-m {row.requested})'
        median = row.median
        if median is None:
            problems = sorted({run.problem for run in row.runs})
            elapsed = 'failed: ' + '; '.join(problems)
        else:
            elapsed = f'{median:.2f}s ({min(row.times):.2f}–{max(row.times):.2f})'
        speedup = (f'{baseline / median:.2f}×' if baseline and median else '—')
        ideal, efficiency = row.ideal, row.efficiency()
        exits = sorted({'killed' if run.exit_code is None else str(run.exit_code)
                        for run in row.runs})
        body.append([
            row.series, concurrency,
            span([run.downloaded for run in measured]),
            span([run.not_found for run in measured]),
            span([run.errors for run in measured]),
            elapsed, speedup,
            peak_text(measured),
            '—' if ideal is None else f'{ideal:.2f}s',
            '—' if efficiency is None else f'{efficiency:.0%}',
            ','.join(exits),
        ])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = []
    for line in [header, *body]:
        cells = [cell.ljust(w) if i in (0, 1, 5) else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        lines.append('  '.join(cells).rstrip())
    lines.insert(1, '-' * len(lines[0]))
    return lines


def peak_text(runs: Sequence[RunResult]) -> str:
    """The peak, and on how many connections where the server counted them."""
    peak = span([run.peak_in_flight for run in runs])
    connections = span([run.connections for run in runs])
    return peak if connections == '—' or peak == '—' else f'{peak} on {connections}'


BAR_EIGHTHS = ' ▏▎▍▌▋▊▉'  # a partial block of 0 to 7 eighths


def text_bars(rows: list[Row], width: int = BAR_WIDTH) -> list[str]:
    """Median elapsed times as bars of block characters, eighths included:
    a chart that needs no matplotlib."""
    measured = [(row.label(), row.median) for row in rows if row.median is not None]
    if not measured:
        return []
    longest = max(median for _, median in measured if median is not None) or 1.0
    name_width = max(len(name) for name, _ in measured)
    lines = []
    for name, median in measured:
        assert median is not None
        eighths = round(median / longest * width * 8)
        bar = '█' * (eighths // 8) + BAR_EIGHTHS[eighths % 8].strip()
        lines.append(f'{name.ljust(name_width)}  {bar or "▏"} {median:.2f}s')
    return lines


def write_json(path: Path, server: dict[str, Any], codes: list[str], repeat: int,
               runs: Sequence[Recorded]) -> None:
    data = {'server': server, 'codes': codes, 'repeat': repeat,
            'runs': [run.record() for run in runs]}
    path.write_text(json.dumps(data, indent=2) + '\n')


def write_csv(path: Path, runs: Sequence[Recorded]) -> None:
    with path.open('w', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for run in runs:
            writer.writerow(run.record())
