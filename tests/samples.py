"""The console samples of the docs, run as written and compared with what they show.

Used by test_companion.py (docs/companion.md) and test_samples.py (README.md,
docs/when-things-go-wrong.md and the scripts' docstrings). What a sample is, and how it
is compared:

- A sample is a command line ``$ python SCRIPT …`` (or ``$ .venv/bin/python …``),
  followed by the lines it prints, up to the next command or the end of its block. A
  line ``[exit status N]`` gives the exit status (0 when absent). Samples sit in fenced
  blocks whose info string is empty or ``console``; a block marked ``text`` is shown but
  not run (a Ctrl-C run, a run that needs a folder or a server set up by hand, a table
  of timings), and the text around it says so.
- Each command runs exactly as written (``python`` is this interpreter, first on PATH as
  in an activated venv), in a fresh temporary folder, with COLUMNS=80, alone against a
  server of its own: every label it names with ``-s`` is moved (FLAGS2_LOCAL_URL,
  FLAGS2_DELAY_URL, FLAGS2_ERROR_URL) to a bundled server this test starts on an
  ephemeral port, with that mode and the default workload, so the delays, failures and
  peak are the sample's; the other labels point at a port where nothing listens.
- Normalised, in the sample and in the real output alike, and nothing else: the port
  number in URLs and in "on port N"; the checkout's folder in a printed path (a reader
  in the checkout types ``flags_server.py``, the test names the file); the "Started the
  bundled flags server" line (it is printed only when nothing listened on the label's
  port, which depends on the reader's machine, never on the code); the seconds of
  "Elapsed time"; the progress bar (drawn on stderr: a bar in the sample must end at the
  same count, ``n/total``, as the real one).
- Compared: the exit status, and every other line in order, stdout then stderr. The
  per-code ``-v`` lines (``CC OK``, ``CC not found``, ``CC error: …``) keep their place
  among the other lines and are compared as a multiset (every line, with its repeats,
  none missing, none added), and also in order where the order is determined: with one
  connection, sorted order; with every code in flight at once, the order of the codes'
  delays, where delays closer than ORDER_GAP (40 ms) may finish either way round. In
  other runs thread and task scheduling decides the order, and it is not checked.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from flags2.servers import FlagsServer, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
LABELS = {'LOCAL': 'local', 'DELAY': 'delay', 'ERROR': 'error'}
FENCE = re.compile(r'^( *)```([^\n`]*)\n(.*?)^\1```$', re.MULTILINE | re.DOTALL)
PER_CODE = re.compile(r'[A-Z]{2} (OK|not found|error: .*)')
BAR = re.compile(r'\s*\d+%\|.*\|\s*(\d+/\d+)\s*\[.*')
STARTED = re.compile(r'Started the bundled flags server for \w+ on port \d+; '
                     r'it stops once no run uses it\.')
ORDER_GAP = 0.040  # seconds between neighbouring delays for an all-at-once order to hold
RUN_TIMEOUT = 90
HEAVY = 50  # -m from which a sample runs alone, before the others


@dataclass
class Sample:
    where: str  # file:line of the command
    argv: list[str]
    shown: list[str] = field(default_factory=list)
    exit_status: int = 0

    def __str__(self) -> str:
        return f'{self.where}: $ {shlex.join(self.argv)}'

    @property
    def script(self) -> str:
        return self.argv[1]

    @property
    def alone(self) -> bool:
        """Run before the others, one at a time: many connections opened at once, or
        an outcome that depends on time (--timeout against the delays)."""
        return self.max_req() >= HEAVY or '--timeout' in self.argv

    def max_req(self) -> int:
        """The -m the command asks for (0 when it leaves the default)."""
        values = [self.argv[i + 1] for i, arg in enumerate(self.argv[:-1])
                  if arg in ('-m', '--max_req')]
        return int(values[-1]) if values and values[-1].isdigit() else 0

    @property
    def labels(self) -> list[str]:
        """The bundled-server labels this command names with ``-s`` (or LOCAL by default)."""
        named = [self.argv[i + 1].upper() for i, arg in enumerate(self.argv[:-1])
                 if arg in ('-s', '--server')]
        return [label for label in named or ['LOCAL'] if label in LABELS]


@dataclass
class Real:
    returncode: int
    stdout: str
    stderr: str
    concurrency: int | None = None


def fenced_blocks(text: str) -> Iterable[tuple[str, str, int]]:
    """(info string, body, line number of the body's first line) of each fenced block."""
    for match in FENCE.finditer(text):
        yield match.group(2).strip(), match.group(3), text.count('\n', 0, match.start(3)) + 1


def parse_samples(body: str, where: str, first_line: int) -> list[Sample]:
    found: list[Sample] = []
    for n, line in enumerate(body.splitlines(), start=first_line):
        if line.startswith('$ '):
            found.append(Sample(f'{where}:{n}', shlex.split(line[2:], comments=True)))
        elif match := re.fullmatch(r'\[exit status (\d+)\]', line.strip()):
            found[-1].exit_status = int(match.group(1))
        elif found:
            found[-1].shown.append(line.rstrip())
    for sample in found:
        while sample.shown and not sample.shown[-1]:
            sample.shown.pop()
    return found


def markdown_samples(path: Path) -> list[Sample]:
    """The samples of every block of ``path`` that is run (info string '' or 'console')."""
    where = str(path.relative_to(ROOT))
    return [sample for info, body, line in fenced_blocks(path.read_text(encoding='utf-8'))
            if info in ('', 'console') for sample in parse_samples(body, where, line)]


def docstring_samples(path: Path) -> list[Sample]:
    """The samples in the module docstring of ``path`` (an indented ``::`` block)."""
    source = path.read_text(encoding='utf-8')
    doc = ast.get_docstring(ast.parse(source), clean=False) or ''
    first = source[:source.index(doc)].count('\n') + 1 if doc else 1
    lines = doc.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith('$ ')]
    if not starts:
        return []
    start = starts[0]
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(' ')):
        end += 1
    body = textwrap.dedent('\n'.join(lines[start:end]))
    return parse_samples(body + '\n', str(path.relative_to(ROOT)), first + start)


# ------------------------------------------------------------------ running

def run_all(samples: list[Sample], workdir: Path, workers: int = 8) -> list[Real]:
    """Run each sample alone against servers of its own; several samples at a time."""
    def run(numbered: tuple[int, Sample]) -> Real:
        n, sample = numbered
        work = workdir / str(n)
        work.mkdir()
        servers: list[FlagsServer] = []
        try:
            for label in sample.labels:
                servers.append(start_server(LABELS[label], bind='localhost'))
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get('PATH', '')])
            env = {**os.environ, 'COLUMNS': '80', 'PATH': path}
            for label in LABELS:
                env[f'FLAGS2_{label}_URL'] = f'http://localhost:{unused_port()}/flags'
            for label, server in zip(sample.labels, servers, strict=True):
                env[f'FLAGS2_{label}_URL'] = f'http://localhost:{server.port}/flags'
            argv = [sys.executable, str(ROOT / sample.script), *sample.argv[2:]]
            proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT)
            return Real(proc.returncode, proc.stdout, proc.stderr)
        finally:
            for server in servers:
                stop_server(server)

    # A run with many connections opens them all in its first fraction of a second;
    # alone, it is not slowed by the others, and its peak is the sample's.
    numbered = list(enumerate(samples))
    heavy = [(n, s) for n, s in numbered if s.alone]
    results = {n: run((n, s)) for n, s in heavy}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        light = [(n, s) for n, s in numbered if not s.alone]
        results.update(zip([n for n, _ in light], pool.map(run, light), strict=True))
    return [results[n] for n, _ in numbered]


def unused_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------- comparing

def normalise(line: str) -> str:
    line = line.replace(f'{ROOT}{os.sep}', '')
    line = re.sub(r'\b(localhost|127\.0\.0\.1):\d+', r'\1:PORT', line.rstrip())
    line = re.sub(r'\bon port \d+', 'on port PORT', line)
    return re.sub(r'^Elapsed time: \d+\.\d+s$', 'Elapsed time: SECONDSs', line)


def shown_lines(sample: Sample) -> tuple[list[str], str | None]:
    """The sample's lines to compare, and the count its progress bar ends at (if shown)."""
    lines, bar = [], None
    for line in sample.shown:
        if match := BAR.fullmatch(line):
            bar = match.group(1)
        elif not STARTED.fullmatch(line.strip()):
            lines.append(normalise(line))
    return lines, bar


def real_lines(real: Real) -> tuple[list[str], str | None]:
    err_lines, bar = [], None
    for line in re.split(r'[\r\n]+', real.stderr):
        if match := BAR.fullmatch(line):
            bar = match.group(1)
        elif line.strip():
            err_lines.append(line)
    lines = [normalise(line) for line in real.stdout.splitlines() + err_lines
             if not STARTED.fullmatch(line.strip())]
    return lines, bar


def order_key(sample: Sample, lines: list[str]) -> dict[str, int] | None:
    """For each code, its place in the order the run must print its -v line; None when
    scheduling decides. With one connection, the sorted order. With every code in flight
    at once, the order of the delays, where codes whose delays are closer than ORDER_GAP
    share a place (either may finish first)."""
    codes = [line[:2] for line in lines if PER_CODE.fullmatch(line)]
    if '1 connection will be used.' in lines:
        return {cc: i for i, cc in enumerate(sorted(codes))}
    match = next((re.fullmatch(r'(\d+) concurrent connections will be used\.', line)
                  for line in lines if 'concurrent connections' in line), None)
    if not (match and codes and int(match.group(1)) >= len(codes)):
        return None
    from flags_server import Workload
    workload = Workload(LABELS[sample.labels[0]])
    by_delay = sorted(codes, key=workload.delay)
    place, key = 0, {}
    for before, cc in zip([None, *by_delay], by_delay, strict=False):
        if before is not None and workload.delay(cc) - workload.delay(before) >= ORDER_GAP:
            place += 1
        key[cc] = place
    return key


def check(sample: Sample, real: Real) -> None:
    """Assert that ``real`` is what ``sample`` shows, under the module's rules."""
    expected, shown_bar = shown_lines(sample)
    got, real_bar = real_lines(real)
    output = f'\n--- real output ---\n{real.stdout}{real.stderr}'
    assert real.returncode == sample.exit_status, \
        f'{sample}: exit status {real.returncode}, the sample shows {sample.exit_status}{output}'
    if shown_bar is not None:
        assert real_bar == shown_bar, \
            f'{sample}: the progress bar ended at {real_bar}, the sample shows {shown_bar}'
    exp_codes = [line for line in expected if PER_CODE.fullmatch(line)]
    got_codes = [line for line in got if PER_CODE.fullmatch(line)]
    missing = Counter(exp_codes) - Counter(got_codes)
    extra = Counter(got_codes) - Counter(exp_codes)
    assert not missing and not extra, \
        f'{sample}: -v lines shown but not printed {sorted(missing.elements())}, ' \
        f'printed but not shown {sorted(extra.elements())}'
    if (key := order_key(sample, expected)) is not None:
        shown_places = [key[line[:2]] for line in exp_codes]
        assert shown_places == sorted(shown_places), \
            f'{sample}: the -v lines are not shown in the order the run prints them ' \
            f'(sorted, or by delay when all run at once):\n' + '\n'.join(exp_codes)
        real_places = [key[line[:2]] for line in got_codes]
        assert real_places == sorted(real_places), \
            f'{sample}: the -v lines came in another order:\n' + diff(exp_codes, got_codes)
    exp_rest = [line if not PER_CODE.fullmatch(line) else 'CC …' for line in expected]
    got_rest = [line if not PER_CODE.fullmatch(line) else 'CC …' for line in got]
    assert got_rest == exp_rest, f'{sample}: output differs:\n' + diff(exp_rest, got_rest)


def diff(expected: list[str], got: list[str]) -> str:
    import difflib
    return '\n'.join(difflib.unified_diff(expected, got, 'shown', 'real', lineterm=''))
